package metrics

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus"
)

// Agent counts what the runtimes of one agent do. It implements
// runtime.Observer: set it as Config.Observer. Its methods take no lock
// and allocate nothing once a subject has been seen (a failure or a dead
// letter looks its series up by label). It is safe for concurrent use.
type Agent struct {
	m          *Metrics
	name       string
	heartbeats prometheus.Counter

	// subjects is copied on write: the hot path reads it with one atomic
	// load, and new subjects (rare) replace it under mu.
	subjects atomic.Pointer[map[string]*subjectMetrics]
	mu       sync.Mutex
	other    *subjectMetrics // shared by subjects past MaxSubjects
}

var _ runtime.Observer = (*Agent)(nil)

// subjectMetrics are one subject's series, resolved once.
type subjectMetrics struct {
	label                                         string
	deliveries, processed, redelivered, cancelled prometheus.Counter
	duplicates, returned, abandoned, held, parked prometheus.Counter
	duration                                      prometheus.Observer
	breaker                                       prometheus.Gauge
}

func newAgent(m *Metrics, name string) *Agent {
	a := &Agent{m: m, name: name, heartbeats: m.heartbeats.WithLabelValues(name)}
	a.subjects.Store(&map[string]*subjectMetrics{})
	return a
}

// Name returns the agent's name.
func (a *Agent) Name() string { return a.name }

func (a *Agent) subject(s string) *subjectMetrics {
	if sm, ok := (*a.subjects.Load())[s]; ok {
		return sm
	}
	return a.addSubject(s)
}

func (a *Agent) addSubject(s string) *subjectMetrics {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := *a.subjects.Load()
	if sm, ok := cur[s]; ok {
		return sm
	}
	if len(cur) >= a.m.opts.MaxSubjects {
		if a.other == nil {
			a.other = a.newSubject(OtherSubject)
		}
		return a.other
	}
	sm := a.newSubject(s)
	next := make(map[string]*subjectMetrics, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[s] = sm
	a.subjects.Store(&next)
	return sm
}

// newSubject creates the subject's series (so they read 0 before the
// first event, and rate() sees the first increment).
func (a *Agent) newSubject(label string) *subjectMetrics {
	m, l := a.m, []string{a.name, label}
	return &subjectMetrics{
		label:       label,
		deliveries:  m.deliveries.WithLabelValues(l...),
		processed:   m.processed.WithLabelValues(l...),
		redelivered: m.redelivered.WithLabelValues(l...),
		cancelled:   m.cancelled.WithLabelValues(l...),
		duplicates:  m.duplicates.WithLabelValues(l...),
		returned:    m.returned.WithLabelValues(l...),
		abandoned:   m.abandoned.WithLabelValues(l...),
		held:        m.held.WithLabelValues(l...),
		parked:      m.parked.WithLabelValues(l...),
		duration:    m.duration.WithLabelValues(l...),
		breaker:     m.breaker.WithLabelValues(l...),
	}
}

// Delivered counts a delivery taken by a worker.
func (a *Agent) Delivered(subject string) { a.subject(subject).deliveries.Inc() }

// Settled counts the outcome, the handler's failure kind if it failed, and
// its latency if it ran.
func (a *Agent) Settled(subject string, o runtime.Outcome, handler time.Duration) {
	sm := a.subject(subject)
	if handler > 0 {
		sm.duration.Observe(handler.Seconds())
	}
	if o.Failure != resilience.KindNone {
		a.m.failed.WithLabelValues(a.name, sm.label, o.Failure.String()).Inc()
	}
	switch o.Disposition {
	case runtime.Succeeded:
		sm.processed.Inc()
	case runtime.Retried:
		sm.redelivered.Inc()
	case runtime.DeadLettered:
		a.m.deadLettered.WithLabelValues(a.name, sm.label, string(o.Reason)).Inc()
	case runtime.Returned:
		sm.returned.Inc()
	case runtime.Cancelled:
		sm.cancelled.Inc()
	case runtime.Duplicate:
		sm.duplicates.Inc()
	case runtime.Abandoned:
		sm.abandoned.Inc()
	case runtime.Held:
		sm.held.Inc()
	case runtime.Parked:
		sm.parked.Inc()
	}
}

// BreakerChanged sets the subject's breaker gauge and counts the
// transition.
func (a *Agent) BreakerChanged(subject string, state resilience.State) {
	sm := a.subject(subject)
	sm.breaker.Set(breakerValue(state))
	a.m.transitions.WithLabelValues(a.name, sm.label, state.String()).Inc()
}

// Heartbeat counts an accepted InProgress heartbeat.
func (a *Agent) Heartbeat() { a.heartbeats.Inc() }

func breakerValue(s resilience.State) float64 {
	switch s {
	case resilience.StateOpen:
		return 2
	case resilience.StateHalfOpen:
		return 1
	default:
		return 0
	}
}

// Watch adds rt to what every scrape reads: its running handlers, queued
// and held deliveries, pull errors and panics (summed over the agent's
// watched runtimes), and once per agent its consumer backlog and
// dead-letter count from the server. rt must run this agent.
func (a *Agent) Watch(rt *runtime.Runtime) error {
	if rt == nil || rt.Agent() != a.name {
		return fmt.Errorf("metrics: Watch: runtime is not agent %q's", a.name)
	}
	a.m.state.add(a.name, rt)
	return nil
}
