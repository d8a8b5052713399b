package runtime_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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
	"github.com/nats-io/nats.go/jetstream"
)

// publish stores tasks for agent echo and returns their envelopes.
func publish(t *testing.T, conn *bus.Conn, n int) []*envelope.Envelope {
	t.Helper()
	pub := bus.NewPublisher(conn.JetStream())
	envs := make([]*envelope.Envelope, n)
	for i := range envs {
		envs[i] = request(t, i)
		if _, err := pub.PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), envs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return envs
}

// attempt is one handler call as a test saw it.
type attempt struct {
	id  string
	n   int
	at  time.Time
	err error
}

type recorder struct {
	mu    sync.Mutex
	calls []attempt
}

func (r *recorder) add(a attempt) {
	r.mu.Lock()
	r.calls = append(r.calls, a)
	r.mu.Unlock()
}

func (r *recorder) of(id string) []attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []attempt
	for _, a := range r.calls {
		if a.id == id {
			out = append(out, a)
		}
	}
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

// The seed's 503 analog: a handler failing transiently is redelivered by
// the server after backoff(n) and finally succeeds.
func TestTransientFailuresAreRedeliveredWithGrowingDelays(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	backoff := resilience.Backoff{Base: 200 * time.Millisecond, Max: 2 * time.Second}
	const failures = 4
	var rec recorder
	rt := agenttest.Start(t, conn, runtime.Config{Backoff: backoff, Breaker: resilience.BreakerSettings{Threshold: 100}},
		func(_ context.Context, task *runtime.Task) (any, error) {
			var err error
			if task.Attempt <= failures {
				err = errors.New("503 service unavailable")
			}
			rec.add(attempt{id: task.Envelope.ID, n: task.Attempt, at: time.Now(), err: err})
			return "ok", err
		})
	env := publish(t, conn, 1)[0]
	testkit.WaitFor(t, "success", func() bool { return rt.Stats().Succeeded == 1 })
	calls := rec.of(env.ID)
	if len(calls) != failures+1 {
		t.Fatalf("%d attempts, want %d", len(calls), failures+1)
	}
	for i := 1; i < len(calls); i++ {
		gap := calls[i].at.Sub(calls[i-1].at)
		ceil := backoff.Ceiling(i)
		t.Logf("attempt %d -> %d after %v (backoff(%d) band [%v, %v])", i, i+1, gap.Round(time.Millisecond), i, ceil/2, ceil)
		if calls[i].n != i+1 {
			t.Errorf("attempt %d seen as delivery %d", i+1, calls[i].n)
		}
		// The server never redelivers early; scheduling adds a little.
		if gap < ceil/2 || gap > ceil+300*time.Millisecond {
			t.Errorf("delay before attempt %d = %v, outside [%v, %v+300ms]", i+1, gap, ceil/2, ceil)
		}
	}
	if st := rt.Stats(); st.Retried != failures || st.DeadLettered != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestRetryAfterDelaysRedeliveryAsAsked(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	var rec recorder
	rt := agenttest.Start(t, conn, runtime.Config{Backoff: resilience.Backoff{Base: 20 * time.Second}},
		func(_ context.Context, task *runtime.Task) (any, error) {
			rec.add(attempt{id: task.Envelope.ID, n: task.Attempt, at: time.Now()})
			if task.Attempt == 1 {
				return nil, resilience.RetryAfter(300*time.Millisecond, errors.New("429 too many requests"))
			}
			return nil, nil
		})
	env := publish(t, conn, 1)[0]
	testkit.WaitFor(t, "success", func() bool { return rt.Stats().Succeeded == 1 })
	calls := rec.of(env.ID)
	if gap := calls[1].at.Sub(calls[0].at); gap < 300*time.Millisecond || gap > 5*time.Second {
		t.Fatalf("redelivered after %v, want the 300ms asked for (not the 20s backoff)", gap)
	}
}

func TestPermanentErrorIsDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var calls atomic.Int32
	rt := agenttest.Start(t, conn, runtime.Config{}, func(context.Context, *runtime.Task) (any, error) {
		calls.Add(1)
		return nil, resilience.Permanent(errors.New("invalid order id"))
	})
	env := publish(t, conn, 1)[0]
	recs := dlqMessages(t, conn, 1)
	if recs[0].Reason != dlq.ReasonPermanent || recs[0].Deliveries != 1 || recs[0].TraceID != env.TraceID {
		t.Fatalf("dead letter = %+v", recs[0])
	}
	testkit.WaitFor(t, "settled", func() bool { return rt.Stats().DeadLettered == 1 })
	if calls.Load() != 1 || rt.Stats().Retried != 0 {
		t.Fatalf("handler ran %d times, %d retries: a permanent error must not be retried", calls.Load(), rt.Stats().Retried)
	}
	// A permanent error says the subject works: the breaker stays closed.
	if st := rt.Breakers().States()[topo.TaskSubject("echo", envelope.TaskRequest)]; st != resilience.StateClosed {
		t.Errorf("breaker %v after a permanent error", st)
	}
}

// An open breaker keeps its subject's tasks from the handler: a few wait
// held (as many as the replica's concurrency), kept alive by heartbeats
// longer than AckWait and MaxDeliver would allow, the others are parked at
// the end of the stream; none is dead-lettered for it, each runs once on
// its first attempt, and one probe closes it.
func TestOpenBreakerHoldsTasksUntilOneProbeSucceeds(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	const openFor = 3 * time.Second
	var healthy atomic.Bool
	var rec recorder
	var opened, closed atomic.Int64
	rt := agenttest.Start(t, conn, runtime.Config{
		Consumer: bus.ConsumerConfig{AckWait: time.Second, MaxDeliver: 2},
		Breaker: resilience.BreakerSettings{Threshold: 2, OpenTimeout: openFor,
			OnStateChange: func(_ string, _, to resilience.State) {
				switch to {
				case resilience.StateOpen:
					opened.CompareAndSwap(0, time.Now().UnixNano())
				case resilience.StateClosed:
					closed.Store(time.Now().UnixNano())
				}
			}},
		Concurrency: 1,
	}, func(_ context.Context, task *runtime.Task) (any, error) {
		var err error
		if !healthy.Load() {
			err = errors.New("dependency down")
		}
		rec.add(attempt{id: task.Envelope.ID, n: task.Attempt, at: time.Now(), err: err})
		return nil, err
	})
	envs := publish(t, conn, 10)
	testkit.WaitFor(t, "the breaker to open", func() bool { return opened.Load() != 0 })
	testkit.WaitFor(t, "tasks to be held or parked", func() bool {
		st := rt.Stats()
		return st.Holding == 1 && st.Holding+st.Parked >= 8
	})
	callsWhileOpen := rec.count()
	healthy.Store(true)
	testkit.WaitFor(t, "every task to succeed", func() bool { return rt.Stats().Succeeded == 10 })

	if callsWhileOpen != 2 {
		t.Errorf("handler called %d times before the probe, want the 2 failures that opened it", callsWhileOpen)
	}
	if d := time.Duration(closed.Load() - opened.Load()); d < openFor {
		t.Errorf("closed %v after opening, before the open timeout %v", d, openFor)
	}
	if st := rt.Stats(); st.DeadLettered != 0 || st.Heartbeats == 0 {
		t.Errorf("stats = %+v: held tasks must be kept alive and never dead-lettered", st)
	}
	for i, env := range envs {
		calls := rec.of(env.ID)
		last := calls[len(calls)-1]
		if last.err != nil {
			t.Errorf("task %d never succeeded", i)
		}
		if i >= 2 && (len(calls) != 1 || last.n != 1) {
			t.Errorf("task %d: %d calls, last delivery %d; a held task must run once, on its first delivery", i, len(calls), last.n)
		}
	}
	// Exactly one probe ran between opening and closing.
	probes := 0
	rec.mu.Lock()
	for _, c := range rec.calls {
		if at := c.at.UnixNano(); at > opened.Load() && at <= closed.Load() {
			probes++
		}
	}
	rec.mu.Unlock()
	if probes != 1 {
		t.Errorf("%d calls while open/half-open, want exactly one probe", probes)
	}
}

// A slow but alive handler keeps its task: heartbeats stop the server from
// redelivering it to another worker although it runs 3x AckWait.
func TestSlowHandlerWithHeartbeatsIsDeliveredOnce(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	var rec recorder
	rt := agenttest.Start(t, conn, runtime.Config{Consumer: bus.ConsumerConfig{AckWait: time.Second}, Concurrency: 4},
		func(ctx context.Context, task *runtime.Task) (any, error) {
			rec.add(attempt{id: task.Envelope.ID, n: task.Attempt, at: time.Now()})
			select {
			case <-time.After(3 * time.Second): // the work itself
				return "done", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
	env := publish(t, conn, 1)[0]
	testkit.WaitFor(t, "success", func() bool { return rt.Stats().Succeeded == 1 })
	if calls := rec.of(env.ID); len(calls) != 1 {
		t.Fatalf("handler ran %d times, want once", len(calls))
	}
	info, err := rt.Consumer().Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || rt.Stats().Heartbeats < 2 {
		t.Fatalf("redelivered %d, heartbeats %d", info.NumRedelivered, rt.Stats().Heartbeats)
	}
}

// A delivery taken by a worker that dies (never settles) comes back after
// AckWait and is processed.
func TestUnsettledDeliveryIsRedeliveredAfterAckWait(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	const ackWait = time.Second
	// A "dead" replica: takes the task and never acks it.
	dead, err := conn.JetStream().CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "echo", FilterSubject: topo.AgentTasks("echo"), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: ackWait, MaxDeliver: bus.DefaultMaxDeliver, MaxAckPending: bus.DefaultMaxAckPending,
	})
	if err != nil {
		t.Fatal(err)
	}
	env := publish(t, conn, 1)[0]
	batch, err := dead.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	taken := time.Now()
	for range batch.Messages() { // taken, never settled
	}
	var rec recorder
	rt := agenttest.Start(t, conn, runtime.Config{Consumer: bus.ConsumerConfig{AckWait: ackWait}},
		func(_ context.Context, task *runtime.Task) (any, error) {
			rec.add(attempt{id: task.Envelope.ID, n: task.Attempt, at: time.Now()})
			return nil, nil
		})
	testkit.WaitFor(t, "redelivery", func() bool { return rt.Stats().Succeeded == 1 })
	calls := rec.of(env.ID)
	detect := calls[0].at.Sub(taken)
	t.Logf("lost delivery detected and redelivered after %v (AckWait %v)", detect.Round(time.Millisecond), ackWait)
	if calls[0].n != 2 || detect < ackWait {
		t.Fatalf("processed as delivery %d after %v; want delivery 2, no sooner than AckWait", calls[0].n, detect)
	}
}

// Tasks waiting in the agent's queue behind slow handlers are kept alive
// too: a backlog longer than AckWait is not redelivered elsewhere.
func TestQueuedBacklogBehindSlowHandlersIsNotRedelivered(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var rec recorder
	rt := agenttest.Start(t, conn, runtime.Config{Consumer: bus.ConsumerConfig{AckWait: time.Second}, Concurrency: 1},
		func(ctx context.Context, task *runtime.Task) (any, error) {
			rec.add(attempt{id: task.Envelope.ID, n: task.Attempt, at: time.Now()})
			select {
			case <-time.After(600 * time.Millisecond): // the work itself
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
	envs := publish(t, conn, 5) // 3s of work, one at a time, AckWait 1s
	testkit.WaitFor(t, "all five", func() bool { return rt.Stats().Succeeded == 5 })
	for i, env := range envs {
		if calls := rec.of(env.ID); len(calls) != 1 || calls[0].n != 1 {
			t.Errorf("task %d handled %d times (last delivery %d), want once", i, len(calls), calls[len(calls)-1].n)
		}
	}
	info, err := rt.Consumer().Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 {
		t.Fatalf("%d deliveries redelivered", info.NumRedelivered)
	}
}

func TestChaosHandlerFailsAsConfigured(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var crashes atomic.Int32
	rt := agenttest.Start(t, conn, runtime.Config{Concurrency: 8, Breaker: resilience.BreakerSettings{Threshold: 1000}},
		runtime.Chaos(runtime.ChaosConfig{FailRate: 0.3, PermanentRate: 0.1, CrashRate: 0.05, Crash: func() { crashes.Add(1) }}))
	const n = 200
	publish(t, conn, n)
	testkit.WaitFor(t, "every task settled", func() bool { st := rt.Stats(); return st.Succeeded+st.DeadLettered == n })
	st := rt.Stats()
	// PermanentRate is per task (by id): about 20 of 200; transient
	// failures were retried, never dead-lettered with MaxDeliver 10.
	if st.DeadLettered < 5 || st.DeadLettered > 45 || st.Retried < 30 || crashes.Load() == 0 {
		t.Fatalf("stats = %+v, crashes %d", st, crashes.Load())
	}
	for _, r := range dlqMessages(t, conn, int(st.DeadLettered)) {
		if r.Reason != dlq.ReasonPermanent || r.Deliveries != 1 {
			t.Fatalf("dead letter %+v: only the permanent failures, at once", r)
		}
	}
}

// Found by seed 643921371: when a breaker let a probe through, the
// replica moved every parked task back, and kept reading the parked
// subject while it did; the probe failed, the breaker opened again, the
// tasks moved back were parked again behind it, and the same loop moved
// them back again: 17,856 moves of a few dozen tasks in one pass, until
// its 30 s bound, while the tasks waited. A pass now moves only what was
// parked when it began, and stops once the breaker is open again.
func TestUnparkingDoesNotChaseTasksParkedAgain(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var runs atomic.Int64
	rt := agenttest.Start(t, conn, runtime.Config{
		Consumer:    bus.ConsumerConfig{AckWait: 2 * time.Second, MaxDeliver: 1000},
		Breaker:     resilience.BreakerSettings{Threshold: 1, OpenTimeout: 300 * time.Millisecond},
		Concurrency: 1,
	}, func(context.Context, *runtime.Task) (any, error) {
		if runs.Add(1)%3 == 0 { // a flapping dependency: a probe closes the breaker, the next failure opens it
			return nil, nil
		}
		return nil, errors.New("dependency down")
	})
	const n = 200
	publish(t, conn, n)
	testkit.WaitFor(t, "a few probes", func() bool { return runs.Load() >= 9 })
	// Each pass moves a task back at most once, and a pass starts when the
	// breaker stops being open: on a success here (and at the first
	// half-open). Parked once when first held, once per pass at most.
	st := rt.Stats()
	if limit := n * (st.Succeeded + 2); st.Parked > limit {
		t.Fatalf("%d tasks parked %d times while %d probes succeeded (at most %d): moved back and parked again in a loop (stats %+v)",
			n, st.Parked, st.Succeeded, limit, st)
	}
}
