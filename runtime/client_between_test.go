package runtime_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go/jetstream"
)

// Seed 32088820: the agent's reply came while the client was between two
// attempts (its first had timed out and it was looking in the replies
// stream, or backing off), with the replies stream unable to keep it
// (off). The client registered its interest per attempt, dropped the reply
// as unmatched, re-sent (deduplicated: the agent ran it already and said
// nothing more) and timed out: Send failed for a task that had succeeded.
// The client now waits for the reply across all of a Send's attempts.
func TestAReplyBetweenAttemptsIsNotLost(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	if err := conn.JetStream().DeleteStream(ctx, topo.RepliesStream()); err != nil { // replies off: only the live reply reaches the client
		t.Fatal(err)
	}
	c := clientWith(t, conn, runtime.RetryConfig{
		MaxRetries: 1, AttemptTimeout: 300 * time.Millisecond,
		Backoff: resilience.Backoff{Base: 2 * time.Second, Max: 2 * time.Second, NoJitter: true},
	})
	cons, err := conn.JetStream().CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "late", FilterSubject: topo.AgentTasks("late"), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	replied := make(chan struct{})
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		select {
		case <-replied:
			return // the re-send: the agent ran the task already and says nothing more
		default:
		}
		var req envelope.Envelope
		if err := envelope.Unmarshal(m.Data(), &req); err != nil {
			t.Error(err)
			return
		}
		// Once the first attempt has timed out (the client looks for a
		// stored reply), answer: the reply arrives between the attempts.
		for c.Stats().Lookups == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond) // polling the client's counters
		}
		rep, _ := req.NewReply(envelope.TaskResponse, "done")
		msg, _ := bus.EnvelopeMsg(req.ReplyTo, rep)
		if err := conn.NATS().PublishMsg(msg); err != nil {
			t.Error(err)
		}
		close(replied)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	rep, err := c.Send(context.WithoutCancel(ctx), to(t, "late"))
	if err != nil {
		t.Fatalf("Send failed although its reply came between two attempts: %v (stats %+v)", err, c.Stats())
	}
	var got string
	if err := rep.DecodePayload(&got); err != nil || got != "done" {
		t.Fatalf("reply %q (%v)", got, err)
	}
}
