package metrics

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus"
)

// stateCollector reads the watched runtimes at each scrape.
type stateCollector struct {
	timeout time.Duration

	inFlight, queued, holding               *prometheus.Desc
	pending, ackPending, deadLetters        *prometheus.Desc
	consumeErrors, missedHeartbeats, panics *prometheus.Desc
	unstoredReplies                         *prometheus.Desc
	scrapeErrors                            *prometheus.CounterVec

	mu      sync.Mutex
	byAgent map[string][]*runtime.Runtime
}

func newStateCollector(timeout time.Duration) *stateCollector {
	desc := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("jetagent_"+name, help, []string{"agent"}, nil)
	}
	return &stateCollector{
		timeout:          timeout,
		inFlight:         desc("in_flight", "Handlers running now."),
		queued:           desc("queued", "Deliveries waiting for a worker now."),
		holding:          desc("holding", "Deliveries held now because their subject's breaker is open."),
		pending:          desc("consumer_pending", "Tasks not yet delivered to any replica (the consumer's NumPending), read from the server at scrape."),
		ackPending:       desc("consumer_ack_pending", "Tasks delivered but not settled yet, all replicas (the consumer's NumAckPending), read from the server at scrape."),
		deadLetters:      desc("dlq_messages", "The agent's entries in the dead-letter stream, read from the server at scrape."),
		consumeErrors:    desc("consume_errors_total", "Errors reported by the pull machinery (it keeps pulling through them)."),
		missedHeartbeats: desc("consume_missed_heartbeats_total", "Pull stalls: consume errors that were missed pull heartbeats."),
		panics:           desc("handler_panics_total", "Handler panics recovered (also counted as transient failures)."),
		unstoredReplies:  desc("replies_unstored_total", "Replies published with core NATS to a reply_to outside the replies stream: not stored, lost if nobody listens at that moment."),
		scrapeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "jetagent", Name: "scrape_errors_total",
			Help: "Scrapes that could not read the agent's backlog from the server (its consumer and DLQ gauges are left out of that scrape).",
		}, []string{"agent"}),
		byAgent: make(map[string][]*runtime.Runtime),
	}
}

func (c *stateCollector) add(agent string, rt *runtime.Runtime) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.byAgent[agent], rt) {
		c.byAgent[agent] = append(c.byAgent[agent], rt)
	}
	c.scrapeErrors.WithLabelValues(agent)
}

// Describe implements prometheus.Collector.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.inFlight, c.queued, c.holding, c.pending, c.ackPending, c.deadLetters,
		c.consumeErrors, c.missedHeartbeats, c.panics, c.unstoredReplies} {
		ch <- d
	}
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	agents := make(map[string][]*runtime.Runtime, len(c.byAgent))
	for a, rts := range c.byAgent {
		agents[a] = slices.Clone(rts)
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for agent, rts := range agents {
		var inFlight, queued, holding, consumeErrs, missed, panics, unstored uint64
		for _, rt := range rts {
			st, sub := rt.Stats(), rt.SubscriberStats()
			inFlight += uint64(rt.InFlight())
			queued += st.Queued
			holding += st.Holding
			panics += st.Panics
			unstored += st.UnstoredReplies
			consumeErrs += sub.ConsumeErrors
			missed += sub.MissedHeartbeats
		}
		gauge := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), agent)
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), agent)
		}
		gauge(c.inFlight, inFlight)
		gauge(c.queued, queued)
		gauge(c.holding, holding)
		counter(c.consumeErrors, consumeErrs)
		counter(c.missedHeartbeats, missed)
		counter(c.panics, panics)
		counter(c.unstoredReplies, unstored)
		if b, ok := backlog(ctx, rts); ok {
			gauge(c.pending, b.Pending)
			gauge(c.ackPending, b.AckPending)
			gauge(c.deadLetters, b.DeadLetters)
		} else {
			c.scrapeErrors.WithLabelValues(agent).Inc()
		}
	}
	c.scrapeErrors.Collect(ch)
}

// backlog asks the server through the first runtime that can (replicas
// share one consumer, so any started one answers for all).
func backlog(ctx context.Context, rts []*runtime.Runtime) (runtime.Backlog, bool) {
	for _, rt := range rts {
		if b, err := rt.Backlog(ctx); err == nil {
			return b, true
		}
		if ctx.Err() != nil {
			break
		}
	}
	return runtime.Backlog{}, false
}
