// Package metrics exports what jetagent runtimes do as Prometheus metrics.
//
// It has two halves, both on one registry of the caller's (never the
// global one, so tests and several runtimes in one process work):
//
//   - events: an [Agent] implements runtime.Observer; set it as the
//     runtime's Config.Observer and it counts deliveries, outcomes (by
//     dead-letter reason and failure kind), handler latency, breaker
//     transitions and heartbeats as they happen, without locks or
//     allocations on the hot path;
//   - state: [Agent.Watch] adds the runtime to what is read at each scrape:
//     handlers running, deliveries queued and held, the pull machinery's
//     error counts, and from the server, with a timeout, the agent's
//     consumer backlog and dead-letter count.
//
// Wiring, in this order:
//
//	reg := metrics.NewRegistry()
//	m, err := metrics.New(reg, metrics.Options{})
//	obs := m.Agent("echo")
//	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Observer: obs})
//	err = obs.Watch(rt)
//	// serve reg on /metrics (promhttp.HandlerFor)
//
// Every series carries the agent label; event series also carry the task
// subject ("<prefix>.tasks.<agent>.<payload_type>"), bounded per agent by
// Options.MaxSubjects (further subjects are counted as "_other").
// docs/observability.md lists every metric.
package metrics
