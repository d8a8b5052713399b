package watermillmw_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/runtime/watermillmw"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	testStream = "WMMW"
	testGroup  = "mw"
	testAgent  = "billing"
	testTopic  = "wmmw.>"
)

var topo = bus.Topology{Memory: true}

// call is one handler call, as the recorder saw it.
type call struct {
	payload string
	n       int // delivery count from the subscriber's metadata
	at      time.Time
}

// recorder records the calls of a test handler and signals each one.
type recorder struct {
	mu    sync.Mutex
	calls []call
	each  chan call
}

func newRecorder() *recorder { return &recorder{each: make(chan call, 1000)} }

func (r *recorder) record(msg *message.Message) call {
	n, _ := strconv.Atoi(msg.Metadata.Get(watermillbus.MetadataNumDelivered))
	c := call{payload: string(msg.Payload), n: n, at: time.Now()}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	r.each <- c
	return c
}

func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// next waits for the next call, up to 20s.
func (r *recorder) next(t *testing.T) call {
	t.Helper()
	select {
	case c := <-r.each:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no handler call within 20s")
		return call{}
	}
}

// harness is a watermill Router on the jetagent bus: an embedded server,
// the jetagent topology (for the DLQ), a stream for the test topics, a
// watermillbus.Subscriber and the middleware under test.
type harness struct {
	conn *bus.Conn
	js   jetstream.JetStream
	pub  *bus.Publisher // publishes the dead letters
	// wmPub publishes the test messages, through pub.
	wmPub *watermillbus.Publisher
	sub   *watermillbus.Subscriber
	mw    *watermillmw.Middleware
}

// prepare starts the server, provisions, creates the test stream and the
// middleware, without running a Router yet.
func prepare(t *testing.T, cfg watermillmw.Config) *harness {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	js := conn.JetStream()
	if err := bus.Provision(testkit.Context(t), js, topo); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(testkit.Context(t), jetstream.StreamConfig{
		Name: testStream, Subjects: []string{"wmmw.>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	h := &harness{conn: conn, js: js, pub: bus.NewPublisher(js)}
	h.wmPub = watermillbus.NewPublisher(h.pub)
	if cfg.Agent == "" {
		cfg.Agent = testAgent
	}
	cfg.Publisher = h.pub
	cfg.Topology = topo
	mw, err := watermillmw.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.mw = mw
	return h
}

// run starts a Router with the middleware and handler on testTopic, read
// by a watermillbus.Subscriber of testGroup with consumer settings cc; the
// Router is closed when the test ends.
func (h *harness) run(t *testing.T, cc bus.ConsumerConfig, handler message.NoPublishHandlerFunc) {
	h.runN(t, cc, 1, handler)
}

// runN is run with n Router handlers: n subscriptions of the group, each
// with one message in hand at a time.
func (h *harness) runN(t *testing.T, cc bus.ConsumerConfig, n int, handler message.NoPublishHandlerFunc) {
	t.Helper()
	sub, err := watermillbus.NewSubscriber(h.conn, watermillbus.Config{Stream: testStream, ConsumerGroup: testGroup, Consumer: cc})
	if err != nil {
		t.Fatal(err)
	}
	h.sub = sub
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	router.AddMiddleware(h.mw.Middleware)
	for i := range n {
		router.AddConsumerHandler("test-"+strconv.Itoa(i), testTopic, sub, handler)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	t.Cleanup(func() {
		if err := router.Close(); err != nil {
			t.Errorf("router close: %v", err)
		}
		select {
		case err := <-runErr:
			if err != nil {
				t.Errorf("router run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("router did not stop within 20s")
		}
	})
	select {
	case <-router.Running():
	case <-time.After(10 * time.Second):
		t.Fatal("router not running within 10s")
	}
}

// publish publishes one message per payload on subject, in order.
func (h *harness) publish(t *testing.T, subject string, payloads ...string) []*message.Message {
	t.Helper()
	var msgs []*message.Message
	for _, p := range payloads {
		msg := message.NewMessage(watermill.NewUUID(), []byte(p))
		msg.Metadata.Set("tenant", "acme")
		msgs = append(msgs, msg)
	}
	if err := h.wmPub.Publish(subject, msgs...); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// consumerInfo returns the info of the test group's consumer.
func (h *harness) consumerInfo(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	stream, err := h.js.Stream(testkit.Context(t), testStream)
	if err != nil {
		t.Fatal(err)
	}
	names := stream.ConsumerNames(testkit.Context(t))
	var name string
	for n := range names.Name() {
		name = n
	}
	if err := names.Err(); err != nil || name == "" {
		t.Fatalf("no consumer (err %v)", err)
	}
	cons, err := stream.Consumer(testkit.Context(t), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// waitSettled waits until the consumer's ack floor reaches stream
// sequence seq: every message up to it is acknowledged, and none of them
// can be delivered again.
func (h *harness) waitSettled(t *testing.T, seq uint64) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	testkit.WaitFor(t, "ack floor "+strconv.FormatUint(seq, 10), func() bool {
		info = h.consumerInfo(t)
		return info.AckFloor.Stream >= seq
	})
	return info
}

// streamMsgs returns how many messages stream holds.
func (h *harness) streamMsgs(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := h.js.Stream(testkit.Context(t), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// deadLetters waits until the DLQ stream holds want messages and returns
// them parsed, with their subjects, in order.
func (h *harness) deadLetters(t *testing.T, want uint64) ([]*dlq.Record, []string) {
	t.Helper()
	testkit.WaitFor(t, "dead letters", func() bool { return h.streamMsgs(t, topo.DLQStream()) >= want })
	if got := h.streamMsgs(t, topo.DLQStream()); got != want {
		t.Fatalf("DLQ holds %d messages, want %d", got, want)
	}
	s, err := h.js.Stream(testkit.Context(t), topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	var recs []*dlq.Record
	var subjects []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		raw, err := s.GetMsg(testkit.Context(t), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		rec, err := dlq.Parse(raw.Data, raw.Header)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		recs = append(recs, rec)
		subjects = append(subjects, raw.Subject)
	}
	return recs, subjects
}
