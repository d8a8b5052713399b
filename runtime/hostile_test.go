package runtime_test

import (
	"context"
	"errors"
	"strings"
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

// A payload the handler cannot decode is the sender's fault: the task is
// dead-lettered after one run (docs/errors.md), never retried, and never
// counted against the subject's breaker.
func TestUndecodablePayloadIsDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var runs atomic.Int32
	rt := agenttest.Start(t, conn, runtime.Config{Consumer: bus.ConsumerConfig{MaxDeliver: 5}, Breaker: resilience.BreakerSettings{Threshold: 2}},
		func(_ context.Context, task *runtime.Task) (any, error) {
			runs.Add(1)
			var n int
			if err := task.Decode(&n); err != nil {
				return nil, err
			}
			return n, nil
		})
	publish(t, conn, 3) // payloads 0, 1, 2 decode
	bad := request(t, "not a number")
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), bad); err != nil {
		t.Fatal(err)
	}
	recs := dlqMessages(t, conn, 1)
	if recs[0].Deliveries != 1 || recs[0].Reason != dlq.ReasonPermanent {
		t.Errorf("dead letter after %d deliveries, reason %s (%s)", recs[0].Deliveries, recs[0].Reason, recs[0].Error)
	}
	testkit.WaitFor(t, "the good tasks", func() bool { return rt.Stats().Succeeded == 3 })
	if n := runs.Load(); n != 4 {
		t.Errorf("handler ran %d times, want 4", n)
	}
	if st := rt.Breakers().States()[topo.TaskSubject("echo", envelope.TaskRequest)]; st != resilience.StateClosed {
		t.Errorf("breaker %v", st)
	}
}

// An agent that never checkpoints starts, and works, without a snapshot
// bucket (its buckets are opened when first needed).
func TestStartWithoutSnapshotBucket(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	for _, name := range snapshotBuckets(t, conn) {
		if err := conn.JetStream().DeleteKeyValue(testkit.Context(t), name); err != nil {
			t.Fatal(err)
		}
	}
	rt := agenttest.Start(t, conn, runtime.Config{}, runtime.Echo)
	if _, err := newClient(t, conn).Send(testkit.Context(t), request(t, "hi")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "settlement", func() bool { return rt.Stats().Succeeded == 1 })
}

// snapshotBuckets lists the snapshot buckets on the server.
func snapshotBuckets(t *testing.T, conn *bus.Conn) []string {
	t.Helper()
	var out []string
	names := conn.JetStream().KeyValueStoreNames(testkit.Context(t))
	for name := range names.Name() {
		if strings.HasPrefix(name, strings.TrimSuffix(topo.SnapshotBucket("x"), "x")) {
			out = append(out, name)
		}
	}
	if err := names.Error(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		t.Fatal(err)
	}
	return out
}

// The subject decides, the body confirms: a payload_type other than the
// subject's tail, or a recipient other than the agent, is dead-lettered
// as invalid without running any handler.
func TestBodyThatDisagreesWithTheSubjectIsInvalid(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var runs atomic.Int32
	agenttest.Start(t, conn, runtime.Config{}, func(ctx context.Context, task *runtime.Task) (any, error) {
		runs.Add(1)
		return runtime.Echo(ctx, task)
	})
	pub := bus.NewPublisher(conn.JetStream())
	cancel := request(t, nil)
	cancel.PayloadType, cancel.TaskID = envelope.TaskCancel, "x"
	other := request(t, nil)
	other.Recipient = "someone-else"
	if _, err := pub.PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), cancel); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), other); err != nil {
		t.Fatal(err)
	}
	for _, rec := range dlqMessages(t, conn, 2) {
		if rec.Reason != dlq.ReasonInvalid {
			t.Errorf("dead letter %s (%s), want reason %s", rec.Reason, rec.Error, dlq.ReasonInvalid)
		}
	}
	if n := runs.Load(); n != 0 {
		t.Errorf("the handler ran %d times", n)
	}
}

// A reply_to outside the replies stream gets a core NATS publish, which
// nothing stores: the runtime says so in its log and counts it.
func TestReplyOutsideTheRepliesStreamIsCounted(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	rt := agenttest.Start(t, conn, runtime.Config{}, runtime.Echo)
	inbox := conn.NATS().NewRespInbox()
	sub, err := conn.NATS().SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	env := request(t, "hi")
	env.ReplyTo = inbox
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), env); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "settlement", func() bool { return rt.Stats().Succeeded == 1 })
	if n := rt.Stats().UnstoredReplies; n != 1 {
		t.Errorf("UnstoredReplies = %d, want 1", n)
	}
}

// A task.cancel for a task the agent has not seen answers found: false
// and leaves a marker that cancels the task if it arrives soon, then
// expires: the same id sent later runs normally.
func TestCancelOfAnUnseenTaskExpires(t *testing.T) {
	t.Parallel()
	short := bus.Topology{Memory: true, SnapshotMarkerTTL: time.Second}
	_, conn := natstest.Provisioned(t, short)
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: short, CancelMarkerTTL: time.Second, Backoff: agenttest.FastRetry})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, task *runtime.Task) (any, error) {
		if err := task.Step(ctx, 1, func(context.Context) (any, error) { return nil, nil }); err != nil {
			return nil, err // ErrCancelled: the marker is seen at the first step
		}
		return runtime.Echo(ctx, task)
	})
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Stop(context.Background()) })
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Topology: short})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	state := func(typ envelope.PayloadType) (*envelope.Envelope, runtime.TaskState) {
		t.Helper()
		env := request(t, "x")
		env.PayloadType, env.TaskID = typ, "ghost"
		rep, err := client.Send(testkit.Context(t), env)
		if err != nil {
			t.Fatal(err)
		}
		var st runtime.TaskState
		if rep.PayloadType == envelope.TaskUpdate {
			if err := rep.DecodePayload(&st); err != nil {
				t.Fatal(err)
			}
		}
		return rep, st
	}
	if _, st := state(envelope.TaskCancel); st.Found || st.Status != "cancelled" {
		t.Fatalf("cancel of an unseen task: %+v, want found false, status cancelled", st)
	}
	if _, st := state(envelope.StateQuery); st.Found {
		t.Fatalf("state.query after cancelling an unseen task: %+v, want found false", st)
	}
	// A task with that id arriving now is cancelled...
	if rep, _ := state(envelope.TaskRequest); rep.PayloadType != envelope.TaskUpdate {
		t.Fatalf("task right after its cancel: %s, want the cancelled task.update", rep.PayloadType)
	}
	// ...and the marker does not outlive its TTL: cancel again, wait, run.
	state(envelope.TaskCancel)
	testkit.WaitFor(t, "the cancel marker to expire", func() bool {
		_, st := state(envelope.StateQuery)
		return st.Status == ""
	})
	if rep, _ := state(envelope.TaskRequest); rep.PayloadType != envelope.TaskResponse {
		t.Fatalf("task after the marker expired: %s, want its response", rep.PayloadType)
	}
}
