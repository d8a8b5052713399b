package bus

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// publishN stores n tasks for agent echo.
func publishN(ctx context.Context, t *testing.T, conn *Conn, topo Topology, n int) {
	t.Helper()
	pub := NewPublisher(conn.JetStream())
	for i := range n {
		env, _ := envelope.New("t", "echo", envelope.TaskRequest, i)
		if _, err := pub.PublishEnvelope(ctx, topo.TaskSubject("echo", envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
	}
}

// TestSubscriberNeverHoldsMoreThanItsWindow: a callback that settles
// nothing gets Window deliveries and no more; each settled or released one
// makes room for exactly one more.
func TestSubscriberNeverHoldsMoreThanItsWindow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, topo := inProcess(ctx, t)
	publishN(ctx, t, conn, topo, 30)
	const window = 4
	sub, err := NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), ConsumerConfig{
		Durable: "echo", FilterSubjects: []string{topo.AgentTasks("echo")}, Prefetch: 3, Window: window,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Delivery, 30)
	if err := sub.Start(func(d *Delivery) { got <- d }); err != nil {
		t.Fatal(err)
	}
	defer sub.Stop(context.Background())
	var held []*Delivery
	for range window {
		held = append(held, <-got)
	}
	// Wait for the server to have answered everything asked: the window
	// is full, nothing more may come.
	for {
		h, asked := sub.Holding()
		if h == window && asked == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("holding %d, asked %d", h, asked)
		case <-time.After(5 * time.Millisecond): // polling the subscriber's counters
		}
	}
	info, err := sub.Consumer().Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != window || len(got) != 0 {
		t.Fatalf("%d deliveries pending on the server, %d more handed out; want %d and 0", info.NumAckPending, len(got), window)
	}
	if err := held[0].Ack(); err != nil {
		t.Fatal(err)
	}
	held[1].Release()
	for range 2 {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatal("no delivery after two places were given back")
		}
	}
	select {
	case d := <-got:
		t.Fatalf("seq %d handed out beyond the window", d.StreamSeq)
	case <-time.After(200 * time.Millisecond): // a window in which an unbounded pull would hand out more
	}
}

// TestDeliveriesReadRightAfterAFreezeAreDatedToItsStart: a message
// received just after the process was frozen may have waited in the
// socket's buffer all along; its ack timeout counts from the freeze's
// start, so a freeze longer than it leaves the delivery expired.
func TestDeliveriesReadRightAfterAFreezeAreDatedToItsStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, topo := inProcess(ctx, t)
	sub, err := NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), ConsumerConfig{
		Durable: "echo", FilterSubjects: []string{topo.AgentTasks("echo")}, AckWait: 2 * time.Second,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// The housekeeper last ticked 3s ago: a freeze ends now.
	sub.lastTick.Store(now.Add(-3 * time.Second).UnixNano())
	if got := sub.sentNoLaterThan(now); !got.Equal(now.Add(-3 * time.Second)) {
		t.Fatalf("a message read right after a 3s freeze dated %v before now, want 3s", now.Sub(got))
	}
	if got := sub.sentNoLaterThan(now.Add(10 * time.Millisecond)); !got.Equal(now.Add(-3 * time.Second)) {
		t.Fatalf("a message read 10ms after the freeze dated %v", now.Sub(got))
	}
	if later := now.Add(afterFreeze + time.Millisecond); !sub.sentNoLaterThan(later).Equal(later) {
		t.Fatal("a message read well after the freeze is dated to the freeze")
	}
	if sub.Stats().Freezes != 1 {
		t.Fatalf("stats = %+v, want 1 freeze", sub.Stats())
	}
	d := &Delivery{ackTimeout: sub.ackTimeout(1)}
	d.alive.Store(now.Add(-3 * time.Second).UnixNano())
	if !d.Expired(now, 0) {
		t.Fatal("a delivery received at a 3s freeze's start is not expired with AckWait 2s")
	}
	d.alive.Store(now.UnixNano())
	if d.Expired(now.Add(time.Second), 0) {
		t.Fatal("a delivery alive 1s ago is expired with AckWait 2s")
	}
}

// TestSubscriberHoldsNoMoreThanItsWindowAfterAReconnect: a pull request
// sent before a reconnect still waits at the server, and the client
// resubscribes its inbox, so the server would fill the old request and the
// one asked after the reconnect: twice the window (seed 120228224: a
// replica whose connection dropped held 37 with a window of 32, and a
// replica that joined got none). After a reconnect the subscriber asks on
// a fresh inbox; the server drops the old request, which nobody hears.
func TestSubscriberHoldsNoMoreThanItsWindowAfterAReconnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, topo := inProcess(ctx, t)
	const window = 4
	sub, err := NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), ConsumerConfig{
		Durable: "echo", FilterSubjects: []string{topo.AgentTasks("echo")}, Prefetch: window, PullExpiry: time.Minute,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Delivery, 4*window)
	if err := sub.Start(func(d *Delivery) { got <- d }); err != nil {
		t.Fatal(err)
	}
	defer sub.Stop(context.Background())
	poll := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(5 * time.Millisecond): // polling the server and the subscriber
			}
		}
	}
	waiting := func(n int) func() bool {
		return func() bool {
			info, err := sub.Consumer().Info(ctx)
			return err == nil && info.NumWaiting == n
		}
	}
	poll("the first pull request", waiting(1))
	if err := conn.NATS().ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	poll("a pull request after the reconnect", func() bool { return sub.Stats().Requests == 2 })
	publishN(ctx, t, conn, topo, 3*window)
	var info *jetstream.ConsumerInfo
	poll("the server to hand out what it was asked for", func() bool {
		info, err = sub.Consumer().Info(ctx)
		return err == nil && info.NumWaiting == 0 && info.NumAckPending+int(info.NumPending) == 3*window
	})
	if info.NumAckPending != window {
		t.Fatalf("%d deliveries handed out after a reconnect, window %d", info.NumAckPending, window)
	}
	poll("the window's deliveries", func() bool { return len(got) == window })
	if h, _ := sub.Holding(); h != window {
		t.Fatalf("holding %d, window %d", h, window)
	}
	// Stop ends both inboxes: Done is closed.
	if err := sub.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after Stop: an old inbox is still open")
	}
}
