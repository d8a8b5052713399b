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
)

// Isolation and liveness: one failing subject, one slow or wedged replica,
// or a replica joining never stalls the rest.

// newAgent returns a runtime for agent "echo" with the given handlers,
// started, and stopped by t.Cleanup.
func newAgent(t *testing.T, conn *bus.Conn, cfg runtime.Config, handlers map[envelope.PayloadType]runtime.Handler) *runtime.Runtime {
	t.Helper()
	if cfg.Agent == "" {
		cfg.Agent = "echo"
	}
	cfg.Topology = topo
	if cfg.Backoff == (resilience.Backoff{}) {
		cfg.Backoff = agenttest.FastRetry
	}
	rt, err := runtime.New(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for typ, h := range handlers {
		rt.Handle(typ, h)
	}
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rt.Stop(ctx)
	})
	return rt
}

// publishTyped stores n tasks of typ for agent, each changed by mutate
// (when set) before it is published.
func publishTyped(t *testing.T, conn *bus.Conn, agent string, typ envelope.PayloadType, n int, mutate func(*envelope.Envelope)) []*envelope.Envelope {
	t.Helper()
	pub := bus.NewPublisher(conn.JetStream())
	envs := make([]*envelope.Envelope, n)
	for i := range envs {
		env, err := envelope.New("tester", agent, typ, i)
		if err != nil {
			t.Fatal(err)
		}
		if mutate != nil {
			mutate(env)
		}
		if _, err := pub.PublishEnvelope(testkit.Context(t), topo.TaskSubject(agent, typ), env); err != nil {
			t.Fatal(err)
		}
		envs[i] = env
	}
	return envs
}

// within polls cond until it holds or d has passed; it reports whether it
// held.
func within(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond) // polling an external condition
	}
	return true
}

// holding is what a replica holds now: queued, running, held.
//
// The three counts are read one after the other: a delivery that leaves the
// queue for a worker between the reads would count twice (make test saw a
// replica "hold" 12 of a window of 11 so). The queue is read before and
// after the workers, and the smaller count taken: a delivery moving is
// counted once, one arriving meanwhile not yet.
func holding(rt *runtime.Runtime) int {
	before := rt.Stats()
	running := rt.InFlight()
	after := rt.Stats()
	return int(min(before.Queued, after.Queued)+min(before.Holding, after.Holding)) + running
}

// Item 1: a subject whose breaker is open must not use up the consumer's
// MaxAckPending, which every subject shares: the healthy subject's tasks
// keep flowing.
func TestOpenBreakerOnOneSubjectDoesNotStallAnother(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var healthy atomic.Int32
	rt := newAgent(t, conn, runtime.Config{
		Consumer:    bus.ConsumerConfig{MaxAckPending: 20, Prefetch: 10},
		Breaker:     resilience.BreakerSettings{Threshold: 2, OpenTimeout: time.Minute},
		Concurrency: 2,
	}, map[envelope.PayloadType]runtime.Handler{
		envelope.TaskRequest: func(context.Context, *runtime.Task) (any, error) {
			return nil, errors.New("downstream down")
		},
		envelope.MessageSend: func(context.Context, *runtime.Task) (any, error) {
			healthy.Add(1)
			return nil, nil
		},
	})
	failing := rt.Breakers().Get(topo.TaskSubject("echo", envelope.TaskRequest))
	publishTyped(t, conn, "echo", envelope.TaskRequest, 40, nil)
	testkit.WaitFor(t, "the failing subject's breaker to open", func() bool { return failing.State() == resilience.StateOpen })
	publishTyped(t, conn, "echo", envelope.MessageSend, 5, nil)
	if !within(10*time.Second, func() bool { return healthy.Load() == 5 }) {
		t.Fatalf("%d of 5 healthy message.send tasks done 10s after another subject's breaker opened (stats %+v)", healthy.Load(), rt.Stats())
	}
	if st := rt.Stats(); st.DeadLettered != 0 {
		t.Errorf("an open breaker dead-lettered %d tasks", st.DeadLettered)
	}
}

// Item 2: held tasks whose deadline passed while held are dead-lettered
// "expired" without consulting the breaker; they never become its probe.
func TestExpiredHeldTasksDoNotKeepARecoveredBreakerOpen(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	const openFor = time.Second
	var down atomic.Bool
	down.Store(true)
	var opened, closed atomic.Int64
	rt := newAgent(t, conn, runtime.Config{
		Breaker: resilience.BreakerSettings{Threshold: 2, OpenTimeout: openFor,
			OnStateChange: func(_ string, _, to resilience.State) {
				switch to {
				case resilience.StateOpen:
					opened.CompareAndSwap(0, time.Now().UnixNano())
				case resilience.StateClosed:
					closed.CompareAndSwap(0, time.Now().UnixNano())
				}
			}},
		Concurrency: 8,
	}, map[envelope.PayloadType]runtime.Handler{
		envelope.TaskRequest: func(ctx context.Context, _ *runtime.Task) (any, error) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if down.Load() {
				// Redelivered much later: the two that open the breaker
				// are not held.
				return nil, resilience.RetryAfter(time.Minute, errors.New("down"))
			}
			return nil, nil
		},
	})
	publishTyped(t, conn, "echo", envelope.TaskRequest, 2, nil)
	testkit.WaitFor(t, "the breaker to open", func() bool { return opened.Load() != 0 })
	deadline := time.Now().Add(300 * time.Millisecond)
	expiring := publishTyped(t, conn, "echo", envelope.TaskRequest, 4, func(e *envelope.Envelope) { e.Deadline = deadline })
	testkit.WaitFor(t, "the expiring tasks to be held", func() bool { return rt.Stats().Holding == 4 })
	testkit.WaitFor(t, "their deadline to pass", func() bool { return time.Now().After(deadline.Add(50 * time.Millisecond)) })
	down.Store(false)
	publishTyped(t, conn, "echo", envelope.TaskRequest, 1, nil) // the probe
	if !within(openFor+3*time.Second, func() bool { return closed.Load() != 0 }) {
		t.Fatalf("the breaker did not close within %v of opening (stats %+v)", openFor+3*time.Second, rt.Stats())
	}
	if d := time.Duration(closed.Load() - opened.Load()); d > openFor+2*time.Second {
		t.Errorf("the breaker closed %v after opening; the open timeout is %v: expired held tasks were probes", d, openFor)
	}
	recs := dlqMessages(t, conn, len(expiring))
	for _, r := range recs {
		if r.Reason != dlq.ReasonExpired {
			t.Errorf("dead letter reason %s, want %s", r.Reason, dlq.ReasonExpired)
		}
	}
}

// Item 3: a replica takes at most Concurrency + Prefetch deliveries, so a
// second replica gets its share of a backlog.
func TestTwoReplicasShareABacklog(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	const n, concurrency, prefetch = 100, 1, 10
	cfg := runtime.Config{Concurrency: concurrency, Consumer: bus.ConsumerConfig{Prefetch: prefetch}}
	work := func(ctx context.Context, _ *runtime.Task) (any, error) {
		select {
		case <-time.After(15 * time.Millisecond):
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	a := newAgent(t, conn, cfg, map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: work})
	publishTyped(t, conn, "echo", envelope.TaskRequest, n, nil)
	testkit.WaitFor(t, "the first replica to start", func() bool { return a.Stats().Succeeded >= 1 })
	var most atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			if h := int64(holding(a)); h > most.Load() {
				most.Store(h)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	})
	b := newAgent(t, conn, cfg, map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: work})
	testkit.WaitFor(t, "every task", func() bool { return a.Stats().Succeeded+b.Stats().Succeeded == n })
	close(stop)
	wg.Wait()
	sa, sb := a.Stats().Succeeded, b.Stats().Succeeded
	t.Logf("split %d/%d; the first replica held at most %d", sa, sb, most.Load())
	if min(sa, sb) < 40 {
		t.Errorf("split %d/%d, worse than 60/40", sa, sb)
	}
	if most.Load() > concurrency+prefetch {
		t.Errorf("a replica held %d deliveries, more than concurrency+prefetch = %d", most.Load(), concurrency+prefetch)
	}
}

// Item 3: a replica whose handlers ignore their ctx holds at most
// Concurrency + Prefetch deliveries and says it is not ready.
func TestWedgedReplicaHoldsItsWindowAndIsNotReady(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	const concurrency, prefetch = 2, 3
	release := make(chan struct{})
	rt := newAgent(t, conn, runtime.Config{Concurrency: concurrency, HandlerTimeout: 200 * time.Millisecond,
		Consumer: bus.ConsumerConfig{Prefetch: prefetch}},
		map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: func(context.Context, *runtime.Task) (any, error) {
			<-release // ignores its ctx
			return nil, nil
		}})
	t.Cleanup(func() { close(release) }) // before the runtime's Stop
	publishTyped(t, conn, "echo", envelope.TaskRequest, 20, nil)
	testkit.WaitFor(t, "every worker to be taken", func() bool { return rt.InFlight() == concurrency })
	if !within(3*time.Second, func() bool { return rt.Ready(testkit.Context(t)) != nil }) {
		t.Errorf("a replica whose every handler is stuck past its deadline is still ready")
	}
	info, err := rt.Consumer().Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending > concurrency+prefetch {
		t.Errorf("the wedged replica holds %d deliveries, more than concurrency+prefetch = %d", info.NumAckPending, concurrency+prefetch)
	}
}

// Item 8: a replica that joins while others have work in flight runs at
// full concurrency from the start.
func TestJoiningReplicaRunsAtFullConcurrency(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	release := make(chan struct{})
	a := newAgent(t, conn, runtime.Config{Concurrency: 2, Consumer: bus.ConsumerConfig{Prefetch: 1}},
		map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: func(ctx context.Context, _ *runtime.Task) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		}})
	t.Cleanup(func() { close(release) })
	publishTyped(t, conn, "echo", envelope.TaskRequest, 2, nil)
	testkit.WaitFor(t, "the first replica's work in flight", func() bool { return a.InFlight() == 2 })
	var running, most atomic.Int32
	b := newAgent(t, conn, runtime.Config{Concurrency: 4},
		map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: func(ctx context.Context, _ *runtime.Task) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			select {
			case <-time.After(30 * time.Millisecond):
			case <-ctx.Done():
			}
			return nil, nil
		}})
	publishTyped(t, conn, "echo", envelope.TaskRequest, 40, nil)
	if !within(10*time.Second, func() bool { return b.Stats().Succeeded >= 12 }) {
		t.Fatalf("the joining replica did %d tasks in 10s", b.Stats().Succeeded)
	}
	if most.Load() < 2 {
		t.Errorf("the joining replica ran at most %d task at a time while another replica had work in flight", most.Load())
	}
}
