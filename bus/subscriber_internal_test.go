package bus

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// stopping reports whether Stop has begun draining.
func (s *Subscriber) stopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// inProcess starts a server for t (package natstest cannot be used here: it
// imports bus) and returns a provisioned in-process connection.
func inProcess(ctx context.Context, t *testing.T) (*Conn, Topology) {
	t.Helper()
	srv, err := server.NewServer(&server.Options{JetStream: true, StoreDir: t.TempDir(), DontListen: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	conn, err := Connect(ctx, "nats://in-process", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	topo := Topology{Memory: true}
	if err := Provision(ctx, conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	return conn, topo
}

// TestSubscriberStopDrainsBufferedMessages holds the callback on the first
// message until Stop has begun, so the other messages sit in the client's
// buffer when it does: a drain hands them all to the callback, a plain
// stop would drop them.
func TestSubscriberStopDrainsBufferedMessages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, topo := inProcess(ctx, t)
	const n = 50
	pub := NewPublisher(conn.JetStream())
	for i := range n {
		env, _ := envelope.New("t", "echo", envelope.TaskRequest, i)
		if _, err := pub.PublishEnvelope(ctx, topo.TaskSubject("echo", envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), ConsumerConfig{
		Durable: "echo", FilterSubjects: []string{topo.AgentTasks("echo")}, Prefetch: 100,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	release := make(chan struct{})
	got := make(chan *Delivery, n)
	inBefore := conn.NATS().Stats().InMsgs
	if err := sub.Start(func(d *Delivery) {
		if len(got) == 0 {
			close(first)
			<-release
		}
		got <- d
	}); err != nil {
		t.Fatal(err)
	}
	<-first
	// Wait until all n reached the client: n-1 sit in its buffer. (The
	// server's NumAckPending says they were sent, not that they arrived.)
	for conn.NATS().Stats().InMsgs < inBefore+n {
		select {
		case <-ctx.Done():
			t.Fatalf("only %d of %d messages reached the client", conn.NATS().Stats().InMsgs-inBefore, n)
		case <-time.After(5 * time.Millisecond): // polling the connection's counters
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- sub.Stop(ctx) }()
	for !sub.stopping() {
		select {
		case <-ctx.Done():
			t.Fatal("Stop never began")
		case <-time.After(time.Millisecond): // polling another goroutine's progress
		}
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	<-sub.Done()
	if len(got) != n {
		t.Fatalf("Stop handed %d of %d buffered messages to the callback", len(got), n)
	}
	if err := sub.Start(func(*Delivery) {}); err == nil {
		t.Fatal("Start after Stop succeeded")
	}
}

// TestSubscriberRecoversOneMessageAtATime: a subscriber created while the
// consumer has unacknowledged deliveries (their holder died) hands them out
// one at a time, each only after the previous was settled.
func TestSubscriberRecoversOneMessageAtATime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, topo := inProcess(ctx, t)
	const n = 5
	pub := NewPublisher(conn.JetStream())
	for i := range n {
		env, _ := envelope.New("t", "echo", envelope.TaskRequest, i)
		if _, err := pub.PublishEnvelope(ctx, topo.TaskSubject("echo", envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
	}
	cfg := ConsumerConfig{Durable: "echo", FilterSubjects: []string{topo.AgentTasks("echo")}, AckWait: time.Second}
	// A replica takes all n and dies without settling them.
	dead, err := NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	taken := make(chan *Delivery, n)
	if err := dead.Start(func(d *Delivery) { taken <- d }); err != nil {
		t.Fatal(err)
	}
	for range n {
		<-taken
	}
	if err := dead.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// Its successor recovers them one by one.
	next, err := NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Delivery, n)
	if err := next.Start(func(d *Delivery) { got <- d }); err != nil {
		t.Fatal(err)
	}
	defer next.Stop(context.Background())
	for i := range n {
		d := <-got
		if d.NumDelivered != 2 {
			t.Fatalf("recovered delivery %d has NumDelivered %d, want 2", i, d.NumDelivered)
		}
		select {
		case extra := <-got:
			t.Fatalf("delivery of seq %d handed out while seq %d was unsettled", extra.StreamSeq, d.StreamSeq)
		case <-time.After(200 * time.Millisecond): // a window in which a streaming subscriber would have handed out the rest
		}
		if err := d.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if st := next.Stats(); st.Recovered != n {
		t.Fatalf("stats = %+v, want %d recovered", st, n)
	}
}
