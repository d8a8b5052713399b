package watermillbus_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const wmStream = "WMTEST"

// wmServer starts a server with a limits-retention stream capturing
// "wmtest.>", where every watermill test topic lives.
func wmServer(t *testing.T) *bus.EmbeddedServer {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	_, err := conn.JetStream().CreateStream(testkit.Context(t), jetstream.StreamConfig{
		Name:      wmStream,
		Subjects:  []string{"wmtest.>"},
		Retention: jetstream.LimitsPolicy,
		Storage:   jetstream.MemoryStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func wmNext(t *testing.T, ch <-chan *message.Message) *message.Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("output channel closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
		return nil
	}
}

func wmClosed(t *testing.T, ch <-chan *message.Message) {
	t.Helper()
	select {
	case m, ok := <-ch:
		if ok {
			t.Fatalf("got message %s, want the channel closed", m.UUID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("output channel not closed within 10s")
	}
}

func newWMSubscriber(t *testing.T, conn *bus.Conn, cfg watermillbus.Config) *watermillbus.Subscriber {
	t.Helper()
	cfg.Stream = wmStream
	sub, err := watermillbus.NewSubscriber(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })
	return sub
}

func TestRoundTripNackAndDuplicates(t *testing.T) {
	srv := wmServer(t)
	conn := natstest.Connect(t, srv)
	raw := bus.NewPublisher(conn.JetStream())
	pub := watermillbus.NewPublisher(raw)
	const nakDelay = 200 * time.Millisecond
	sub := newWMSubscriber(t, conn, watermillbus.Config{NakDelay: nakDelay})
	topic := "wmtest.orders.created"

	msg := message.NewMessage(watermill.NewUUID(), []byte("payload"))
	msg.Metadata.Set("tenant", "acme")
	msg.Metadata.Set("Trace-Id", "4bf92f3577b34da6")
	if err := pub.Publish(topic, msg); err != nil {
		t.Fatal(err)
	}
	// The same UUID again (a watermill retry): the server drops it.
	if err := pub.Publish(topic, msg.Copy()); err != nil {
		t.Fatal(err)
	}
	// The same UUID on another topic of the stream: a message of its own.
	if err := pub.Publish("wmtest.audit", msg.Copy()); err != nil {
		t.Fatal(err)
	}
	// Published outside watermill: the UUID comes from Nats-Msg-Id.
	foreign := &nats.Msg{Subject: "wmtest.foreign", Header: nats.Header{bus.HeaderMsgID: []string{"env-1"}}}
	if _, err := raw.PublishMsg(testkit.Context(t), foreign); err != nil {
		t.Fatal(err)
	}
	last := message.NewMessage(watermill.NewUUID(), []byte("last"))
	if err := pub.Publish(topic, last); err != nil {
		t.Fatal(err)
	}

	out, err := sub.Subscribe(testkit.Context(t), "wmtest.orders.>")
	if err != nil {
		t.Fatal(err)
	}
	got := wmNext(t, out)
	if got.UUID != msg.UUID || string(got.Payload) != "payload" {
		t.Fatalf("got %s %q, want %s %q", got.UUID, got.Payload, msg.UUID, "payload")
	}
	want := map[string]string{
		"tenant": "acme", "Trace-Id": "4bf92f3577b34da6",
		watermillbus.MetadataNumDelivered: "1", watermillbus.MetadataStreamSeq: "1", watermillbus.MetadataStream: wmStream, watermillbus.MetadataSubject: topic,
	}
	for k, v := range want {
		if got.Metadata.Get(k) != v {
			t.Errorf("metadata %s = %q, want %q (all: %v)", k, got.Metadata.Get(k), v, got.Metadata)
		}
	}
	if at, err := time.Parse(time.RFC3339Nano, got.Metadata.Get(watermillbus.MetadataPublished)); err != nil || time.Since(at) > time.Minute || time.Since(at) < 0 {
		t.Errorf("metadata %s = %q (err %v), want the recent publish time", watermillbus.MetadataPublished, got.Metadata.Get(watermillbus.MetadataPublished), err)
	}
	if len(got.Metadata) != len(want)+1 {
		t.Errorf("metadata = %v, want exactly %v and %s", got.Metadata, want, watermillbus.MetadataPublished)
	}

	// One message at a time: "last" sits in the client buffer until then.
	select {
	case m := <-out:
		t.Fatalf("got %s before %s was settled", m.UUID, got.UUID)
	case <-time.After(100 * time.Millisecond):
	}

	// Nack: "last" comes next (the duplicate was dropped), then the
	// Nack'ed message after NakDelay, counted as its second delivery.
	nacked := time.Now()
	got.Nack()
	select {
	case <-got.Context().Done():
	case <-time.After(10 * time.Second):
		t.Error("message context not cancelled after Nack")
	}
	second := wmNext(t, out)
	if second.UUID != last.UUID {
		t.Fatalf("after the nack got %s, want %s (the duplicate must have been dropped)", second.UUID, last.UUID)
	}
	second.Ack()
	again := wmNext(t, out)
	if elapsed := time.Since(nacked); again.UUID != msg.UUID || again.Metadata.Get(watermillbus.MetadataNumDelivered) != "2" || elapsed < nakDelay {
		t.Fatalf("redelivery %s delivered %s after %v, want %s delivered 2 after >= %v",
			again.UUID, again.Metadata.Get(watermillbus.MetadataNumDelivered), elapsed, msg.UUID, nakDelay)
	}
	again.Ack()

	stream, err := conn.JetStream().Stream(testkit.Context(t), wmStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(testkit.Context(t)); err != nil || info.State.Msgs != 4 {
		t.Fatalf("stream holds %v messages (err %v), want 4: only the duplicate is not stored", info.State.Msgs, err)
	}
	out, err = sub.Subscribe(testkit.Context(t), "wmtest.foreign")
	if err != nil {
		t.Fatal(err)
	}
	if m := wmNext(t, out); m.UUID != "env-1" {
		t.Errorf("foreign message UUID = %q, want the Nats-Msg-Id env-1", m.UUID)
	} else {
		m.Ack()
	}
	if err := sub.Close(); err != nil { // waits for the callbacks: stable stats
		t.Fatal(err)
	}
	if s := sub.Stats(); s.Delivered != 4 {
		t.Errorf("stats = %+v, want 4 deliveries", s)
	}
}

func TestCloseEndsSubscriptions(t *testing.T) {
	srv := wmServer(t)
	conn := natstest.Connect(t, srv)
	sub := newWMSubscriber(t, conn, watermillbus.Config{})
	ctx, cancel := context.WithCancel(testkit.Context(t))
	byCtx, err := sub.Subscribe(ctx, "wmtest.a")
	if err != nil {
		t.Fatal(err)
	}
	var outs []<-chan *message.Message
	for _, topic := range []string{"wmtest.a", "wmtest.b"} {
		out, err := sub.Subscribe(testkit.Context(t), topic)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, out)
	}
	cancel()
	wmClosed(t, byCtx)

	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	for _, out := range outs {
		wmClosed(t, out)
	}
	if err := sub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := sub.Subscribe(testkit.Context(t), "wmtest.a"); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("Subscribe after Close: err = %v, want ErrClosed", err)
	}
	// Groupless consumers are deleted with their subscription.
	stream, err := conn.JetStream().Stream(testkit.Context(t), wmStream)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(testkit.Context(t))
	for name := range names.Name() {
		t.Errorf("consumer %s left behind", name)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestGroupResumesAndGetsHeldMessageBack: a group member closed
// while holding a message gives it back at once (long before AckWait), and
// the next member of the group continues from there.
func TestGroupResumesAndGetsHeldMessageBack(t *testing.T) {
	srv := wmServer(t)
	conn := natstest.Connect(t, srv)
	pub := newWMPublisher(conn)
	topic := "wmtest.jobs"
	var sent []*message.Message
	for i := range 3 {
		sent = append(sent, message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i))))
	}
	if err := pub.Publish(topic, sent...); err != nil {
		t.Fatal(err)
	}
	cfg := watermillbus.Config{ConsumerGroup: "workers", Consumer: bus.ConsumerConfig{AckWait: time.Minute}}

	first := newWMSubscriber(t, conn, cfg)
	out, err := first.Subscribe(testkit.Context(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	wmNext(t, out).Ack()
	held := wmNext(t, out) // not settled
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	wmClosed(t, out)
	select {
	case <-held.Context().Done():
	default:
		t.Error("held message's context not cancelled by Close")
	}

	second := newWMSubscriber(t, conn, cfg)
	out, err = second.Subscribe(testkit.Context(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	// Both come back at once, delivered twice: the held one and the one
	// buffered behind it (in either order: the server re-queues a
	// redelivery it could not hand to a pull request behind the others).
	want := map[string]bool{sent[1].UUID: true, sent[2].UUID: true}
	for range 2 {
		m := wmNext(t, out)
		if !want[m.UUID] || m.Metadata.Get(watermillbus.MetadataNumDelivered) != "2" {
			t.Fatalf("got %s delivered %s, want one of %v delivered 2", m.UUID, m.Metadata.Get(watermillbus.MetadataNumDelivered), want)
		}
		delete(want, m.UUID)
		m.Ack()
	}
}

func TestConfigAndPublishErrors(t *testing.T) {
	srv := wmServer(t)
	conn := natstest.Connect(t, srv)
	bad := map[string]watermillbus.Config{
		"no stream":      {},
		"durable set":    {Stream: wmStream, Consumer: bus.ConsumerConfig{Durable: "x"}},
		"filter set":     {Stream: wmStream, Consumer: bus.ConsumerConfig{FilterSubjects: []string{"wmtest.a"}}},
		"group name":     {Stream: wmStream, ConsumerGroup: "a.b"},
		"group too long": {Stream: wmStream, ConsumerGroup: fmt.Sprintf("%048d", 0)},
		"negative delay": {Stream: wmStream, NakDelay: -time.Second},
		"ack wait":       {Stream: wmStream, Consumer: bus.ConsumerConfig{AckWait: time.Millisecond}},
	}
	for name, cfg := range bad {
		if _, err := watermillbus.NewSubscriber(conn, cfg); err == nil {
			t.Errorf("%s: NewSubscriber succeeded", name)
		}
	}
	if _, err := watermillbus.NewSubscriber(conn, watermillbus.Config{Stream: wmStream, ConsumerGroup: "a.b"}); !errors.Is(err, bus.ErrInvalidName) {
		t.Errorf("bad group: err = %v, want ErrInvalidName", err)
	}

	sub := newWMSubscriber(t, conn, watermillbus.Config{})
	if _, err := sub.Subscribe(testkit.Context(t), "outside.stream"); err == nil {
		t.Error("Subscribe to a topic outside the stream succeeded")
	}

	raw := bus.NewPublisher(conn.JetStream())
	pub := watermillbus.NewPublisher(raw)
	good := message.NewMessage(watermill.NewUUID(), nil)
	badKey := message.NewMessage(watermill.NewUUID(), nil)
	badKey.Metadata.Set("has space", "v")
	if err := pub.Publish("wmtest.a", good, badKey); !errors.Is(err, watermillbus.ErrInvalidMetadata) {
		t.Fatalf("err = %v, want ErrInvalidMetadata", err)
	}
	if err := pub.Publish("outside.stream", good); !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("publish outside any stream: err = %v, want ErrNoStreamResponse", err)
	} else if !containsAll(err.Error(), good.UUID) {
		t.Fatalf("error %q does not name the message", err)
	}
	stream, _ := conn.JetStream().Stream(testkit.Context(t), wmStream)
	if info, err := stream.Info(testkit.Context(t)); err != nil || info.State.Msgs != 0 {
		t.Fatalf("stream holds %d messages (err %v): a batch with invalid metadata must publish nothing", info.State.Msgs, err)
	}
	_ = pub.Close()
	if err := pub.Publish("wmtest.a", good); !errors.Is(err, bus.ErrClosed) {
		t.Fatalf("after Close: err = %v, want ErrClosed", err)
	}
	// Closing the watermill face leaves the bus.Publisher it sends through
	// open; closing that one closes every face.
	if _, err := raw.PublishMsg(testkit.Context(t), &nats.Msg{Subject: "wmtest.a"}); err != nil {
		t.Fatalf("bus.Publisher after the watermill face's Close: %v", err)
	}
	_ = raw.Close()
	if err := watermillbus.NewPublisher(raw).Publish("wmtest.a", good); !errors.Is(err, bus.ErrClosed) || !containsAll(err.Error(), good.UUID) {
		t.Fatalf("through a closed bus.Publisher: err = %v, want ErrClosed naming the message", err)
	}
}

func newWMPublisher(conn *bus.Conn) *watermillbus.Publisher {
	return watermillbus.NewPublisher(bus.NewPublisher(conn.JetStream()))
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestRouter runs a watermill Router on the bus: every message is
// handled, and a handler error redelivers the message.
func TestRouter(t *testing.T) {
	srv := wmServer(t)
	conn := natstest.Connect(t, srv)
	pub := newWMPublisher(conn)
	sub := newWMSubscriber(t, conn, watermillbus.Config{ConsumerGroup: "router"})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var (
		mu       sync.Mutex
		handled  = map[string]int{} // payload -> successful handlings
		attempts = map[string]int{}
		all      = make(chan struct{})
	)
	router.AddConsumerHandler("count", "wmtest.router", sub, func(m *message.Message) error {
		mu.Lock()
		defer mu.Unlock()
		p := string(m.Payload)
		attempts[p]++
		if p == "7" && attempts[p] == 1 {
			return errors.New("transient failure")
		}
		handled[p]++
		if len(handled) == n {
			select {
			case <-all:
			default:
				close(all)
			}
		}
		return nil
	})
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	<-router.Running()

	var msgs []*message.Message
	for i := range n {
		msgs = append(msgs, message.NewMessage(watermill.NewUUID(), []byte(strconv.Itoa(i))))
	}
	if err := pub.Publish("wmtest.router", msgs...); err != nil {
		t.Fatal(err)
	}
	select {
	case <-all:
	case <-time.After(20 * time.Second):
		t.Fatal("router did not handle every message within 20s")
	}
	if err := router.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-runErr; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts["7"] != 2 {
		t.Errorf("failed message attempted %d times, want 2", attempts["7"])
	}
	for p, c := range handled {
		if c != 1 {
			t.Errorf("message %s handled %d times", p, c)
		}
	}
}

// TestHeartbeatsKeepSlowMessage: a handler holding its message
// three times AckWait keeps it: heartbeats stop the server from
// redelivering it to the idle second member of the group, so it is
// delivered exactly once.
func TestHeartbeatsKeepSlowMessage(t *testing.T) {
	srv := wmServer(t)
	conn := natstest.Connect(t, srv)
	pub := newWMPublisher(conn)
	const ackWait = time.Second
	sub := newWMSubscriber(t, conn, watermillbus.Config{
		ConsumerGroup: "slow",
		Consumer:      bus.ConsumerConfig{AckWait: ackWait, Prefetch: 1},
	})
	topic := "wmtest.slow"
	var outs [2]<-chan *message.Message
	for i := range outs {
		out, err := sub.Subscribe(testkit.Context(t), topic)
		if err != nil {
			t.Fatal(err)
		}
		outs[i] = out
	}
	if err := pub.Publish(topic, message.NewMessage(watermill.NewUUID(), []byte("slow"))); err != nil {
		t.Fatal(err)
	}
	var m *message.Message
	var idle <-chan *message.Message
	select {
	case m = <-outs[0]:
		idle = outs[1]
	case m = <-outs[1]:
		idle = outs[0]
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	// The handler's work: three ack timeouts, while the other member of
	// the group pulls and would get any redelivery.
	select {
	case again := <-idle:
		t.Fatalf("redelivered to the other member during the work (delivery %s)", again.Metadata.Get(watermillbus.MetadataNumDelivered))
	case <-time.After(3 * ackWait):
	}
	m.Ack()

	cons, err := conn.JetStream().Consumer(testkit.Context(t), wmStream, wmGroupConsumer(t, conn, "slow"))
	if err != nil {
		t.Fatal(err)
	}
	info := waitAckFloor(t, cons, 1)
	if info.Delivered.Consumer != 1 || info.NumRedelivered != 0 {
		t.Fatalf("consumer made %d deliveries (%d redelivered), want exactly 1", info.Delivered.Consumer, info.NumRedelivered)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	// A third of AckWait apart: 8 or 9 within 3s; allow for a slow machine.
	if st := sub.Stats(); st.Delivered != 1 || st.Heartbeats < 5 {
		t.Fatalf("stats = %+v, want 1 delivery and at least 5 heartbeats", st)
	}
}

// TestNakDelayFromMetadata: a message nacked with
// MetadataNakDelay comes back after that delay, not after the (much
// longer) configured NakDelay; the key is neither published as a header
// nor taken from one.
func TestNakDelayFromMetadata(t *testing.T) {
	srv := wmServer(t)
	conn := natstest.Connect(t, srv)
	raw := bus.NewPublisher(conn.JetStream())
	pub := watermillbus.NewPublisher(raw)
	sub := newWMSubscriber(t, conn, watermillbus.Config{NakDelay: time.Minute})
	topic := "wmtest.nakdelay"
	out, err := sub.Subscribe(testkit.Context(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage(watermill.NewUUID(), []byte("again"))
	msg.Metadata.Set(watermillbus.MetadataNakDelay, "1ms") // must not travel as a header
	if err := pub.Publish(topic, msg); err != nil {
		t.Fatal(err)
	}
	// A header of that name from outside watermill is ignored too.
	foreign := &nats.Msg{Subject: topic, Header: nats.Header{watermillbus.MetadataNakDelay: []string{"1ms"}}}
	if _, err := raw.PublishMsg(testkit.Context(t), foreign); err != nil {
		t.Fatal(err)
	}

	got := wmNext(t, out)
	if v, ok := got.Metadata[watermillbus.MetadataNakDelay]; ok {
		t.Fatalf("received metadata %s = %q: it must not travel as a header", watermillbus.MetadataNakDelay, v)
	}
	const asked = 400 * time.Millisecond
	got.Metadata.Set(watermillbus.MetadataNakDelay, asked.String())
	nacked := time.Now()
	got.Nack()

	second := wmNext(t, out)
	if _, ok := second.Metadata[watermillbus.MetadataNakDelay]; ok || second.Metadata.Get(watermillbus.MetadataNumDelivered) != "1" {
		t.Fatalf("second message: metadata %v, want the foreign message, first delivery, without %s", second.Metadata, watermillbus.MetadataNakDelay)
	}
	second.Ack()

	again := wmNext(t, out)
	elapsed := time.Since(nacked)
	if again.UUID != msg.UUID || again.Metadata.Get(watermillbus.MetadataNumDelivered) != "2" {
		t.Fatalf("got %s delivery %s, want %s delivery 2", again.UUID, again.Metadata.Get(watermillbus.MetadataNumDelivered), msg.UUID)
	}
	t.Logf("asked for %v, redelivered after %v (NakDelay %v)", asked, elapsed, time.Minute)
	if elapsed < asked || elapsed > 10*time.Second {
		t.Fatalf("redelivered after %v, want >= %v and far below the configured NakDelay of 1m", elapsed, asked)
	}
	again.Ack()
}

// wmGroupConsumer returns the name of the durable consumer of group (the
// stream's only one of that group).
func wmGroupConsumer(t *testing.T, conn *bus.Conn, group string) string {
	t.Helper()
	stream, err := conn.JetStream().Stream(testkit.Context(t), wmStream)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(testkit.Context(t))
	for name := range names.Name() {
		if strings.HasPrefix(name, group+"_") {
			return name
		}
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("no consumer of group %s", group)
	return ""
}

// waitAckFloor polls cons until its ack floor reaches stream sequence seq
// (acks are not confirmed, so they land a moment later), up to 10s.
func waitAckFloor(t *testing.T, cons jetstream.Consumer, seq uint64) *jetstream.ConsumerInfo {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(testkit.Context(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream >= seq {
			return info
		}
		if time.Now().After(deadline) {
			t.Fatalf("ack floor %d, want %d within 10s", info.AckFloor.Stream, seq)
		}
		<-time.After(20 * time.Millisecond)
	}
}
