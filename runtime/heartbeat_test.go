package runtime_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// Item 9: a delivery is heartbeated on the cadence of its own ack timeout
// (BackOff's step for its delivery count), not of the shortest step of
// all: a redelivered slow task with BackOff [1s, 9s] gets a heartbeat
// every few seconds, not every 250 ms.
func TestHeartbeatsFollowTheDeliverysOwnAckTimeout(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	var runs atomic.Int32
	var beatsBefore atomic.Uint64
	var rt *runtime.Runtime
	ready := make(chan struct{})
	rt = agenttest.Start(t, conn, runtime.Config{
		Consumer:    bus.ConsumerConfig{AckWait: 9 * time.Second, BackOff: []time.Duration{time.Second, 9 * time.Second}, MaxDeliver: 3},
		Concurrency: 1,
		Breaker:     resilience.BreakerSettings{Threshold: 100},
	}, func(ctx context.Context, _ *runtime.Task) (any, error) {
		<-ready
		if runs.Add(1) == 1 {
			return nil, errors.New("first attempt fails")
		}
		beatsBefore.Store(rt.Stats().Heartbeats)
		select {
		case <-time.After(3 * time.Second): // the second delivery's ack timeout is 9s
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
	close(ready)
	publishTyped(t, conn, "echo", envelope.TaskRequest, 1, nil)
	testkit.WaitFor(t, "success", func() bool { return rt.Stats().Succeeded == 1 })
	beats := rt.Stats().Heartbeats - beatsBefore.Load()
	t.Logf("%d heartbeats during a 3s run of a delivery whose ack timeout is 9s", beats)
	if runs.Load() != 2 {
		t.Errorf("the task ran %d times, want 2", runs.Load())
	}
	if beats > 3 {
		t.Errorf("%d heartbeats for a 3s run of a delivery whose ack timeout is 9s: paced by the shortest BackOff step", beats)
	}
}

// Item 10: replicas with different consumer settings: the last one to
// start rewrote the shared consumer. Both say so.
func TestConsumerSettingsRewrittenByAnotherReplicaAreReported(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var logsA, logsB syncBuffer
	agenttest.Start(t, conn, runtime.Config{Consumer: bus.ConsumerConfig{AckWait: 20 * time.Second},
		Logger: slog.New(slog.NewTextHandler(&logsA, nil))}, runtime.Echo)
	agenttest.Start(t, conn, runtime.Config{Consumer: bus.ConsumerConfig{AckWait: 2 * time.Second},
		Logger: slog.New(slog.NewTextHandler(&logsB, nil))}, runtime.Echo)
	const said = "consumer configuration differs"
	if !within(10*time.Second, func() bool { return strings.Contains(logsA.String(), said) }) {
		t.Errorf("the first replica did not report that another rewrote the consumer's AckWait; its log:\n%s", logsA.String())
	}
	if !strings.Contains(logsB.String(), said) || !strings.Contains(logsB.String(), "ack_wait") {
		t.Errorf("the replica that rewrote the consumer's AckWait did not say so; its log:\n%s", logsB.String())
	}
}

// Item 9: a delivery held by an open breaker gets about three heartbeats
// per ack timeout (one each time a third of it has passed since the server
// last heard of it), whatever the length of the hold.
func TestHeldDeliveryGetsAboutThreeHeartbeatsPerAckTimeout(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	const ackWait, held = time.Second, 4 * time.Second
	var down atomic.Bool
	down.Store(true)
	rt := agenttest.Start(t, conn, runtime.Config{
		Consumer:    bus.ConsumerConfig{AckWait: ackWait},
		Concurrency: 1,
		Breaker:     resilience.BreakerSettings{Threshold: 1, OpenTimeout: held},
	}, func(context.Context, *runtime.Task) (any, error) {
		if down.Load() {
			return nil, resilience.RetryAfter(time.Minute, errors.New("down")) // not held: redelivered much later
		}
		return nil, nil
	})
	publishTyped(t, conn, "echo", envelope.TaskRequest, 1, nil)
	testkit.WaitFor(t, "the breaker to open", func() bool { return rt.Stats().Retried == 1 })
	down.Store(false)
	publishTyped(t, conn, "echo", envelope.TaskRequest, 1, nil) // held until the probe
	testkit.WaitFor(t, "the task to be held", func() bool { return rt.Stats().Holding == 1 })
	start, before := time.Now(), rt.Stats().Heartbeats
	testkit.WaitFor(t, "the probe to succeed", func() bool { return rt.Stats().Succeeded == 1 })
	beats := rt.Stats().Heartbeats - before
	perAckWait := float64(beats) / (time.Since(start).Seconds() / ackWait.Seconds())
	t.Logf("%d heartbeats for one delivery held %v (AckWait %v): %.1f per AckWait", beats, time.Since(start).Round(time.Millisecond), ackWait, perAckWait)
	if perAckWait > 3.5 || perAckWait < 1.5 {
		t.Errorf("%.1f heartbeats per AckWait for a held delivery, want about 3", perAckWait)
	}
	info, err := rt.Consumer().Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 { // the first task's retry-after redelivery is a minute away
		t.Errorf("%d redeliveries: the held delivery expired", info.NumRedelivered)
	}
}
