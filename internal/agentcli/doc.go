// Package agentcli is the command line of cmd/agent: flag parsing, wiring
// of bus and runtime, output. It is internal: the commands are the
// interface, not this package.
package agentcli
