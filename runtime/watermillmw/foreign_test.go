package watermillmw_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime/watermillmw"
)

// TestDispositionsOfForeignMessages calls the middleware directly with
// messages that carry no jetagent metadata (delivery 1, no subject): each
// outcome gets its disposition.
func TestDispositionsOfForeignMessages(t *testing.T) {
	backoff := resilience.Backoff{Base: time.Second, Max: 10 * time.Second}
	h := prepare(t, watermillmw.Config{Backoff: backoff})
	produced := message.NewMessage(watermill.NewUUID(), []byte("invoice"))
	cases := []struct {
		name      string
		err       error
		wantErr   bool
		wantDelay func(time.Duration) bool
	}{
		{"transient", errors.New("timeout talking to the bank"), true,
			func(d time.Duration) bool { return d >= backoff.Ceiling(1)/2 && d <= backoff.Ceiling(1) }},
		{"retry-after", resilience.RetryAfter(7*time.Second, errors.New("429")), true,
			func(d time.Duration) bool { return d == 7*time.Second }},
		{"timeout", resilience.ErrTimeout, true,
			func(d time.Duration) bool { return d >= backoff.Ceiling(1)/2 && d <= backoff.Ceiling(1) }},
		{"success", nil, false, nil},
		{"permanent", resilience.Permanent(errors.New("unknown sku")), false, nil},
	}
	for _, c := range cases {
		msg := message.NewMessage(watermill.NewUUID(), []byte(c.name))
		called := 0
		out, err := h.mw.Middleware(func(*message.Message) ([]*message.Message, error) {
			called++
			if c.err != nil {
				return nil, c.err
			}
			return []*message.Message{produced}, nil
		})(msg)
		if called != 1 || (err != nil) != c.wantErr {
			t.Errorf("%s: called %d times, err %v", c.name, called, err)
			continue
		}
		v, set := msg.Metadata[watermillbus.MetadataNakDelay]
		if c.wantDelay == nil {
			if set {
				t.Errorf("%s: nak delay %q set", c.name, v)
			}
			continue
		}
		if d, perr := time.ParseDuration(v); perr != nil || !c.wantDelay(d) {
			t.Errorf("%s: nak delay %q (%v)", c.name, v, perr)
		}
		if !errors.Is(err, c.err) {
			t.Errorf("%s: returned %v, want the handler's error", c.name, err)
		}
		if c.name == "success" && (len(out) != 1 || out[0] != produced) {
			t.Errorf("success: returned %v, want the handler's messages", out)
		}
	}
	recs, subjects := h.deadLetters(t, 1)
	r := recs[0]
	if subjects[0] != "jetagent.dlq.billing.watermill" || r.Subject != "" || r.Stream != "" || r.Sequence != 0 ||
		r.Deliveries != 1 || r.Reason != dlq.ReasonPermanent || string(r.Data) != "permanent" {
		t.Errorf("dead letter on %s: %+v", subjects[0], r)
	}
	if id := r.Header.Get(bus.HeaderMsgID); id != "dlq-watermill-billing-"+r.Header.Get(watermillbus.HeaderUUID) {
		t.Errorf("Nats-Msg-Id = %q, want one derived from the UUID", id)
	}
	if st := h.mw.Stats(); st.Succeeded != 1 || st.Retried != 3 || st.DeadLettered != 1 {
		t.Errorf("stats = %+v", st)
	}
}

// TestForeignSubscriberInRouter: on a Router fed by another pub/sub
// (watermill's gochannel), the subject is the subscribed topic.
func TestForeignSubscriberInRouter(t *testing.T) {
	h := prepare(t, watermillmw.Config{})
	gc := gochannel.NewGoChannel(gochannel.Config{}, watermill.NopLogger{})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 10 * time.Second}, watermill.NopLogger{})
	if err != nil {
		t.Fatal(err)
	}
	router.AddMiddleware(h.mw.Middleware)
	calls := make(chan struct{}, 10)
	router.AddConsumerHandler("foreign", "orders.created", gc, func(*message.Message) error {
		calls <- struct{}{}
		return resilience.Permanent(errors.New("unknown sku"))
	})
	runErr := make(chan error, 1)
	go func() { runErr <- router.Run(context.Background()) }()
	defer func() {
		if err := router.Close(); err != nil {
			t.Error(err)
		}
		if err := <-runErr; err != nil {
			t.Error(err)
		}
	}()
	<-router.Running()
	if err := gc.Publish("orders.created", message.NewMessage(watermill.NewUUID(), []byte("bad"))); err != nil {
		t.Fatal(err)
	}
	recs, subjects := h.deadLetters(t, 1)
	if subjects[0] != "jetagent.dlq.billing.orders.created" || recs[0].Subject != "orders.created" || recs[0].Deliveries != 1 {
		t.Errorf("dead letter on %s: %+v", subjects[0], recs[0])
	}
	if len(calls) != 1 {
		t.Errorf("handler called %d times, want 1", len(calls))
	}
}

// TestHeldMessageGivenBackWhenContextEnds: a message held by an open
// breaker whose context ends is given back (nak delay 0) without calling
// the handler.
func TestHeldMessageGivenBackWhenContextEnds(t *testing.T) {
	h := prepare(t, watermillmw.Config{Breaker: resilience.BreakerSettings{Threshold: 1, OpenTimeout: time.Hour}})
	fail := h.mw.Middleware(func(*message.Message) ([]*message.Message, error) {
		return nil, errors.New("downstream unavailable")
	})
	if _, err := fail(message.NewMessage(watermill.NewUUID(), nil)); err == nil {
		t.Fatal("failure not returned")
	}
	if st := h.mw.Breakers().Get("watermill").State(); st != resilience.StateOpen {
		t.Fatalf("breaker %v, want open", st)
	}

	msg := message.NewMessage(watermill.NewUUID(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	msg.SetContext(ctx)
	held := make(chan error, 1)
	called := false
	go func() {
		_, err := h.mw.Middleware(func(*message.Message) ([]*message.Message, error) {
			called = true
			return nil, nil
		})(msg)
		held <- err
	}()
	testkit.WaitFor(t, "the message to be held", func() bool { return h.mw.Stats().Holding == 1 })
	cancel()
	select {
	case err := <-held:
		if !errors.Is(err, context.Canceled) || called {
			t.Fatalf("err = %v, handler called %v: want context.Canceled, not called", err, called)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held message not given back within 10s of its context ending")
	}
	if v := msg.Metadata.Get(watermillbus.MetadataNakDelay); v != "0s" {
		t.Errorf("nak delay %q, want 0s (redeliver at once)", v)
	}
	if st := h.mw.Stats(); st.Held != 1 || st.Holding != 0 || st.Returned != 1 {
		t.Errorf("stats = %+v, want 1 held, 1 returned", st)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	pub := &bus.Publisher{}
	good := watermillmw.Config{Agent: "billing", Publisher: pub}
	if _, err := watermillmw.New(good); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	bad := map[string]func(*watermillmw.Config){
		"no agent":          func(c *watermillmw.Config) { c.Agent = "" },
		"agent with dot":    func(c *watermillmw.Config) { c.Agent = "bill.ing" },
		"no publisher":      func(c *watermillmw.Config) { c.Publisher = nil },
		"bad prefix":        func(c *watermillmw.Config) { c.Topology.Prefix = "a b" },
		"negative attempts": func(c *watermillmw.Config) { c.MaxAttempts = -1 },
		"negative backoff":  func(c *watermillmw.Config) { c.Backoff.Base = -time.Second },
		"negative breaker":  func(c *watermillmw.Config) { c.Breaker.Threshold = -1 },
		"empty rule":        func(c *watermillmw.Config) { c.BreakerRules = []resilience.BreakerRule{{}} },
		"negative rule": func(c *watermillmw.Config) {
			c.BreakerRules = []resilience.BreakerRule{{Pattern: "orders.>", Settings: resilience.BreakerSettings{OpenTimeout: -1}}}
		},
	}
	for name, mutate := range bad {
		cfg := good
		mutate(&cfg)
		if _, err := watermillmw.New(cfg); !errors.Is(err, watermillmw.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
	}
	cfg := good
	cfg.Agent = "bill.ing"
	if _, err := watermillmw.New(cfg); !errors.Is(err, bus.ErrInvalidName) {
		t.Errorf("bad agent: err = %v, want ErrInvalidName too", err)
	}
}

// timeout does what watermill's middleware.Timeout does (v1.5.1: a
// deadline on the message's context, cancelled when the handler returns);
// importing it would add a module to go.sum for one test.
func timeout(d time.Duration) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			ctx, cancel := context.WithTimeout(msg.Context(), d)
			defer cancel()
			msg.SetContext(ctx)
			return h(msg)
		}
	}
}

// TestInnerTimeoutMiddleware: watermill's middleware.Timeout inside this
// one cancels the context it set when it returns; the dead letter is still
// published (with the message's own context), and a handler stopped by the
// timeout is retried, not given back.
func TestInnerTimeoutMiddleware(t *testing.T) {
	h := prepare(t, watermillmw.Config{})
	handler := h.mw.Middleware(timeout(50 * time.Millisecond)(func(msg *message.Message) ([]*message.Message, error) {
		if string(msg.Payload) == "slow" {
			<-msg.Context().Done()
			return nil, msg.Context().Err()
		}
		return nil, resilience.Permanent(errors.New("unknown sku"))
	}))
	bad := message.NewMessage(watermill.NewUUID(), []byte("bad"))
	if _, err := handler(bad); err != nil {
		t.Fatalf("permanent failure: err = %v, want nil after the dead letter is stored", err)
	}
	if bad.Context().Err() != nil {
		t.Error("the message's own context is not restored")
	}
	h.deadLetters(t, 1)

	slow := message.NewMessage(watermill.NewUUID(), []byte("slow"))
	if _, err := handler(slow); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed out attempt: err = %v, want DeadlineExceeded", err)
	}
	if v := slow.Metadata.Get(watermillbus.MetadataNakDelay); v == "" || v == "0s" {
		t.Errorf("nak delay %q, want the backoff delay", v)
	}
	if st := h.mw.Stats(); st.DeadLettered != 1 || st.Retried != 1 || st.Returned != 0 {
		t.Errorf("stats = %+v", st)
	}
}
