package runtime_test

import (
	"context"
	"errors"
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
	"github.com/nats-io/nats.go/jetstream"
)

// ranLedger counts handler runs per envelope id.
type ranLedger struct {
	mu  sync.Mutex
	ran map[string]int
}

func (l *ranLedger) add(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ran == nil {
		l.ran = map[string]int{}
	}
	l.ran[id]++
}

func (l *ranLedger) of(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ran[id]
}

func (l *ranLedger) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ran)
}

func dlqCount(t *testing.T, conn *bus.Conn) uint64 {
	t.Helper()
	return streamMsgs(t, conn, topo.DLQStream())
}

// Item 5: a replica that stops hands its queued tasks back; that spends a
// delivery, never an attempt. Every task fails once, then succeeds; with
// MaxDeliver 2, a task handed back on its second (last) delivery must not
// be dead-lettered, nor a task handed back by restart after restart (a
// rolling restart). Each task succeeds once.
func TestTasksHandedBackAtShutdownSpendNoAttempts(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var ran, failed ranLedger
	work := func(ctx context.Context, task *runtime.Task) (any, error) {
		first := failed.of(task.Envelope.ID) == 0
		select {
		case <-time.After(10 * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if first {
			failed.add(task.Envelope.ID)
			return nil, errors.New("first attempt fails")
		}
		ran.add(task.Envelope.ID)
		return nil, nil
	}
	cfg := runtime.Config{Agent: "echo", Topology: topo, Backoff: agenttest.FastRetry, Concurrency: 1,
		Breaker:  resilience.BreakerSettings{Threshold: 1000},
		Consumer: bus.ConsumerConfig{MaxDeliver: 2, AckWait: time.Second}}
	envs := publishTyped(t, conn, "echo", envelope.TaskRequest, 40, nil)
	for restart := range 4 {
		rt, err := runtime.New(conn, cfg)
		if err != nil {
			t.Fatal(err)
		}
		rt.Handle(envelope.TaskRequest, work)
		if err := rt.Start(testkit.Context(t)); err != nil {
			t.Fatal(err)
		}
		// The first replica stops once some failed tasks are back in its
		// queue for their second (last) delivery.
		taken := uint64(6)
		if restart == 0 {
			taken = 45
		}
		within(5*time.Second, func() bool { return rt.Stats().Received >= taken })
		if err := rt.Stop(testkit.Context(t)); err != nil {
			t.Fatalf("stop %d: %v", restart, err)
		}
		t.Logf("restart %d: %+v", restart, rt.Stats())
	}
	last := agenttest.Start(t, conn, cfg, work)
	if !within(20*time.Second, func() bool { return ran.len()+int(dlqCount(t, conn)) >= len(envs) }) {
		t.Fatalf("%d of %d tasks succeeded; %d dead letters (stats %+v)", ran.len(), len(envs), dlqCount(t, conn), last.Stats())
	}
	if n := dlqCount(t, conn); n != 0 {
		t.Errorf("%d tasks dead-lettered: they failed once, and were handed back at shutdown", n)
	}
	wrong := 0
	for _, env := range envs {
		if ran.of(env.ID) != 1 {
			wrong++
		}
	}
	if wrong > 0 {
		t.Errorf("%d of %d tasks did not succeed exactly once", wrong, len(envs))
	}
}

// Item 7: a task that hangs its handler on every delivery reaches the DLQ
// even when no sweeper runs (or the advisories stream is gone): it is
// never stranded in the work queue.
func TestHungTaskIsDeadLetteredWithoutTheSweeper(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		noSweeper bool
	}{{"sweeper off", true}, {"advisories stream gone", false}} {
		t.Run(tc.name, func(t *testing.T) {
			_, conn := natstest.Provisioned(t, topo)
			if !tc.noSweeper {
				if err := conn.JetStream().DeleteStream(testkit.Context(t), topo.AdvisoriesStream()); err != nil {
					t.Fatal(err)
				}
			}
			release := make(chan struct{})
			var ran ranLedger
			agenttest.Start(t, conn, runtime.Config{
				Consumer:       bus.ConsumerConfig{AckWait: time.Second, MaxDeliver: 2},
				HandlerTimeout: 300 * time.Millisecond,
				Concurrency:    4,
				DisableSweeper: tc.noSweeper,
			}, func(_ context.Context, task *runtime.Task) (any, error) {
				ran.add(task.Envelope.ID)
				<-release // hangs, ignoring its ctx
				return nil, nil
			})
			t.Cleanup(func() { close(release) })
			env := publishTyped(t, conn, "echo", envelope.TaskRequest, 1, nil)[0]
			if !within(15*time.Second, func() bool { return dlqCount(t, conn) == 1 }) {
				t.Fatalf("the hung task is not in the DLQ after 15s (ran %d times, %d in the tasks stream)",
					ran.of(env.ID), streamMsgs(t, conn, topo.TasksStream()))
			}
			r := dlqMessages(t, conn, 1)[0]
			if r.Reason != dlq.ReasonMaxDeliveries {
				t.Errorf("dead letter reason %s, want %s", r.Reason, dlq.ReasonMaxDeliveries)
			}
			if c := ran.of(env.ID); c != 2 {
				t.Errorf("the hung task ran %d times, want MaxDeliver = 2", c)
			}
			testkit.WaitFor(t, "the task to leave the tasks stream", func() bool { return streamMsgs(t, conn, topo.TasksStream()) == 0 })
		})
	}
}

// Item 7: a consumer that had a MaxDeliver (an older version's, another
// replica's) left a task in the work queue that the server stopped
// delivering; with the sweeper off, the runtime finds it and dead-letters
// it when it starts.
func TestStrandedTaskIsDeadLetteredWhenTheRuntimeStarts(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	js := conn.JetStream()
	old, err := js.CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "echo", FilterSubject: topo.AgentTasks("echo"), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: time.Second, MaxDeliver: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	publishTyped(t, conn, "echo", envelope.TaskRequest, 1, nil)
	batch, err := old.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() { // taken, never settled: after AckWait the server gives up on it
	}
	testkit.WaitFor(t, "the server to give up on the task", func() bool {
		info, err := old.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.Delivered.Stream == 1
	})
	agenttest.Start(t, conn, runtime.Config{DisableSweeper: true}, runtime.Echo)
	if !within(10*time.Second, func() bool { return dlqCount(t, conn) == 1 }) {
		t.Fatalf("the stranded task is not in the DLQ (%d in the tasks stream)", streamMsgs(t, conn, topo.TasksStream()))
	}
	if r := dlqMessages(t, conn, 1)[0]; r.Reason != dlq.ReasonMaxDeliveries {
		t.Errorf("dead letter reason %s, want %s", r.Reason, dlq.ReasonMaxDeliveries)
	}
	testkit.WaitFor(t, "the task to leave the tasks stream", func() bool { return streamMsgs(t, conn, topo.TasksStream()) == 0 })
}
