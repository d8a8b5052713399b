// Package ophttp serves an agent process's operational endpoints over
// HTTP: /metrics (Prometheus exposition of one registry), /healthz (the
// process is alive: no part of it has died, see Alive) and /readyz (every
// readiness check passes: the NATS connection is up and every runtime is
// taking tasks).
//
// Build a Server with New, Start it (it listens before returning and
// serves from a goroutine it owns), and Stop it on the way out. It is a
// lifecycle.Service: when serving fails for good, Done is closed with the
// error, for the process to end.
package ophttp
