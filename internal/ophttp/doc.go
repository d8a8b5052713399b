// Package ophttp serves an agent process's operational endpoints over
// HTTP: /metrics (Prometheus exposition of one registry), /healthz (the
// process is alive) and /readyz (every readiness check passes: the NATS
// connection is up and every runtime is taking tasks).
//
// Build a Server with New, Start it (it listens before returning and
// serves from a goroutine it owns), and Shutdown it on the way out.
package ophttp
