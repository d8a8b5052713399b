package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

var topo = bus.Topology{Memory: true}

// startAgent starts a runtime for agent "echo" on conn with h on
// task.request, observed by (and watched by) m.
func startAgent(t *testing.T, conn *bus.Conn, m *Metrics, cfg runtime.Config, h runtime.Handler) *runtime.Runtime {
	t.Helper()
	cfg.Agent, cfg.Topology = "echo", topo
	if cfg.Observer == nil {
		cfg.Observer = m.Agent("echo")
	}
	return agenttest.Start(t, conn, cfg, h, m.Agent("echo").Watch)
}

// sample is one series' value as gathered: a counter's or gauge's value,
// or a histogram's sample count; found is false when there is no such
// series.
func sample(t *testing.T, g prometheus.Gatherer, name string, labels ...string) (v float64, found bool) {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue next
				}
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue(), true
			case dto.MetricType_GAUGE:
				return m.GetGauge().GetValue(), true
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// A known workload gives exact counts: 10 tasks, of which 4 succeed at
// once, 3 fail transiently once then succeed, 2 fail permanently, and 1
// has a payload type the agent has no handler for.
func TestKnownWorkloadGivesExactCounts(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	reg := prometheus.NewRegistry()
	m, err := New(reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	rt := startAgent(t, conn, m, runtime.Config{Breaker: resilience.BreakerSettings{Threshold: 100}},
		func(_ context.Context, task *runtime.Task) (any, error) {
			var kind string
			if err := task.Decode(&kind); err != nil {
				return nil, err
			}
			switch {
			case kind == "permanent":
				return nil, resilience.Permanent(errors.New("refused"))
			case kind == "transient" && task.Attempt == 1:
				return nil, errors.New("503")
			}
			return kind, nil
		})
	pub := bus.NewPublisher(conn.JetStream())
	req := topo.TaskSubject("echo", envelope.TaskRequest)
	send := topo.TaskSubject("echo", envelope.MessageSend)
	var kinds []string
	for range 4 {
		kinds = append(kinds, "ok")
	}
	for range 3 {
		kinds = append(kinds, "transient")
	}
	kinds = append(kinds, "permanent", "permanent")
	for _, k := range kinds {
		env, err := envelope.New("tester", "echo", envelope.TaskRequest, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pub.PublishEnvelope(testkit.Context(t), req, env); err != nil {
			t.Fatal(err)
		}
	}
	unknown, err := envelope.New("tester", "echo", envelope.MessageSend, "hi")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishEnvelope(testkit.Context(t), send, unknown); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "every task settled", func() bool {
		st := rt.Stats()
		return st.Succeeded == 7 && st.DeadLettered == 3
	})
	// Stop waits for the workers, so the last outcome has been observed.
	if err := rt.Stop(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the server to see every settlement", func() bool {
		p, ok1 := sample(t, reg, "jetagent_consumer_ack_pending", "agent", "echo")
		d, ok2 := sample(t, reg, "jetagent_dlq_messages", "agent", "echo")
		return ok1 && ok2 && p == 0 && d == 3
	})

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"jetagent_deliveries_total", []string{"subject", req}, 12},
		// No handler for message.send: its deliveries count under
		// runtime.UnhandledSubject (invented subjects make no series).
		{"jetagent_deliveries_total", []string{"subject", runtime.UnhandledSubject}, 1},
		{"jetagent_processed_total", []string{"subject", req}, 7},
		{"jetagent_failed_total", []string{"subject", req, "kind", "transient"}, 3},
		{"jetagent_failed_total", []string{"subject", req, "kind", "permanent"}, 2},
		{"jetagent_redelivered_total", []string{"subject", req}, 3},
		{"jetagent_dead_lettered_total", []string{"subject", req, "reason", string(dlq.ReasonPermanent)}, 2},
		{"jetagent_dead_lettered_total", []string{"subject", runtime.UnhandledSubject, "reason", string(dlq.ReasonUnknownType)}, 1},
		{"jetagent_processed_total", []string{"subject", runtime.UnhandledSubject}, 0},
		{"jetagent_cancelled_total", []string{"subject", req}, 0},
		{"jetagent_duplicates_total", []string{"subject", req}, 0},
		{"jetagent_held_total", []string{"subject", req}, 0},
		{"jetagent_parked_total", []string{"subject", req}, 0},
		{"jetagent_handler_duration_seconds", []string{"subject", req}, 12},
		{"jetagent_handler_duration_seconds", []string{"subject", runtime.UnhandledSubject}, 0},
		{"jetagent_breaker_state", []string{"subject", req}, 0},
		{"jetagent_in_flight", nil, 0},
		{"jetagent_queued", nil, 0},
		{"jetagent_holding", nil, 0},
		{"jetagent_consumer_pending", nil, 0},
		{"jetagent_consumer_ack_pending", nil, 0},
		{"jetagent_dlq_messages", nil, 3},
		{"jetagent_handler_panics_total", nil, 0},
		{"jetagent_replies_unstored_total", nil, 0},
		{"jetagent_scrape_errors_total", nil, 0},
	} {
		got, ok := sample(t, reg, c.name, append([]string{"agent", "echo"}, c.labels...)...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	if _, ok := sample(t, reg, "jetagent_deliveries_total", "agent", "echo", "subject", send); ok {
		t.Error("a subject without a handler has a series of its own")
	}
	if _, ok := sample(t, reg, "jetagent_failed_total", "agent", "echo", "subject", runtime.UnhandledSubject); ok {
		t.Error("an unknown payload type counted as a handler failure")
	}
}

// The breaker gauge goes 0 (closed) -> 2 (open) -> 1 (half-open, the
// probe) -> 0 (closed) as the subject fails, waits and recovers.
func TestBreakerGaugeFollowsTheProbe(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	reg := prometheus.NewRegistry()
	m, err := New(reg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	gauge := func() float64 { return testutil.ToFloat64(m.breaker.WithLabelValues("echo", subject)) }
	rec := &gaugeRecorder{Agent: m.Agent("echo"), read: gauge}
	var mu sync.Mutex
	calls := 0
	rt := startAgent(t, conn, m, runtime.Config{
		Observer:    rec,
		Concurrency: 1,
		Consumer:    bus.ConsumerConfig{AckWait: time.Second},
		Breaker:     resilience.BreakerSettings{Threshold: 1, OpenTimeout: 300 * time.Millisecond},
	}, func(context.Context, *runtime.Task) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		if calls++; calls == 1 {
			return nil, errors.New("dependency down")
		}
		return nil, nil
	})
	env, err := envelope.New("tester", "echo", envelope.TaskRequest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(testkit.Context(t), subject, env); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the probe to succeed", func() bool { return rt.Stats().Succeeded == 1 })
	if got, want := fmt.Sprint(rec.values()), "[0 2 1 0]"; got != want {
		t.Errorf("breaker gauge went %s, want %s", got, want)
	}
	for state, want := range map[string]float64{"open": 1, "half-open": 1, "closed": 1} {
		if got, _ := sample(t, reg, "jetagent_breaker_transitions_total", "agent", "echo", "subject", subject, "state", state); got != want {
			t.Errorf("transitions to %s = %v, want %v", state, got, want)
		}
	}
	if got, _ := sample(t, reg, "jetagent_held_total", "agent", "echo", "subject", subject); got != 1 {
		t.Errorf("held_total = %v, want 1 (the redelivery waited for the probe)", got)
	}
}

// gaugeRecorder forwards to the Agent and records the breaker gauge's
// value after the first delivery and after every transition.
type gaugeRecorder struct {
	*Agent
	read func() float64
	mu   sync.Mutex
	seen []float64
}

func (g *gaugeRecorder) Delivered(subject string) {
	g.Agent.Delivered(subject)
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.seen) == 0 {
		g.seen = append(g.seen, g.read())
	}
}

func (g *gaugeRecorder) BreakerChanged(subject string, s resilience.State) {
	g.Agent.BreakerChanged(subject, s)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seen = append(g.seen, g.read())
}

func (g *gaugeRecorder) values() []float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]float64(nil), g.seen...)
}

// Subjects past MaxSubjects share one "_other" series.
func TestSubjectLabelsAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg, Options{MaxSubjects: 2})
	if err != nil {
		t.Fatal(err)
	}
	a := m.Agent("echo")
	for i := range 5 {
		a.Delivered(fmt.Sprintf("jetagent.tasks.echo.kind%d", i))
	}
	if n := testutil.CollectAndCount(m.deliveries); n != 3 {
		t.Errorf("%d deliveries series, want 2 subjects and %s", n, OtherSubject)
	}
	if got, _ := sample(t, reg, "jetagent_deliveries_total", "subject", OtherSubject); got != 3 {
		t.Errorf("%s counted %v deliveries, want 3", OtherSubject, got)
	}
}

// The observer's hot path allocates nothing once a subject is known.
func TestObserverHotPathDoesNotAllocate(t *testing.T) {
	m, err := New(prometheus.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	a := m.Agent("echo")
	const subject = "jetagent.tasks.echo.task.request"
	a.Delivered(subject)
	allocs := testing.AllocsPerRun(1000, func() {
		a.Delivered(subject)
		a.Settled(subject, runtime.Outcome{Disposition: runtime.Succeeded}, time.Millisecond)
		a.Heartbeat()
	})
	if allocs != 0 {
		t.Errorf("%v allocations per delivery, want 0", allocs)
	}
}

func TestNewRefusesASecondRegistrationAndBadOptions(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(reg, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg, Options{}); err == nil {
		t.Error("a second Metrics on one registry was accepted")
	}
	if _, err := New(prometheus.NewRegistry(), Options{MaxSubjects: -1}); err == nil {
		t.Error("negative MaxSubjects accepted")
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("nil registerer accepted")
	}
}

func TestWatchRefusesAnotherAgentsRuntime(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	m, err := New(prometheus.NewRegistry(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := runtime.New(conn, runtime.Config{Agent: "other", Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Agent("echo").Watch(rt); err == nil {
		t.Error("Watch accepted another agent's runtime")
	}
}
