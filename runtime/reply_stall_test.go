package runtime_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Seed 32088820: with the replies stream off (its subjects changed) and a
// client listening on the reply subject, a reply's publish reaches the
// client as a request nobody answers, and waited for an ack its whole
// settle timeout, 10 s, the replies stream back after 1 s: the worker (one
// of concurrency 1) ran nothing else meanwhile, and healthy tasks queued
// behind it waited 6-10 s. Each try of a reply now waits a short while
// for its ack and tries again (the same id: stored once).
func TestAReplyTryWaitsBrieflyForItsAck(t *testing.T) {
	t.Parallel()
	topo := agenttest.Topology
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	js := conn.JetStream()
	replies, err := js.Stream(ctx, topo.RepliesStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := replies.CachedInfo().Config
	off := cfg
	off.Subjects = []string{"replies-off.>"}
	if _, err := js.UpdateStream(ctx, off); err != nil {
		t.Fatal(err)
	}
	env, err := envelope.New("tester", "echo", envelope.TaskRequest, "job")
	if err != nil {
		t.Fatal(err)
	}
	env.ReplyTo = topo.ReplySubject("raw") + "." + env.ID
	heard := make(chan struct{}, 16)
	sub, err := conn.NATS().Subscribe(env.ReplyTo, func(*nats.Msg) { heard <- struct{}{} }) // a client, listening
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	agenttest.Start(t, conn, runtime.Config{}, func(context.Context, *runtime.Task) (any, error) { return "done", nil })
	msg, err := bus.EnvelopeMsg(topo.TaskSubject("echo", envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	select { // the first try of the reply went out, to the client only
	case <-heard:
	case <-ctx.Done():
		t.Fatal("no reply published")
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil { // replies on again
		t.Fatal(err)
	}
	back := time.Now()
	deadline := back.Add(5 * time.Second) // half the settle timeout a try used to wait
	for {
		if _, err := replies.GetLastMsgForSubject(ctx, env.ReplyTo); err == nil {
			break
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reply was not stored within 5s of the replies stream's return: a try still waits out its settle timeout")
		}
		time.Sleep(20 * time.Millisecond) // polling the replies stream
	}
	t.Logf("reply stored %v after the replies stream came back", time.Since(back).Round(10*time.Millisecond))
}
