package watermillbus

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// setupTimeout bounds the consumer creation in Subscribe when its ctx
	// has no earlier deadline.
	setupTimeout = 10 * time.Second
	// closeTimeout bounds how long Close waits for subscriptions.
	closeTimeout = 30 * time.Second
	// ephemeralInactiveThreshold lets the server remove the consumer of a
	// groupless subscription whose process died without closing it.
	ephemeralInactiveThreshold = 5 * time.Minute
	// maxGroupLen leaves room for "_" and the 16-hex topic hash in a
	// consumer name of at most 64 bytes.
	maxGroupLen = 64 - 17
)

var _ message.Subscriber = (*Subscriber)(nil)

// Config configures a [Subscriber]. Stream is required; every other zero
// value means the default named on the field.
type Config struct {
	// Stream is the stream that captures the subscribed topics' subjects.
	// Required.
	Stream string

	// ConsumerGroup names the group: every subscriber of one group, in any
	// process, shares one durable consumer per topic, named
	// ConsumerGroup + "_" + a hash of the topic, and so shares its messages;
	// each group receives every message the stream keeps (limits
	// retention). The consumer outlives the subscribers: a group resumes
	// where it stopped (delete the consumer to retire the group). Letters,
	// digits, '-' and '_', at most 47 bytes.
	//
	// Zero: every Subscribe call gets a consumer of its own that starts at
	// the stream's first message (a new subscriber receives old messages)
	// and is deleted when the subscription ends, or by the server 5 minutes
	// after a crashed process stopped pulling.
	ConsumerGroup string

	// Consumer sets AckWait, MaxDeliver, BackOff, MaxAckPending, Prefetch,
	// PullExpiry and Description, with the defaults documented on
	// [bus.ConsumerConfig]. Durable and FilterSubjects must be empty: the
	// subscriber sets them. After MaxDeliver deliveries the server stops
	// redelivering a message (and emits a MAX_DELIVERIES advisory).
	//
	// Messages are handed out in stream order, but a redelivery (Nack,
	// AckWait expiry) comes after the messages already pulled, out of
	// order. MaxAckPending 1 with NakDelay zero makes the order strict,
	// across all subscribers of a group, at one message in flight per
	// consumer.
	//
	// While a message handed out is unsettled, the subscription sends the
	// server an InProgress heartbeat for it every third of the shortest
	// ack timeout (AckWait or any BackOff step; at least every 100ms), so
	// a handler slower than AckWait keeps its message: it is not
	// redelivered to another subscriber. Messages prefetched behind it
	// get no heartbeats: when handlers (or middleware that holds messages,
	// such as runtime/watermillmw's breakers) may take longer than AckWait
	// divided by Prefetch, lower Prefetch (to 1 for slow handlers), so
	// nothing waits in the client's buffer while its AckWait runs out.
	Consumer bus.ConsumerConfig

	// NakDelay is how long the server waits before redelivering a message
	// after msg.Nack(), unless the message's [MetadataNakDelay] names its
	// own delay. Zero: redeliver at once. (BackOff applies to AckWait
	// expiries only.)
	NakDelay time.Duration

	// Logger receives subscription starts and stops (Debug) and consume
	// errors (Warn); nothing is logged per message unless it fails to
	// settle. Nil: discard.
	Logger *slog.Logger
}

// Subscriber consumes JetStream messages as watermill messages,
// implementing watermill's message.Subscriber. Each Subscribe call pulls
// from its own consumer (shared with the rest of the group when
// ConsumerGroup is set). It is safe for concurrent use.
type Subscriber struct {
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger

	// ctx is cancelled by Close, ending every subscription.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	subs   sync.WaitGroup

	// heartbeat is how often an unsettled message gets InProgress.
	heartbeat time.Duration

	delivered, consumeErrs, missedHB, badMeta, heartbeats atomic.Uint64
}

// minHeartbeat bounds how often heartbeats are sent.
const minHeartbeat = 100 * time.Millisecond

// heartbeatInterval is a third of the shortest ack timeout the server may
// apply to a delivery of c (AckWait, or a BackOff step, which replaces
// AckWait for the delivery it belongs to), and at least 100ms.
func heartbeatInterval(c bus.ConsumerConfig) time.Duration {
	wait := c.AckWait
	for _, b := range c.BackOff {
		wait = min(wait, b)
	}
	return max(wait/3, minHeartbeat)
}

// NewSubscriber returns a subscriber on conn. It checks cfg without
// contacting the server (consumers are created by Subscribe) and returns an
// error when cfg is invalid: one wrapping [bus.ErrInvalidName] for a bad
// ConsumerGroup.
func NewSubscriber(conn *bus.Conn, cfg Config) (*Subscriber, error) {
	if conn == nil {
		return nil, errors.New("watermillbus: subscriber: nil connection")
	}
	if cfg.Stream == "" {
		return nil, errors.New("watermillbus: subscriber: Stream is required")
	}
	if cfg.Consumer.Durable != "" || len(cfg.Consumer.FilterSubjects) > 0 {
		return nil, errors.New("watermillbus: subscriber: Consumer.Durable and Consumer.FilterSubjects are set by the subscriber and must be empty")
	}
	if cfg.ConsumerGroup != "" {
		if err := bus.ValidateName(cfg.ConsumerGroup); err != nil {
			return nil, fmt.Errorf("watermillbus: consumer group: %w", err)
		}
		if len(cfg.ConsumerGroup) > maxGroupLen {
			return nil, fmt.Errorf("%w: consumer group %q is longer than %d bytes", bus.ErrInvalidName, cfg.ConsumerGroup, maxGroupLen)
		}
	}
	if cfg.NakDelay < 0 {
		return nil, fmt.Errorf("watermillbus: subscriber: NakDelay %v is negative", cfg.NakDelay)
	}
	cfg.Consumer = cfg.Consumer.WithDefaults()
	probe := cfg.Consumer
	probe.Durable, probe.FilterSubjects = "watermill", []string{"probe"}
	if err := probe.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Subscriber{
		js: conn.JetStream(), cfg: cfg, log: logger, ctx: ctx, cancel: cancel,
		heartbeat: heartbeatInterval(cfg.Consumer),
	}, nil
}

// Subscribe creates (or, in a group, joins) the consumer of topic and
// returns the channel its messages arrive on, implementing watermill's
// message.Subscriber. topic is a subject, wildcards allowed, inside the
// stream's subjects.
//
// Each message has the subscription's ctx (cancelled once the message is
// settled), its UUID from Watermill-Uuid (or, for messages published
// outside watermill, Nats-Msg-Id; "" when neither is set), its other
// headers as metadata (the first value of each) plus the jetagent-*
// delivery keys ([MetadataNumDelivered], [MetadataStreamSeq],
// [MetadataStream], [MetadataSubject], [MetadataPublished]). The next
// message is sent only after the previous one is acked or nacked; until
// then the subscription keeps it alive on the server with InProgress
// heartbeats (see [Config].Consumer). Ack acknowledges it on the
// server; Nack asks for redelivery after the delay in the message's
// [MetadataNakDelay], or else after NakDelay.
// When ctx ends or Close is called, the subscription stops pulling and
// gives back, for immediate redelivery to the rest of the group, the
// message in hand (if unsettled) and those buffered. The channel is closed
// then, or when the consumer is gone (deleted, connection closed).
//
// It returns [bus.ErrClosed] after Close, an error when topic is not a valid
// subject or overlaps none of the stream's subjects, and a wrapped server
// error (jetstream.ErrStreamNotFound, ...) when the consumer cannot be
// created.
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("watermillbus: subscribe %s: %w", topic, bus.ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()
	out, err := s.subscribe(ctx, topic)
	if err != nil {
		s.subs.Done()
		return nil, fmt.Errorf("watermillbus: subscribe %s: %w", topic, err)
	}
	return out, nil
}

func (s *Subscriber) subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if !server.IsValidSubject(topic) {
		return nil, errors.New("topic is not a valid NATS subject")
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, setupTimeout)
	defer cancelSetup()
	stream, err := s.js.Stream(setupCtx, s.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", s.cfg.Stream, err)
	}
	// The server accepts a filter outside the stream's subjects; such a
	// subscription would wait forever. (A stream fed only by sources has
	// no subjects of its own: anything goes.)
	subjects := stream.CachedInfo().Config.Subjects
	if len(subjects) > 0 && !slices.ContainsFunc(subjects, func(subj string) bool { return server.SubjectsCollide(subj, topic) }) {
		return nil, fmt.Errorf("topic is outside the subjects %v of stream %s", subjects, s.cfg.Stream)
	}
	cc := s.consumerConfig(topic)
	var cons jetstream.Consumer
	if cc.Durable != "" {
		cons, err = s.js.CreateOrUpdateConsumer(setupCtx, s.cfg.Stream, cc)
	} else {
		cons, err = s.js.CreateConsumer(setupCtx, s.cfg.Stream, cc)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer on stream %s: %w", s.cfg.Stream, err)
	}
	sub := &subscription{s: s, name: cons.CachedInfo().Name, out: make(chan *message.Message), beat: time.NewTicker(s.heartbeat)}
	sub.beat.Stop() // started for each message handed out
	sub.ctx, sub.cancel = context.WithCancel(ctx)
	stopOnClose := context.AfterFunc(s.ctx, sub.cancel)
	// The callback blocks until watermill settles the message it handed
	// out: that is the one-at-a-time contract, with no goroutine per
	// message, and Consume pulls nothing beyond Prefetch while it blocks
	// (its heartbeat timer is paused meanwhile, so no false alarms).
	consumption, err := cons.Consume(sub.handle,
		jetstream.PullMaxMessages(s.cfg.Consumer.Prefetch),
		jetstream.PullExpiry(s.cfg.Consumer.PullExpiry),
		jetstream.ConsumeErrHandler(sub.onConsumeError),
	)
	if err != nil {
		stopOnClose()
		sub.cancel()
		sub.deleteEphemeral(cc)
		return nil, fmt.Errorf("consume %s: %w", sub.name, err)
	}
	s.log.Debug("watermill subscription started", "topic", topic, "consumer", sub.name)
	go sub.run(consumption, cc, stopOnClose)
	return sub.out, nil
}

// consumerConfig returns the consumer of topic: the group's durable, or an
// ephemeral one of this subscription.
func (s *Subscriber) consumerConfig(topic string) jetstream.ConsumerConfig {
	sum := sha256.Sum256([]byte(topic))
	topicHash := hex.EncodeToString(sum[:8])
	c := s.cfg.Consumer
	c.FilterSubjects = []string{topic}
	if s.cfg.ConsumerGroup != "" {
		c.Durable = s.cfg.ConsumerGroup + "_" + topicHash
		if c.Description == "" {
			c.Description = "watermill consumer group " + s.cfg.ConsumerGroup + " of topic " + topic
		}
		return c.JetStreamConfig()
	}
	if c.Description == "" {
		c.Description = "watermill subscription of topic " + topic
	}
	cc := c.JetStreamConfig()
	cc.Durable, cc.Name = "", "wm_"+topicHash+"_"+rand.Text()
	cc.InactiveThreshold = ephemeralInactiveThreshold
	return cc
}

// Stats counts what happened inside a [Subscriber].
type Stats struct {
	// SubscriberStats holds the counters shared with [bus.Subscriber]; its
	// Delivered counts messages sent on output channels.
	bus.SubscriberStats
	// Heartbeats counts InProgress heartbeats sent (and accepted by the
	// connection) for messages handed out and not yet settled.
	Heartbeats uint64
}

// Stats returns the counters of all subscriptions of s.
func (s *Subscriber) Stats() Stats {
	return Stats{
		SubscriberStats: bus.SubscriberStats{
			Delivered:        s.delivered.Load(),
			ConsumeErrors:    s.consumeErrs.Load(),
			MissedHeartbeats: s.missedHB.Load(),
			BadMetadata:      s.badMeta.Load(),
		},
		Heartbeats: s.heartbeats.Load(),
	}
}

// Close ends every subscription (messages in hand are given back for
// immediate redelivery), closes their output channels and waits for them,
// up to 30s. Later Subscribe calls return [bus.ErrClosed]. It does not close
// the connection. It is safe to call more than once; it returns an error
// only when subscriptions are still running after 30s.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.subs.Wait()
		close(done)
	}()
	timer := time.NewTimer(closeTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
		return fmt.Errorf("watermillbus: subscriber close: subscriptions still running after %v", closeTimeout)
	}
}
