// Package replaycli is the command line of cmd/replay: inspect, replay,
// purge and summarise the dead-letter queue. It is internal: the commands
// and their exit codes are the interface.
package replaycli
