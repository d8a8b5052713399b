package runtime_test

import (
	"context"
	"errors"
	"strings"
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
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var topo = agenttest.Topology

func newClient(t *testing.T, conn *bus.Conn) *runtime.Client {
	t.Helper()
	c, err := runtime.NewClient(conn, runtime.ClientConfig{Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func request(t *testing.T, payload any) *envelope.Envelope {
	t.Helper()
	env, err := envelope.New("tester", "echo", envelope.TaskRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// dlqMessages returns the dead letters stored so far, waiting until want
// of them are there.
func dlqMessages(t *testing.T, conn *bus.Conn, want int) []*dlq.Record {
	t.Helper()
	ctx := testkit.Context(t)
	s, err := conn.JetStream().Stream(ctx, topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if int(info.State.Msgs) >= want {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("DLQ holds %d messages, want %d", info.State.Msgs, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
	var recs []*dlq.Record
	for seq := uint64(1); len(recs) < want; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := dlq.Parse(m.Data, m.Header)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestEchoRoundTrip(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	rt := agenttest.Start(t, conn, runtime.Config{}, runtime.Echo)
	client := newClient(t, conn)

	req := request(t, map[string]any{"hello": "world", "n": 42})
	rep, err := client.Send(testkit.Context(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.CorrelationID != req.ID || rep.PayloadType != envelope.TaskResponse ||
		rep.Sender != "echo" || rep.Recipient != "tester" || rep.TraceID != req.TraceID {
		t.Fatalf("reply = %+v", rep)
	}
	if rep.ID != envelope.DeriveID(req.ID, "reply") {
		t.Errorf("reply id %s is not derived from the request id", rep.ID)
	}
	var got map[string]any
	if err := rep.DecodePayload(&got); err != nil {
		t.Fatal(err)
	}
	if got["hello"] != "world" || got["n"] != int64(42) {
		t.Fatalf("echoed payload = %#v", got)
	}
	testkit.WaitFor(t, "settlement", func() bool { return rt.Stats().Succeeded == 1 })
	if s := rt.Stats(); s.Received != 1 || s.Retried != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestConcurrentSendsGetTheirOwnReplies(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	agenttest.Start(t, conn, runtime.Config{Concurrency: 8}, func(_ context.Context, task *runtime.Task) (any, error) {
		var n int
		if err := task.Decode(&n); err != nil {
			return nil, err
		}
		return n * 2, nil
	})
	client := newClient(t, conn)
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			rep, err := client.Send(testkit.Context(t), request(t, i))
			if err != nil {
				t.Error(err)
				return
			}
			var got int
			if err := rep.DecodePayload(&got); err != nil || got != 2*i {
				t.Errorf("request %d: reply %d, %v", i, got, err)
			}
		})
	}
	wg.Wait()
	if s := client.Stats(); s.Replies != 200 || s.Unmatched != 0 {
		t.Errorf("client stats = %+v", s)
	}
}

func TestFailedTaskIsRedeliveredUntilItSucceeds(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var calls atomic.Int32
	attempts := make(chan int, 10)
	rt := agenttest.Start(t, conn, runtime.Config{}, func(_ context.Context, task *runtime.Task) (any, error) {
		attempts <- task.Attempt
		if calls.Add(1) < 3 {
			return nil, errors.New("service unavailable")
		}
		return "ok", nil
	})
	rep, err := newClient(t, conn).Send(testkit.Context(t), request(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	var s string
	if err := rep.DecodePayload(&s); err != nil || s != "ok" {
		t.Fatalf("reply %q, %v", s, err)
	}
	for want := 1; want <= 3; want++ {
		if got := <-attempts; got != want {
			t.Fatalf("attempt %d seen as %d", want, got)
		}
	}
	testkit.WaitFor(t, "settlement", func() bool { return rt.Stats().Succeeded == 1 })
	if st := rt.Stats(); st.Retried != 2 || st.DeadLettered != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestPanicIsRecoveredAndRetried(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var calls atomic.Int32
	rt := agenttest.Start(t, conn, runtime.Config{}, func(_ context.Context, task *runtime.Task) (any, error) {
		if calls.Add(1) == 1 {
			panic("boom")
		}
		return nil, nil
	})
	if _, err := newClient(t, conn).Send(testkit.Context(t), request(t, nil)); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "settlement", func() bool { return rt.Stats().Succeeded == 1 })
	if st := rt.Stats(); st.Panics != 1 || st.Retried != 1 {
		t.Errorf("stats = %+v", st)
	}
}

func TestExhaustedAttemptsAreDeadLettered(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var calls atomic.Int32
	rt := agenttest.Start(t, conn, runtime.Config{Consumer: bus.ConsumerConfig{MaxDeliver: 3}},
		func(context.Context, *runtime.Task) (any, error) {
			calls.Add(1)
			return nil, errors.New("always failing")
		})
	req := request(t, nil)
	pub := bus.NewPublisher(conn.JetStream())
	ack, err := pub.PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), req)
	if err != nil {
		t.Fatal(err)
	}
	recs := dlqMessages(t, conn, 1)
	r := recs[0]
	if r.Reason != dlq.ReasonMaxAttempts || r.Deliveries != 3 || r.Sequence != ack.Sequence ||
		r.Agent != "echo" || r.TraceID != req.TraceID || !strings.Contains(r.Error, "always failing") {
		t.Fatalf("dead letter = %+v", r)
	}
	if r.Header.Get(bus.HeaderContentType) != envelope.ContentType {
		t.Error("original headers not kept")
	}
	var back envelope.Envelope
	if err := envelope.Unmarshal(r.Data, &back); err != nil || back.ID != req.ID {
		t.Fatalf("original body not kept: %v", err)
	}
	testkit.WaitFor(t, "settlement", func() bool { return rt.Stats().DeadLettered == 1 })
	if calls.Load() != 3 {
		t.Errorf("handler ran %d times, want 3", calls.Load())
	}
}

func TestBadInputIsDeadLetteredAndNeverBlocksTheConsumer(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	rt := agenttest.Start(t, conn, runtime.Config{Limits: envelope.Limits{MaxSize: 4096}}, runtime.Echo)
	ctx := testkit.Context(t)
	js := conn.JetStream()
	subject := topo.TaskSubject("echo", envelope.TaskRequest)

	type badInput struct {
		data    []byte
		reason  dlq.Reason
		subject string // zero: subject
	}
	bad := []badInput{
		{data: []byte("definitely not msgpack"), reason: dlq.ReasonMalformed},
		{data: make([]byte, 4097), reason: dlq.ReasonTooLarge},
	}
	// badEnvelope encodes a valid request spoiled by mutate.
	badEnvelope := func(mutate func(*envelope.Envelope)) []byte {
		env := request(t, nil)
		mutate(env)
		data, err := envelope.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	bad = append(bad, []badInput{
		{data: badEnvelope(func(e *envelope.Envelope) { e.PayloadType = envelope.MessageSend }), reason: dlq.ReasonUnknownType,
			subject: topo.TaskSubject("echo", envelope.MessageSend)},
		{data: badEnvelope(func(e *envelope.Envelope) { e.PayloadType = envelope.MessageSend }), reason: dlq.ReasonInvalid}, // not the subject's type
		{data: badEnvelope(func(e *envelope.Envelope) { e.Sender = "" }), reason: dlq.ReasonInvalid},
		{data: badEnvelope(func(e *envelope.Envelope) { e.Timestamp = time.Now().Add(-time.Hour) }), reason: dlq.ReasonBadTimestamp},
		{data: badEnvelope(func(e *envelope.Envelope) { e.Deadline = time.Now().Add(-time.Second) }), reason: dlq.ReasonExpired},
	}...)
	for i := range bad {
		if bad[i].subject == "" {
			bad[i].subject = subject
		}
	}

	bySeq := make(map[uint64]int) // stream sequence -> index in bad
	for i, b := range bad {
		ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: b.subject, Data: b.data})
		if err != nil {
			t.Fatal(err)
		}
		bySeq[ack.Sequence] = i
	}
	// A good task behind them still gets its answer.
	if _, err := newClient(t, conn).Send(ctx, request(t, "after the bad ones")); err != nil {
		t.Fatal(err)
	}
	recs := dlqMessages(t, conn, len(bad))
	for _, r := range recs { // workers run in parallel: match by original sequence
		i := bySeq[r.Sequence]
		if r.Reason != bad[i].reason || r.Deliveries != 1 || r.Subject != bad[i].subject {
			t.Errorf("dead letter %d: reason %q deliveries %d subject %q, want %q after one delivery", i, r.Reason, r.Deliveries, r.Subject, bad[i].reason)
		}
		if len(r.Data) != len(bad[i].data) {
			t.Errorf("dead letter %d: body of %d bytes, want the original %d", i, len(r.Data), len(bad[i].data))
		}
	}
	testkit.WaitFor(t, "all settled", func() bool { return rt.Stats().DeadLettered == uint64(len(bad)) })
	st, _ := js.Stream(ctx, topo.TasksStream())
	info, _ := st.Info(ctx)
	if info.State.Msgs != 0 {
		t.Errorf("tasks stream still holds %d messages", info.State.Msgs)
	}
}

func TestDeadLetterPublishFailureKeepsTheMessage(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	js := conn.JetStream()
	// Fill the DLQ to its cap: a full DLQ refuses new dead letters.
	if err := js.DeleteStream(ctx, topo.DLQStream()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: topo.DLQStream(), Subjects: []string{"jetagent.dlq.>"}, Storage: jetstream.MemoryStorage,
		MaxMsgs: 1, Discard: jetstream.DiscardNew,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "jetagent.dlq.filler.x", []byte("full")); err != nil {
		t.Fatal(err)
	}
	rt := agenttest.Start(t, conn, runtime.Config{}, runtime.Echo)
	if _, err := js.Publish(ctx, topo.TaskSubject("echo", envelope.TaskRequest), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "a failed dead-letter attempt", func() bool { return rt.Stats().Retried >= 2 })
	if rt.Stats().DeadLettered != 0 {
		t.Fatal("counted as dead-lettered although the DLQ refused it")
	}
	st, _ := js.Stream(ctx, topo.TasksStream())
	info, _ := st.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("tasks stream holds %d messages; the refused one must stay", info.State.Msgs)
	}
}

func TestGracefulStopFinishesInFlightWork(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	started := make(chan struct{})
	release := make(chan struct{})
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, task *runtime.Task) (any, error) {
		close(started)
		<-release
		return "done", nil
	})
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	client := newClient(t, conn)
	replied := make(chan error, 1)
	go func() {
		_, err := client.Send(testkit.Context(t), request(t, nil))
		replied <- err
	}()
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- rt.Stop(testkit.Context(t)) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a handler was still running")
	case <-time.After(50 * time.Millisecond): // a window for a wrong early return
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := <-replied; err != nil {
		t.Fatalf("in-flight task lost its reply: %v", err)
	}
	if err := rt.Start(testkit.Context(t)); !errors.Is(err, runtime.ErrStopped) {
		t.Errorf("Start after Stop = %v, want ErrStopped", err)
	}
}

func TestStopDeadlineHandsWorkBack(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	started := make(chan struct{})
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, task *runtime.Task) (any, error) {
		close(started)
		<-ctx.Done() // a long task, interrupted only by shutdown
		return nil, ctx.Err()
	})
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	pub := bus.NewPublisher(conn.JetStream())
	if _, err := pub.PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), request(t, nil)); err != nil {
		t.Fatal(err)
	}
	<-started
	sctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := rt.Stop(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want DeadlineExceeded", err)
	}
	if st := rt.Stats(); st.Returned != 1 || st.Retried != 0 || st.DeadLettered != 0 {
		t.Fatalf("stats = %+v: the interrupted task must be handed back, not counted as a failure", st)
	}
	// A new replica picks it up at once (no AckWait, no backoff).
	second := agenttest.Start(t, conn, runtime.Config{}, runtime.Echo)
	testkit.WaitFor(t, "redelivery to the next replica", func() bool { return second.Stats().Succeeded == 1 })
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	cases := map[string]runtime.Config{
		"agent name":       {Agent: "bad name"},
		"leave them empty": {Agent: "a", Consumer: bus.ConsumerConfig{Durable: "x"}},
		"must be positive": {Agent: "a", Concurrency: -1},
		"HandlerTimeout":   {Agent: "a", HandlerTimeout: -time.Second},
	}
	for want, cfg := range cases {
		if _, err := runtime.New(conn, cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", want, err)
		}
	}
}
