package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func newEnvelope(t testing.TB, payload any) *envelope.Envelope {
	t.Helper()
	env, err := envelope.New("tester", "echo", envelope.TaskRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestPublishEnvelopeSetsHeadersAndDeduplicates(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	pub := bus.NewPublisher(conn.JetStream())
	ctx := testkit.Context(t)
	env := newEnvelope(t, map[string]any{"n": 1})
	subject := topo.TaskSubject("echo", envelope.TaskRequest)

	ack, err := pub.PublishEnvelope(ctx, subject, env)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Duplicate || ack.Stream != topo.TasksStream() || ack.Sequence != 1 {
		t.Fatalf("first ack = %+v", ack)
	}
	again, err := pub.PublishEnvelope(ctx, subject, env)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Sequence != 1 {
		t.Fatalf("re-send ack = %+v, want a duplicate of sequence 1", again)
	}

	raw, err := conn.JetStream().Stream(ctx, topo.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	info, _ := raw.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
	msg, err := raw.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get(bus.HeaderMsgID); got != env.ID {
		t.Errorf("Nats-Msg-Id = %q, want %q", got, env.ID)
	}
	if got := msg.Header.Get(bus.HeaderContentType); got != envelope.ContentType {
		t.Errorf("Content-Type = %q", got)
	}
	tp := msg.Header.Get(bus.HeaderTraceParent)
	if !strings.HasPrefix(tp, "00-"+env.TraceID+"-") || len(tp) != 55 {
		t.Errorf("traceparent = %q, want 00-<trace id>-<16 hex>-01", tp)
	}
	var back envelope.Envelope
	if err := envelope.Unmarshal(msg.Data, &back); err != nil || back.ID != env.ID {
		t.Fatalf("stored body does not decode to the envelope: %v", err)
	}
}

func TestPublishToSubjectWithoutStreamFails(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, bus.Topology{Memory: true})
	pub := bus.NewPublisher(conn.JetStream())
	_, err := pub.PublishEnvelope(testkit.Context(t), "nowhere.at.all", newEnvelope(t, nil))
	if !errors.Is(err, jetstream.ErrNoStreamResponse) || !strings.Contains(err.Error(), "nowhere.at.all") {
		t.Fatalf("err = %v, want ErrNoStreamResponse naming the subject", err)
	}
	_ = pub.Close()
	if _, err := pub.PublishEnvelope(testkit.Context(t), "jetagent.tasks.echo.task.request", newEnvelope(t, nil)); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("after Close: err = %v, want ErrClosed", err)
	}
}

func TestPublishBatchAcksEveryMessage(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	pub := bus.NewPublisher(conn.JetStream())
	const n = 5000 // more than the in-flight window
	msgs := make([]*nats.Msg, 0, n+1)
	for i := range n {
		m, err := bus.EnvelopeMsg(topo.TaskSubject("echo", envelope.TaskRequest), newEnvelope(t, i))
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	// One bad message in the middle must not hide the others' acks.
	msgs = append(msgs[:n/2], append([]*nats.Msg{{Subject: "nowhere", Data: []byte("x")}}, msgs[n/2:]...)...)
	acks, err := pub.PublishBatch(testkit.Context(t), msgs)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("message %d to nowhere", n/2)) {
		t.Fatalf("err = %v, want the failure of message %d", err, n/2)
	}
	seen := make(map[uint64]bool, n)
	for i, a := range acks {
		if i == n/2 {
			if a.Sequence != 0 {
				t.Errorf("failed message has ack %+v", a)
			}
			continue
		}
		if a.Sequence == 0 || seen[a.Sequence] {
			t.Fatalf("ack %d = %+v: missing or repeated sequence", i, a)
		}
		seen[a.Sequence] = true
	}
	if len(seen) != n {
		t.Fatalf("%d acks, want %d", len(seen), n)
	}
}

func TestPublishEnvelopesSendsAllButTheOneThatDoesNotEncode(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	pub := bus.NewPublisher(conn.JetStream())
	const n = 3000 // more than the in-flight window
	envs := make([]*envelope.Envelope, n)
	for i := range envs {
		envs[i] = newEnvelope(t, i)
	}
	envs[n/2].Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) // cannot be encoded
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	acks, err := pub.PublishEnvelopes(testkit.Context(t), subject, envs)
	if !errors.Is(err, envelope.ErrInvalidField) || !strings.Contains(err.Error(), fmt.Sprintf("envelope %d to %s", n/2, subject)) {
		t.Fatalf("err = %v, want envelope %d's encoding error", err, n/2)
	}
	stream, err := conn.JetStream().Stream(testkit.Context(t), topo.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if i == n/2 {
			if a.Sequence != 0 {
				t.Errorf("envelope that did not encode has ack %+v", a)
			}
			continue
		}
		if i%500 != 0 { // spot-check that ack i holds envelope i
			continue
		}
		raw, err := stream.GetMsg(testkit.Context(t), a.Sequence)
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		var got envelope.Envelope
		err = envelope.Unmarshal(raw.Data, &got)
		if err != nil || got.ID != envs[i].ID || raw.Header.Get(bus.HeaderMsgID) != envs[i].ID {
			t.Fatalf("ack %d holds envelope %q (err %v), want %s", i, got.ID, err, envs[i].ID)
		}
	}
	info, err := stream.Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n-1 {
		t.Fatalf("stream holds %d messages, want %d", info.State.Msgs, n-1)
	}
}

// TestPublishEachReportsEachMessage: a message whose own context is done is
// not sent and fails alone; the others are stored; after Close every
// message fails with ErrClosed.
func TestPublishEachReportsEachMessage(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	pub := bus.NewPublisher(conn.JetStream())
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	msgs := make([]*nats.Msg, 3)
	for i := range msgs {
		m, err := bus.EnvelopeMsg(subject, newEnvelope(t, i))
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = m
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	acks, errs := pub.PublishEach(testkit.Context(t), msgs, func(i int) context.Context {
		if i == 1 {
			return done
		}
		return context.Background()
	})
	if errs[0] != nil || errs[2] != nil || acks[0].Sequence == 0 || acks[2].Sequence == 0 {
		t.Fatalf("acks %+v, errs %v: want messages 0 and 2 stored", acks, errs)
	}
	if !errors.Is(errs[1], context.Canceled) || acks[1].Sequence != 0 {
		t.Fatalf("message 1: ack %+v, err %v, want context.Canceled and no ack", acks[1], errs[1])
	}
	_ = pub.Close()
	if _, errs := pub.PublishEach(testkit.Context(t), msgs, nil); !errors.Is(errs[0], bus.ErrClosed) || !errors.Is(errs[2], bus.ErrClosed) {
		t.Fatalf("after Close: errs %v, want ErrClosed for each", errs)
	}
}
