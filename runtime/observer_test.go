package runtime_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
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
	"github.com/nats-io/nats.go"
)

// recordingObserver keeps every event it is told of.
type recordingObserver struct {
	mu         sync.Mutex
	delivered  map[string]int
	settled    []settledEvent
	breakers   []resilience.State
	heartbeats int
}

type settledEvent struct {
	subject string
	outcome runtime.Outcome
	handler time.Duration
}

func newRecordingObserver() *recordingObserver {
	return &recordingObserver{delivered: make(map[string]int)}
}

func (o *recordingObserver) Delivered(subject string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.delivered[subject]++
}

func (o *recordingObserver) Settled(subject string, out runtime.Outcome, handler time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.settled = append(o.settled, settledEvent{subject, out, handler})
}

func (o *recordingObserver) BreakerChanged(_ string, s resilience.State) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.breakers = append(o.breakers, s)
}

func (o *recordingObserver) Heartbeat() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.heartbeats++
}

// count returns how many settlements match d (and reason, if not empty).
func (o *recordingObserver) count(d runtime.Disposition, reason dlq.Reason) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, e := range o.settled {
		if e.outcome.Disposition == d && (reason == "" || e.outcome.Reason == reason) {
			n++
		}
	}
	return n
}

// The observer is told exactly what Stats counts: every outcome, with its
// dead-letter reason, failure kind and handler time.
func TestObserverSeesEveryOutcomeStatsCounts(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	obs := newRecordingObserver()
	rt := agenttest.Start(t, conn, runtime.Config{Observer: obs, Breaker: resilience.BreakerSettings{Threshold: 100}},
		func(_ context.Context, task *runtime.Task) (any, error) {
			var p string
			_ = task.Decode(&p)
			switch {
			case p == "permanent":
				return nil, resilience.Permanent(errors.New("refused"))
			case p == "transient" && task.Attempt == 1:
				return nil, errors.New("flaky")
			}
			return "ok", nil
		})
	pub := bus.NewPublisher(conn.JetStream())
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	for _, p := range []string{"ok", "transient", "permanent"} {
		if _, err := pub.PublishEnvelope(testkit.Context(t), subject, request(t, p)); err != nil {
			t.Fatal(err)
		}
	}
	unknown := request(t, nil)
	unknown.PayloadType = envelope.MessageSend
	unknownSubject := topo.TaskSubject("echo", envelope.MessageSend)
	if _, err := pub.PublishEnvelope(testkit.Context(t), unknownSubject, unknown); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(testkit.Context(t), &nats.Msg{Subject: subject, Data: []byte("not msgpack")}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "all settled", func() bool {
		st := rt.Stats()
		return st.Succeeded == 2 && st.DeadLettered == 3
	})
	// Stop waits for the workers, so the last outcome has been observed.
	if err := rt.Stop(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	st := rt.Stats()
	for _, c := range []struct {
		d      runtime.Disposition
		reason dlq.Reason
		want   uint64
	}{
		{runtime.Succeeded, "", st.Succeeded},
		{runtime.Retried, "", st.Retried},
		{runtime.DeadLettered, "", st.DeadLettered},
		{runtime.DeadLettered, dlq.ReasonPermanent, 1},
		{runtime.DeadLettered, dlq.ReasonUnknownType, 1},
		{runtime.DeadLettered, dlq.ReasonMalformed, 1},
	} {
		if got := obs.count(c.d, c.reason); uint64(got) != c.want {
			t.Errorf("%v %s: observer saw %d, want %d", c.d, c.reason, got, c.want)
		}
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.delivered[subject] != 5 || obs.delivered[runtime.UnhandledSubject] != 1 || len(obs.delivered) != 2 {
		t.Errorf("delivered = %v, want 5 on %s (2 attempts of one task) and 1 on %s (%s has no handler)",
			obs.delivered, subject, runtime.UnhandledSubject, unknownSubject)
	}
	kinds := map[resilience.Kind]int{}
	for _, e := range obs.settled {
		kinds[e.outcome.Failure]++
		ran := e.handler > 0
		wantRan := e.subject == subject && e.outcome.Reason != dlq.ReasonMalformed
		if ran != wantRan {
			t.Errorf("%+v: handler time %v, want a handler time only when the handler ran", e.outcome, e.handler)
		}
	}
	if kinds[resilience.KindTransient] != 1 || kinds[resilience.KindPermanent] != 1 {
		t.Errorf("failure kinds = %v, want one transient and one permanent", kinds)
	}
}

// A held delivery is reported as Held, then settled once released; the
// breaker's transitions reach the observer in order.
func TestObserverSeesHoldsAndBreakerTransitions(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	obs := newRecordingObserver()
	var mu sync.Mutex
	failing := true
	rt := agenttest.Start(t, conn, runtime.Config{
		Observer:    obs,
		Concurrency: 1,
		Consumer:    bus.ConsumerConfig{AckWait: time.Second},
		Breaker:     resilience.BreakerSettings{Threshold: 1, OpenTimeout: 700 * time.Millisecond}, // past a third of AckWait: heartbeats
	}, func(context.Context, *runtime.Task) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			failing = false
			return nil, errors.New("down")
		}
		return nil, nil
	})
	publish(t, conn, 2)
	testkit.WaitFor(t, "both tasks to succeed", func() bool { return rt.Stats().Succeeded == 2 })
	// Stop waits for the workers and the heartbeat goroutine, so every
	// event counted in Stats has been observed.
	if err := rt.Stop(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	st := rt.Stats()
	if st.Held == 0 || uint64(obs.count(runtime.Held, "")) != st.Held {
		t.Errorf("held: observer saw %d, stats %d (want > 0)", obs.count(runtime.Held, ""), st.Held)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	want := []resilience.State{resilience.StateOpen, resilience.StateHalfOpen, resilience.StateClosed}
	if len(obs.breakers) != len(want) {
		t.Fatalf("breaker transitions %v, want %v", obs.breakers, want)
	}
	for i := range want {
		if obs.breakers[i] != want[i] {
			t.Fatalf("breaker transitions %v, want %v", obs.breakers, want)
		}
	}
	if obs.heartbeats == 0 || uint64(obs.heartbeats) != st.Heartbeats {
		t.Errorf("heartbeats: observer saw %d, stats %d (want > 0)", obs.heartbeats, st.Heartbeats)
	}
}

// Log lines about a delivery name its agent, subject, envelope, attempt,
// correlation id and trace id.
func TestDeliveryLogLinesCarryTheEnvelopesIDs(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var buf syncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	rt := agenttest.Start(t, conn, runtime.Config{Logger: log}, func(_ context.Context, task *runtime.Task) (any, error) {
		if task.Attempt == 1 {
			return nil, errors.New("flaky")
		}
		return nil, resilience.Permanent(errors.New("refused"))
	})
	env := request(t, nil)
	env.CorrelationID = envelope.NewID()
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), env); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "dead letter", func() bool { return rt.Stats().DeadLettered == 1 })
	lines := 0
	for line := range strings.SplitSeq(buf.String(), "\n") {
		if !strings.Contains(line, "redelivering") && !strings.Contains(line, "dead-lettered") {
			continue
		}
		lines++
		for _, want := range []string{`"agent":"echo"`, `"subject":"` + topo.TaskSubject("echo", envelope.TaskRequest) + `"`,
			`"envelope_id":"` + env.ID + `"`, `"correlation_id":"` + env.CorrelationID + `"`, `"trace_id":"` + env.TraceID + `"`, `"attempt":`} {
			if !strings.Contains(line, want) {
				t.Errorf("log line lacks %s: %s", want, line)
			}
		}
	}
	if lines != 2 {
		t.Errorf("%d failure lines, want 2 (redelivering, dead-lettered):\n%s", lines, buf.String())
	}
}

// Ready follows the runtime's life; Backlog reads the server.
func TestReadyAndBacklog(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, func(context.Context, *runtime.Task) (any, error) {
		return nil, resilience.Permanent(errors.New("no"))
	})
	if err := rt.Ready(testkit.Context(t)); !errors.Is(err, runtime.ErrNotStarted) {
		t.Fatalf("Ready before Start = %v, want ErrNotStarted", err)
	}
	if _, err := rt.Backlog(testkit.Context(t)); !errors.Is(err, runtime.ErrNotStarted) {
		t.Fatalf("Backlog before Start = %v, want ErrNotStarted", err)
	}
	publish(t, conn, 3)
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Ready(testkit.Context(t)); err != nil {
		t.Fatalf("Ready after Start = %v", err)
	}
	testkit.WaitFor(t, "dead letters", func() bool {
		b, err := rt.Backlog(testkit.Context(t))
		return err == nil && b.DeadLetters == 3 && b.Pending == 0 && b.AckPending == 0
	})
	if n := rt.InFlight(); n != 0 {
		t.Errorf("InFlight = %d after all settled", n)
	}
	if err := rt.Stop(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	if err := rt.Ready(testkit.Context(t)); !errors.Is(err, runtime.ErrStopped) {
		t.Fatalf("Ready after Stop = %v, want ErrStopped", err)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
