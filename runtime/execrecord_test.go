package runtime_test

import (
	"context"
	"encoding/base64"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
)

// runCounter counts handler runs per envelope id.
type runCounter struct {
	mu   sync.Mutex
	runs map[string]int
	n    int
}

func (c *runCounter) handle(_ context.Context, tk *runtime.Task) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runs == nil {
		c.runs = map[string]int{}
	}
	c.runs[tk.Envelope.ID]++
	c.n++
	return "done", nil
}

func (c *runCounter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func startOn(t *testing.T, conn *bus.Conn, ftopo bus.Topology, c *runCounter) *runtime.Runtime {
	t.Helper()
	rt, err := runtime.New(conn, runtime.Config{Agent: "once", Topology: ftopo, Backoff: agenttest.FastRetry})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, c.handle)
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	return rt
}

func stopNow(t *testing.T, rt *runtime.Runtime) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// Issue 14 item 1: nats-server rebuilds a stream's duplicate table from
// the messages it still stores, and a work queue has deleted the consumed
// ones. After a restart, a client's re-send of a task that ran was stored
// again and ran again. The execution record must stop it.
func TestResentTasksDoNotRunAgainAfterAServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ftopo := bus.Topology{} // file storage: the store outlives the server
	srv := natstest.Start(t, natstest.Options{DataDir: dir})
	conn := natstest.Connect(t, srv)
	ctx := testkit.Context(t)
	if err := bus.Provision(ctx, conn.JetStream(), ftopo); err != nil {
		t.Fatal(err)
	}
	if err := bus.ProvisionAgent(ctx, conn.JetStream(), ftopo, "once"); err != nil {
		t.Fatal(err)
	}
	const n = 20
	var msgs []*nats.Msg
	for range n {
		env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
		if err != nil {
			t.Fatal(err)
		}
		m, err := bus.EnvelopeMsg(ftopo.TaskSubject("once", envelope.TaskRequest), env)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	var c runCounter
	rt := startOn(t, conn, ftopo, &c)
	for _, m := range msgs {
		if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, "the tasks to run", func() bool { return c.total() == n })
	stopNow(t, rt)
	conn.Close()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	srv = natstest.Start(t, natstest.Options{DataDir: dir})
	conn = natstest.Connect(t, srv)
	rt = startOn(t, conn, ftopo, &c)
	defer stopNow(t, rt)
	stored := 0
	for _, m := range msgs { // the client's re-sends, same ids, inside the window
		ack, err := conn.JetStream().PublishMsg(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if !ack.Duplicate {
			stored++
		}
	}
	t.Logf("%d of %d re-sends stored by the restarted server", stored, n)
	testkit.WaitFor(t, "the re-sends to be settled", func() bool {
		s, err := conn.JetStream().Stream(ctx, ftopo.TasksStream())
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.Msgs == 0 && rt.Stats().Received >= uint64(stored)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, k := range c.runs {
		if k != 1 {
			t.Errorf("task %s ran %d times", id, k)
		}
	}
	if got := rt.Stats().Duplicates; got != uint64(stored) {
		t.Errorf("%d duplicates settled, want %d (every stored re-send)", got, stored)
	}
}

// Issue 14 item 2: when the reply cannot be published (here the replies
// stream is gone), the delivery was handed back and the handler ran again,
// up to MaxDeliver times. The reply is retried, never the handler; when it
// never goes out, the task is dead-lettered as reply_failed with its
// result.
func TestAFailedReplyDoesNotRunTheHandlerAgain(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	if err := conn.JetStream().DeleteStream(ctx, topo.RepliesStream()); err != nil {
		t.Fatal(err)
	}
	var c runCounter
	rt := agenttest.Start(t, conn, runtime.Config{Agent: "once", Consumer: bus.ConsumerConfig{MaxDeliver: 3}}, c.handle)
	env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	env.ReplyTo = topo.ReplySubject("caller") + "." + env.ID
	m, err := bus.EnvelopeMsg(topo.TaskSubject("once", envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	dlqStream, err := conn.JetStream().Stream(ctx, topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "a dead letter, or a second run", func() bool {
		info, err := dlqStream.Info(ctx)
		return c.total() > 1 || (err == nil && info.State.Msgs > 0)
	})
	if n := c.total(); n != 1 {
		t.Fatalf("the handler ran %d times for one task whose reply failed", n)
	}
	recs := dlqMessages(t, conn, 1)
	if recs[0].Reason != dlq.ReasonReplyFailed {
		t.Fatalf("dead-lettered as %q, want %q", recs[0].Reason, dlq.ReasonReplyFailed)
	}
	raw, err := base64.StdEncoding.DecodeString(recs[0].Header.Get(dlq.HeaderResult))
	if err != nil {
		t.Fatal(err)
	}
	var rep envelope.Envelope
	if err := envelope.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("the dead letter's result: %v", err)
	}
	var got string
	if err := rep.DecodePayload(&got); err != nil || got != "done" || rep.CorrelationID != env.ID {
		t.Fatalf("the dead letter's result is %q for %s (%v), want \"done\" for %s", got, rep.CorrelationID, err, env.ID)
	}
	if s := rt.Stats(); s.ReplyFailed != 1 {
		t.Fatalf("stats %+v: want ReplyFailed 1", s)
	}
}

// Issue 14 item 3: a task dead-lettered because its run never ended (the
// process died or hung mid-step) left its step claim in the snapshot; a
// replay within HandlerTimeout was refused as "taken", acked, and never
// ran. Dead-lettering releases the claim.
func TestAReplayOfATaskDeadLetteredMidStepRuns(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	if err := bus.ProvisionAgent(ctx, conn.JetStream(), topo, "stepper"); err != nil {
		t.Fatal(err)
	}
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	cfg := runtime.Config{Agent: "stepper", Topology: topo, Backoff: agenttest.FastRetry,
		Consumer: bus.ConsumerConfig{MaxDeliver: 1, AckWait: time.Second}}
	first, err := runtime.New(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{}, 1)
	first.Handle(envelope.TaskRequest, func(ctx context.Context, tk *runtime.Task) (any, error) {
		return nil, tk.Step(ctx, 1, func(context.Context) (any, error) {
			started <- struct{}{}
			<-hang // hangs, deaf to its ctx: the run never ends
			return nil, nil
		})
	})
	if err := first.Start(ctx); err != nil {
		t.Fatal(err)
	}
	env, err := envelope.New("tester", "stepper", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	m, err := bus.EnvelopeMsg(topo.TaskSubject("stepper", envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	<-started
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_ = first.Stop(sctx) // gives up on the hung handler: its delivery stays unsettled
	cancel()

	ran := make(chan struct{}, 1)
	second, err := runtime.New(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	second.Handle(envelope.TaskRequest, func(ctx context.Context, tk *runtime.Task) (any, error) {
		return "done", tk.Step(ctx, 1, func(context.Context) (any, error) {
			ran <- struct{}{}
			return nil, nil
		})
	})
	if err := second.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopNow(t, second) })
	recs := dlqMessages(t, conn, 1) // its one attempt never ended
	if recs[0].Reason != dlq.ReasonMaxDeliveries {
		t.Fatalf("dead-lettered as %q, want %q", recs[0].Reason, dlq.ReasonMaxDeliveries)
	}
	replay := nats.NewMsg(recs[0].Subject)
	replay.Data = recs[0].Data
	replay.Header.Set(bus.HeaderMsgID, "replay-of-1")
	replay.Header.Set(dlq.HeaderReplayOf, "1")
	if _, err := conn.JetStream().PublishMsg(ctx, replay); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ran:
	case <-ctx.Done():
		t.Fatalf("the replay never ran its step (stats %+v)", second.Stats())
	}
}

// Issue 13 item 6: settlement (a reply retried while the replies stream is
// unavailable, a dead letter) ran without heartbeats, so with a short
// AckWait the task was redelivered mid-settle and its handler ran again.
func TestASlowSettlementIsHeartbeated(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	if err := conn.JetStream().DeleteStream(ctx, topo.RepliesStream()); err != nil {
		t.Fatal(err)
	}
	var c runCounter
	agenttest.Start(t, conn, runtime.Config{Agent: "once", Concurrency: 4, Consumer: bus.ConsumerConfig{AckWait: time.Second, MaxDeliver: 5}}, c.handle)
	env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	env.ReplyTo = topo.ReplySubject("caller") + "." + env.ID // no stream, no listener: each reply try fails
	m, err := bus.EnvelopeMsg(topo.TaskSubject("once", envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	dlqStream, err := conn.JetStream().Stream(ctx, topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the reply_failed dead letter", func() bool {
		info, err := dlqStream.Info(ctx)
		return err == nil && info.State.Msgs > 0
	})
	if n := c.total(); n != 1 {
		t.Fatalf("the handler ran %d times: the task was redelivered while its reply was being retried (AckWait 1s)", n)
	}
}

// Issue 14 item 7: a client whose retry budget outlasts the duplicate
// window re-sends an id the server has forgotten; it ran again.
func TestAReSendAfterTheDuplicateWindowDoesNotRunAgain(t *testing.T) {
	t.Parallel()
	short := bus.Topology{Memory: true, DuplicateWindow: 200 * time.Millisecond}
	_, conn := natstest.Provisioned(t, short)
	if err := bus.ProvisionAgent(testkit.Context(t), conn.JetStream(), short, "once"); err != nil {
		t.Fatal(err)
	}
	var c runCounter
	rt := startOn(t, conn, short, &c)
	env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	m, err := bus.EnvelopeMsg(short.TaskSubject("once", envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(testkit.Context(t), m); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the first run", func() bool { return rt.Stats().Succeeded == 1 })
	time.Sleep(2 * short.DuplicateWindow) // the server's window is a span of time, not an event
	ack, err := conn.JetStream().PublishMsg(testkit.Context(t), m)
	if err != nil || ack.Duplicate {
		t.Fatalf("the re-send after the window: %+v, %v (want it stored: the window is over)", ack, err)
	}
	testkit.WaitFor(t, "the re-send settled", func() bool { return rt.Stats().Duplicates == 1 })
	if n := c.total(); n != 1 {
		t.Fatalf("the handler ran %d times for one task re-sent after the duplicate window", n)
	}
	stopNow(t, rt)
}

// Found by the fault schedule (docs/chaos.md, seed 5 of commit c75bd56): a
// cancelled task's task.update reply that could not be published was
// dropped and the task acked: its sender heard nothing, and nothing was
// dead-lettered.
func TestACancelledTasksFailedReplyIsNotDropped(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	if err := conn.JetStream().DeleteStream(ctx, topo.RepliesStream()); err != nil {
		t.Fatal(err)
	}
	rt := agenttest.Start(t, conn, runtime.Config{Agent: "once"}, func(context.Context, *runtime.Task) (any, error) {
		return nil, runtime.ErrCancelled
	})
	env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	env.ReplyTo = topo.ReplySubject("caller") + "." + env.ID
	m, err := bus.EnvelopeMsg(topo.TaskSubject("once", envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the task settled", func() bool { s := rt.Stats(); return s.Cancelled+s.DeadLettered > 0 })
	dlqStream, err := conn.JetStream().Stream(ctx, topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := dlqStream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("the cancelled task's reply failed and %d dead letters were stored (stats %+v): the task.update was dropped", info.State.Msgs, rt.Stats())
	}
	if recs := dlqMessages(t, conn, 1); recs[0].Reason != dlq.ReasonReplyFailed {
		t.Fatalf("dead-lettered %s, want %s", recs[0].Reason, dlq.ReasonReplyFailed)
	}
}

// A control message names a task without being it: a task.cancel whose
// reply failed must not record its task as run, or the task itself would
// never run.
func TestAFailedControlReplyDoesNotMarkItsTaskRun(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	if err := conn.JetStream().DeleteStream(ctx, topo.RepliesStream()); err != nil {
		t.Fatal(err)
	}
	var c runCounter
	rt := agenttest.Start(t, conn, runtime.Config{Agent: "once"}, c.handle)
	cancel, err := envelope.New("tester", "once", envelope.TaskCancel, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel.TaskID = "job-7"
	cancel.ReplyTo = topo.ReplySubject("caller") + "." + cancel.ID
	m, err := bus.EnvelopeMsg(topo.TaskSubject("once", envelope.TaskCancel), cancel)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the cancel's reply_failed dead letter", func() bool { return rt.Stats().ReplyFailed == 1 })
	task, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	task.TaskID = "job-7"
	m, err = bus.EnvelopeMsg(topo.TaskSubject("once", envelope.TaskRequest), task)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the task settled", func() bool { s := rt.Stats(); return s.Succeeded+s.Duplicates+s.Cancelled+s.DeadLettered > 1 })
	if n := c.total(); n != 1 {
		t.Fatalf("the task ran %d times after a failed reply to a task.cancel naming it (stats %+v)", n, rt.Stats())
	}
}

// Found by TestLeastPrivilegeRolesDoTheirJobs: a task dead-lettered while
// a stale run of it hung, whose stale run then returned, was recorded as
// answered; its replay was then answered as a duplicate and never ran. A
// replay runs once per replay (entry and count), whatever the task's
// record says; a second delivery of the same replay does not run.
func TestAReplayRunsOncePerReplayWhateverTheTaskRecordSays(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	var c runCounter
	rt := agenttest.Start(t, conn, runtime.Config{Agent: "once"}, c.handle)
	env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	publish := func(id string, h map[string]string) {
		t.Helper()
		m, err := bus.EnvelopeMsg(topo.TaskSubject("once", envelope.TaskRequest), env)
		if err != nil {
			t.Fatal(err)
		}
		m.Header.Set(bus.HeaderMsgID, id)
		for k, v := range h {
			m.Header.Set(k, v)
		}
		if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	publish(env.ID, nil)
	testkit.WaitFor(t, "the first run", func() bool { return c.total() == 1 && rt.Stats().Succeeded == 1 })
	replay := map[string]string{dlq.HeaderReplayOf: "7", dlq.HeaderReplayCount: "1"}
	publish("replay-7-1", replay)
	testkit.WaitFor(t, "the replay settled", func() bool { s := rt.Stats(); return s.Succeeded+s.Duplicates >= 2 })
	if n := c.total(); n != 2 {
		t.Fatalf("the task ran %d times; its replay must run once (stats %+v)", n, rt.Stats())
	}
	publish("replay-7-1-again", replay) // the same replay delivered again (a lost ack)
	testkit.WaitFor(t, "the second copy settled", func() bool { s := rt.Stats(); return s.Succeeded+s.Duplicates >= 3 })
	if n := c.total(); n != 2 {
		t.Fatalf("the task ran %d times; a replay delivered twice must run once", n)
	}
}

// Found looking for siblings of issue 14 item 2: a task that ran already,
// sent again with a reply_to its agent could not publish to (the replies
// stream gone), was handed back at each failed reply until MaxDeliver, and
// then filed as max_deliveries ("the agent crashed or hung on it") though
// nothing crashed. The reply is retried; when it never goes out, the
// duplicate is dead-lettered as reply_failed, and the handler never runs
// again.
func TestADuplicatesFailedReplyIsDeadLetteredAsReplyFailed(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	var c runCounter
	rt := agenttest.Start(t, conn, runtime.Config{Agent: "once", Consumer: bus.ConsumerConfig{MaxDeliver: 2}}, c.handle)
	send := func(replyTo func(*envelope.Envelope) string) {
		t.Helper()
		env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
		if err != nil {
			t.Fatal(err)
		}
		env.TaskID = "job-9"
		env.ReplyTo = replyTo(env)
		m, err := bus.EnvelopeMsg(topo.TaskSubject("once", envelope.TaskRequest), env)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	send(func(*envelope.Envelope) string { return "" })
	testkit.WaitFor(t, "the first run", func() bool { return rt.Stats().Succeeded == 1 })
	if err := conn.JetStream().DeleteStream(ctx, topo.RepliesStream()); err != nil {
		t.Fatal(err)
	}
	send(func(env *envelope.Envelope) string { return topo.ReplySubject("caller") + "." + env.ID })
	recs := dlqMessages(t, conn, 1)
	if recs[0].Reason != dlq.ReasonReplyFailed {
		t.Fatalf("the duplicate whose reply failed was dead-lettered as %q (%s), want %q", recs[0].Reason, recs[0].Error, dlq.ReasonReplyFailed)
	}
	if n := c.total(); n != 1 {
		t.Fatalf("the handler ran %d times", n)
	}
}
