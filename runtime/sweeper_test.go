package runtime_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/runtime"
)

// A poison task hangs its handler on every delivery (past the handler
// deadline, so heartbeats stop and AckWait expires): it never reaches a
// disposition. After MaxDeliver deliveries the server gives up; the
// sweeper dead-letters it from the MAX_DELIVERIES advisory, and every
// other task is processed.
func TestPoisonTaskThatNeverSettlesIsSweptIntoTheDLQ(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	release := make(chan struct{})
	var poisonCalls atomic.Int32
	rt := agenttest.Start(t, conn, runtime.Config{
		Consumer:       bus.ConsumerConfig{AckWait: time.Second, MaxDeliver: 2},
		HandlerTimeout: 500 * time.Millisecond,
		Concurrency:    4,
	}, func(_ context.Context, task *runtime.Task) (any, error) {
		var n int
		_ = task.Decode(&n)
		if n == 3 {
			poisonCalls.Add(1)
			<-release // hangs, ignoring its ctx
		}
		return nil, nil
	})
	t.Cleanup(func() { close(release) }) // runs before the runtime's Stop
	envs := publish(t, conn, 6)
	recs := dlqMessages(t, conn, 1)
	r := recs[0]
	if r.Reason != dlq.ReasonMaxDeliveries || r.Deliveries != 2 || r.Sequence != 4 || r.TraceID != envs[3].TraceID {
		t.Fatalf("dead letter = %+v", r)
	}
	testkit.WaitFor(t, "the other tasks", func() bool { return rt.Stats().Succeeded == 5 })
	if poisonCalls.Load() != 2 {
		t.Errorf("poison task handled %d times, want MaxDeliver = 2", poisonCalls.Load())
	}
	testkit.WaitFor(t, "the poison task to leave the tasks stream", func() bool { return streamMsgs(t, conn, topo.TasksStream()) == 0 })
}
