package metrics

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Defaults of [Options].
const (
	DefaultMaxSubjects   = 64
	DefaultScrapeTimeout = 2 * time.Second
)

// OtherSubject is the subject label of deliveries on subjects beyond an
// agent's first Options.MaxSubjects.
const OtherSubject = "_other"

// DefaultBuckets are the handler latency histogram's upper bounds, in
// seconds: 1ms to 5 minutes (the default handler timeout).
var DefaultBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// Options configure [New]. The zero value is usable.
type Options struct {
	// MaxSubjects bounds the subject label values of one agent: deliveries
	// on further subjects are counted under subject="_other", so a
	// publisher inventing subjects cannot blow up the series count.
	// Zero: 64.
	MaxSubjects int

	// ScrapeTimeout bounds the server requests one scrape makes (consumer
	// info and dead-letter count of each agent, one after the other).
	// Zero: 2s.
	ScrapeTimeout time.Duration

	// Buckets are the handler latency histogram's upper bounds in
	// seconds. Nil: DefaultBuckets.
	Buckets []float64
}

// Metrics holds jetagent's metrics on one registry. Get an observer per
// agent with Agent. It is safe for concurrent use.
type Metrics struct {
	opts Options

	deliveries, processed, redelivered, cancelled, duplicates *prometheus.CounterVec
	returned, abandoned, held, parked                         *prometheus.CounterVec
	failed, deadLettered, transitions                         *prometheus.CounterVec
	heartbeats                                                *prometheus.CounterVec
	duration                                                  *prometheus.HistogramVec
	breaker                                                   *prometheus.GaugeVec
	state                                                     *stateCollector

	mu     sync.Mutex
	agents map[string]*Agent
}

// NewRegistry returns a new registry with the Go runtime and process
// collectors registered, for a process's /metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// New creates jetagent's metrics and registers them on reg. It returns an
// error when opts is invalid or reg refuses a metric (for example because
// another Metrics was registered on it already).
func New(reg prometheus.Registerer, opts Options) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("metrics: nil registerer")
	}
	if opts.MaxSubjects < 0 || opts.ScrapeTimeout < 0 {
		return nil, fmt.Errorf("metrics: negative MaxSubjects (%d) or ScrapeTimeout (%v)", opts.MaxSubjects, opts.ScrapeTimeout)
	}
	if opts.MaxSubjects == 0 {
		opts.MaxSubjects = DefaultMaxSubjects
	}
	if opts.ScrapeTimeout == 0 {
		opts.ScrapeTimeout = DefaultScrapeTimeout
	}
	if opts.Buckets == nil {
		opts.Buckets = DefaultBuckets
	}
	bySubject := []string{"agent", "subject"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "jetagent", Name: name, Help: help}, labels)
	}
	m := &Metrics{
		opts:         opts,
		deliveries:   counter("deliveries_total", "Deliveries taken by a worker (redeliveries included).", bySubject...),
		processed:    counter("processed_total", "Deliveries whose handler succeeded: reply published, then acked.", bySubject...),
		redelivered:  counter("redelivered_total", "Deliveries handed back for redelivery after a failure (handler error or panic, reply or dead letter not published).", bySubject...),
		cancelled:    counter("cancelled_total", "Tasks stopped by a task.cancel (acked).", bySubject...),
		duplicates:   counter("duplicates_total", "Deliveries acked without running because another message carrying the same task id runs it.", bySubject...),
		returned:     counter("returned_total", "Deliveries handed back unprocessed (at shutdown, while every worker was stuck, or not started after a freeze); they spend no attempt.", bySubject...),
		abandoned:    counter("abandoned_total", "Deliveries left unsettled because a newer delivery of the same message owns the task.", bySubject...),
		held:         counter("held_total", "Times a delivery was held back because its subject's breaker was open.", bySubject...),
		parked:       counter("parked_total", "Deliveries copied to the end of the tasks stream, then acked, because their subject's breaker was open and the replica held enough of its tasks.", bySubject...),
		failed:       counter("failed_total", "Handler failures, by kind (transient, timeout, retry_after, permanent, malformed, ...).", "agent", "subject", "kind"),
		deadLettered: counter("dead_lettered_total", "Deliveries moved to the dead-letter stream, by reason.", "agent", "subject", "reason"),
		transitions:  counter("breaker_transitions_total", "Breaker state changes, by the state entered.", "agent", "subject", "state"),
		heartbeats:   counter("heartbeats_total", "InProgress heartbeats accepted for queued, running and held deliveries.", "agent"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "jetagent", Name: "handler_duration_seconds",
			Help:    "How long handlers ran, whatever their outcome.",
			Buckets: opts.Buckets,
		}, bySubject),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "jetagent", Name: "breaker_state",
			Help: "State of the subject's circuit breaker: 0 closed, 1 half-open, 2 open.",
		}, bySubject),
		agents: make(map[string]*Agent),
	}
	m.state = newStateCollector(opts.ScrapeTimeout)
	for _, c := range []prometheus.Collector{m.deliveries, m.processed, m.redelivered, m.cancelled, m.duplicates,
		m.returned, m.abandoned, m.held, m.parked, m.failed, m.deadLettered, m.transitions, m.heartbeats, m.duration, m.breaker, m.state} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	return m, nil
}

// Agent returns the observer of agent name, creating it on first use; all
// runtimes of one agent in the process share it.
func (m *Metrics) Agent(name string) *Agent {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.agents[name]; a != nil {
		return a
	}
	a := newAgent(m, name)
	m.agents[name] = a
	return a
}
