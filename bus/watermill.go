package bus

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/internal/natsheader"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// HeaderWatermillUUID carries a watermill message's UUID; the
// [WatermillSubscriber] restores the UUID from it.
const HeaderWatermillUUID = "Watermill-Uuid"

// Metadata keys the [WatermillSubscriber] sets on every message it hands
// out, describing that one delivery. [Publisher.Publish] does not send them
// (nor [MetadataNakDelay]) as headers, and the subscriber ignores headers
// of these names, so a received message can be re-published as it is.
const (
	// MetadataNumDelivered is the JetStream delivery count, "1" on the first
	// delivery; a Nack'ed message comes back with it incremented.
	MetadataNumDelivered = "jetagent-num-delivered"
	// MetadataStreamSeq is the message's sequence in its stream, stable
	// across redeliveries.
	MetadataStreamSeq = "jetagent-stream-seq"
	// MetadataStream is the name of the stream the message is stored in;
	// with MetadataStreamSeq it identifies the message.
	MetadataStream = "jetagent-stream"
	// MetadataSubject is the subject the message was published on; it
	// differs from the topic when the topic is a wildcard such as "orders.>".
	MetadataSubject = "jetagent-subject"
	// MetadataPublished is when the server stored the message, in RFC 3339
	// with nanoseconds (time.RFC3339Nano), UTC.
	MetadataPublished = "jetagent-published"
)

// MetadataNakDelay is the metadata key a handler (or middleware) sets on a
// message it is about to Nack to choose that message's redelivery delay: a
// Go duration string (time.ParseDuration), such as "1.5s". When the
// [WatermillSubscriber] sees the Nack it reads the key and asks the server
// for redelivery after that delay (NakWithDelay), instead of after
// [WatermillConfig].NakDelay; "0s" redelivers at once. A value that does
// not parse, or is negative, is ignored (logged at Warn) and NakDelay
// applies. The key is read only at Nack time: set it before calling Nack
// (the watermill Router nacks after the handler returned an error, so a
// middleware sets it before returning). It is never sent as a header.
const MetadataNakDelay = "jetagent-nak-delay"

// isDeliveryKey reports whether k is a metadata key of the subscriber's,
// never copied from or to headers.
func isDeliveryKey(k string) bool {
	switch k {
	case MetadataNumDelivered, MetadataStreamSeq, MetadataStream, MetadataSubject, MetadataPublished, MetadataNakDelay:
		return true
	}
	return false
}

// ErrInvalidMetadata is returned by [Publisher.Publish] when a metadata key
// cannot be a NATS header name (empty, or with characters other than
// printable ASCII without any of `"(),/:;<=>?@[\]{}`).
var ErrInvalidMetadata = errors.New("bus: metadata key is not a valid NATS header name")

var (
	_ message.Publisher  = (*Publisher)(nil)
	_ message.Subscriber = (*WatermillSubscriber)(nil)
)

const (
	// watermillPublishTimeout bounds how long Publish waits for the
	// acknowledgements (watermill's Publish takes no context).
	watermillPublishTimeout = 30 * time.Second
	// watermillSetupTimeout bounds the consumer creation in Subscribe when
	// its ctx has no earlier deadline.
	watermillSetupTimeout = 10 * time.Second
	// watermillCloseTimeout bounds how long Close waits for subscriptions.
	watermillCloseTimeout = 30 * time.Second
	// ephemeralInactiveThreshold lets the server remove the consumer of a
	// groupless subscription whose process died without closing it.
	ephemeralInactiveThreshold = 5 * time.Minute
	// maxGroupLen leaves room for "_" and the 16-hex topic hash in a
	// consumer name of at most 64 bytes.
	maxGroupLen = 64 - 17
)

// Publish publishes messages to topic (a NATS subject captured by a
// stream), implementing watermill's message.Publisher. Each message becomes
// one NATS message: the payload is the body, each metadata entry a header
// (except the jetagent-* delivery keys), the UUID goes in Watermill-Uuid,
// and Nats-Msg-Id is topic + ":" + UUID. So re-publishing a message to the
// same topic, as watermill retries do, is dropped by the server inside the
// stream's duplicate window, while the same message published to several
// topics of one stream (watermill's fan-out and forwarding patterns keep
// the UUID) is stored once per topic. Metadata entries named Nats-Msg-Id
// or Watermill-Uuid are ignored; a message with an empty UUID is sent
// without either header, and is not deduplicated.
//
// NATS header values are single lines: CR and LF become spaces and
// surrounding blanks are trimmed, so only such values round-trip exactly.
//
// All messages are sent asynchronously (at most 2048 in flight) in order,
// and Publish waits for every acknowledgement, up to 30s, or until a
// message's Context is done for that message. Publishing is not atomic: the
// error joins one error per failed or unacknowledged message, each naming
// its UUID; the others are stored. Re-publishing all of them is safe.
//
// It returns [ErrClosed] after Close, and an error wrapping
// [ErrInvalidMetadata] (having published nothing) when a metadata key
// cannot be a header name.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	if p.closed.Load() {
		return ErrClosed
	}
	msgs := make([]*nats.Msg, len(messages))
	var errs []error
	for i, wm := range messages {
		m, err := natsMsg(topic, wm)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		msgs[i] = m
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), watermillPublishTimeout)
	defer cancel()
	p.publishAll(ctx, len(msgs), func(i int) (*nats.Msg, error) { return msgs[i], nil },
		func(i int) context.Context { return messages[i].Context() },
		func(i int, err error) {
			errs = append(errs, fmt.Errorf("bus: publish message %s to %s: %w", messages[i].UUID, topic, err))
		})
	return errors.Join(errs...)
}

// natsMsg converts wm into the NATS message published on topic.
func natsMsg(topic string, wm *message.Message) (*nats.Msg, error) {
	h := make(nats.Header, len(wm.Metadata)+1)
	for k, v := range wm.Metadata {
		if k == HeaderMsgID || k == HeaderWatermillUUID || isDeliveryKey(k) {
			continue
		}
		if !natsheader.ValidName(k) {
			return nil, fmt.Errorf("%w: message %s: %q", ErrInvalidMetadata, wm.UUID, k)
		}
		h[k] = []string{v}
	}
	if wm.UUID != "" {
		h[HeaderWatermillUUID] = []string{wm.UUID}
		h[HeaderMsgID] = []string{topic + ":" + wm.UUID}
	}
	return &nats.Msg{Subject: topic, Data: wm.Payload, Header: h}, nil
}

// WatermillConfig configures a [WatermillSubscriber]. Stream is required;
// every other zero value means the default named on the field.
type WatermillConfig struct {
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
	// [ConsumerConfig]. Durable and FilterSubjects must be empty: the
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
	Consumer ConsumerConfig

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

// WatermillSubscriber consumes JetStream messages as watermill messages,
// implementing watermill's message.Subscriber. Each Subscribe call pulls
// from its own consumer (shared with the rest of the group when
// ConsumerGroup is set). It is safe for concurrent use.
type WatermillSubscriber struct {
	js  jetstream.JetStream
	cfg WatermillConfig
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

// minWatermillHeartbeat bounds how often heartbeats are sent.
const minWatermillHeartbeat = 100 * time.Millisecond

// heartbeatInterval is a third of the shortest ack timeout the server may
// apply to a delivery of c (AckWait, or a BackOff step, which replaces
// AckWait for the delivery it belongs to), and at least 100ms.
func heartbeatInterval(c ConsumerConfig) time.Duration {
	wait := c.AckWait
	for _, b := range c.BackOff {
		wait = min(wait, b)
	}
	return max(wait/3, minWatermillHeartbeat)
}

// NewWatermillSubscriber returns a subscriber on conn. It checks cfg
// without contacting the server (consumers are created by Subscribe) and
// returns an error when cfg is invalid: one wrapping [ErrInvalidName] for a
// bad ConsumerGroup.
func NewWatermillSubscriber(conn *Conn, cfg WatermillConfig) (*WatermillSubscriber, error) {
	if conn == nil {
		return nil, errors.New("bus: watermill subscriber: nil connection")
	}
	if cfg.Stream == "" {
		return nil, errors.New("bus: watermill subscriber: Stream is required")
	}
	if cfg.Consumer.Durable != "" || len(cfg.Consumer.FilterSubjects) > 0 {
		return nil, errors.New("bus: watermill subscriber: Consumer.Durable and Consumer.FilterSubjects are set by the subscriber and must be empty")
	}
	if cfg.ConsumerGroup != "" {
		if err := ValidateName(cfg.ConsumerGroup); err != nil {
			return nil, fmt.Errorf("watermill consumer group: %w", err)
		}
		if len(cfg.ConsumerGroup) > maxGroupLen {
			return nil, fmt.Errorf("%w: consumer group %q is longer than %d bytes", ErrInvalidName, cfg.ConsumerGroup, maxGroupLen)
		}
	}
	if cfg.NakDelay < 0 {
		return nil, fmt.Errorf("bus: watermill subscriber: NakDelay %v is negative", cfg.NakDelay)
	}
	cfg.Consumer = cfg.Consumer.withDefaults()
	probe := cfg.Consumer
	probe.Durable, probe.FilterSubjects = "watermill", []string{"probe"}
	if err := probe.validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &WatermillSubscriber{
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
// heartbeats (see [WatermillConfig].Consumer). Ack acknowledges it on the
// server; Nack asks for redelivery after the delay in the message's
// [MetadataNakDelay], or else after NakDelay.
// When ctx ends or Close is called, the subscription stops pulling and
// gives back, for immediate redelivery to the rest of the group, the
// message in hand (if unsettled) and those buffered. The channel is closed
// then, or when the consumer is gone (deleted, connection closed).
//
// It returns [ErrClosed] after Close, an error when topic is not a valid
// subject or overlaps none of the stream's subjects, and a wrapped server
// error (jetstream.ErrStreamNotFound, ...) when the consumer cannot be
// created.
func (s *WatermillSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("bus: watermill subscribe %s: %w", topic, ErrClosed)
	}
	s.subs.Add(1)
	s.mu.Unlock()
	out, err := s.subscribe(ctx, topic)
	if err != nil {
		s.subs.Done()
		return nil, fmt.Errorf("bus: watermill subscribe %s: %w", topic, err)
	}
	return out, nil
}

// wmSubscription is one Subscribe call: its consumer and output channel.
type wmSubscription struct {
	s      *WatermillSubscriber
	name   string
	ctx    context.Context // the Subscribe ctx, also cancelled by Close
	cancel context.CancelFunc
	out    chan *message.Message

	// mu is held by the callback while it hands a message over, so that
	// run closes out only once no callback can send on it.
	mu sync.Mutex
	// ending is set by run once pulling has stopped: a late callback
	// gives its message back itself.
	ending bool
	// giveBack holds messages to nak once pulling has stopped; a nak sent
	// earlier would come straight back to this ending subscription.
	giveBack []jetstream.Msg
	// beat paces the heartbeats of the message in hand. It runs only
	// while one is (one message at a time: one ticker per subscription).
	beat *time.Ticker
}

func (s *WatermillSubscriber) subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if !server.IsValidSubject(topic) {
		return nil, errors.New("topic is not a valid NATS subject")
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, watermillSetupTimeout)
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
	sub := &wmSubscription{s: s, name: cons.CachedInfo().Name, out: make(chan *message.Message), beat: time.NewTicker(s.heartbeat)}
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
func (s *WatermillSubscriber) consumerConfig(topic string) jetstream.ConsumerConfig {
	sum := sha256.Sum256([]byte(topic))
	topicHash := hex.EncodeToString(sum[:8])
	c := s.cfg.Consumer
	c.FilterSubjects = []string{topic}
	if s.cfg.ConsumerGroup != "" {
		c.Durable = s.cfg.ConsumerGroup + "_" + topicHash
		if c.Description == "" {
			c.Description = "watermill consumer group " + s.cfg.ConsumerGroup + " of topic " + topic
		}
		return c.jetstream()
	}
	if c.Description == "" {
		c.Description = "watermill subscription of topic " + topic
	}
	cc := c.jetstream()
	cc.Durable, cc.Name = "", "wm_"+topicHash+"_"+rand.Text()
	cc.InactiveThreshold = ephemeralInactiveThreshold
	return cc
}

// run owns the subscription: it ends it when ctx ends, Close is called or
// the consumption stops (consumer deleted, connection closed), closes the
// output channel and gives back the messages it held.
func (sub *wmSubscription) run(consumption jetstream.ConsumeContext, cc jetstream.ConsumerConfig, stopOnClose func() bool) {
	defer sub.s.subs.Done()
	select {
	case <-sub.ctx.Done():
	case <-consumption.Closed():
	}
	sub.cancel() // the callback stops handing over and holds what it gets
	stopOnClose()
	consumption.Drain() // unsubscribes, then passes the buffer through the callback
	<-consumption.Closed()
	sub.mu.Lock() // waits for a callback still running after a Stop
	sub.ending = true
	giveBack := sub.giveBack
	sub.giveBack = nil
	sub.mu.Unlock()
	close(sub.out)
	if cc.Durable != "" { // an ephemeral consumer is deleted instead
		for _, m := range giveBack {
			sub.settle("nak", m.Nak())
		}
	}
	sub.deleteEphemeral(cc)
	sub.s.log.Debug("watermill subscription ended", "consumer", sub.name)
}

// deleteEphemeral removes the consumer of a groupless subscription.
func (sub *wmSubscription) deleteEphemeral(cc jetstream.ConsumerConfig) {
	if cc.Durable != "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), watermillSetupTimeout)
	defer cancel()
	if err := sub.s.js.DeleteConsumer(ctx, sub.s.cfg.Stream, cc.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		sub.s.log.Debug("watermill subscription: consumer not deleted; the server removes it when inactive", "consumer", cc.Name, "err", err)
	}
}

// handle hands one JetStream message to watermill and settles it.
func (sub *wmSubscription) handle(m jetstream.Msg) {
	s := sub.s
	sub.mu.Lock()
	defer sub.mu.Unlock()
	switch {
	case sub.ending:
		sub.settle("nak", m.Nak())
		return
	case sub.ctx.Err() != nil:
		sub.giveBack = append(sub.giveBack, m)
		return
	}
	md, err := m.Metadata()
	if err != nil {
		s.badMeta.Add(1)
		s.log.Error("message without JetStream metadata terminated", "consumer", sub.name, "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	h := m.Headers()
	uuid := h.Get(HeaderWatermillUUID)
	if uuid == "" {
		uuid = h.Get(HeaderMsgID)
	}
	wm := message.NewMessage(uuid, m.Data())
	for k, v := range h {
		if k != HeaderMsgID && k != HeaderWatermillUUID && !isDeliveryKey(k) && len(v) > 0 {
			wm.Metadata[k] = v[0]
		}
	}
	wm.Metadata[MetadataNumDelivered] = strconv.FormatUint(md.NumDelivered, 10)
	wm.Metadata[MetadataStreamSeq] = strconv.FormatUint(md.Sequence.Stream, 10)
	wm.Metadata[MetadataStream] = md.Stream
	wm.Metadata[MetadataSubject] = m.Subject()
	wm.Metadata[MetadataPublished] = md.Timestamp.UTC().Format(time.RFC3339Nano)
	ctx, cancel := context.WithCancel(sub.ctx)
	defer cancel()
	wm.SetContext(ctx)

	select {
	case sub.out <- wm:
		s.delivered.Add(1)
	case <-sub.ctx.Done():
		sub.giveBack = append(sub.giveBack, m)
		return
	}
	sub.await(m, wm)
	// An outcome that arrived with ctx's end wins over giving it back.
	switch {
	case isDone(wm.Acked()):
		sub.settle("ack", m.Ack())
	case !isDone(wm.Nacked()):
		sub.giveBack = append(sub.giveBack, m)
	default:
		if delay := sub.nakDelay(wm); delay > 0 {
			sub.settle("nak", m.NakWithDelay(delay))
		} else {
			sub.settle("nak", m.Nak())
		}
	}
}

// await waits until wm is acked or nacked, or the subscription ends,
// sending InProgress for m meanwhile so that the server does not redeliver
// it however long the handler takes.
func (sub *wmSubscription) await(m jetstream.Msg, wm *message.Message) {
	sub.beat.Reset(sub.s.heartbeat)
	defer sub.beat.Stop()
	for {
		select {
		case <-wm.Acked():
			return
		case <-wm.Nacked():
			return
		case <-sub.ctx.Done():
			return
		case <-sub.beat.C:
			if err := m.InProgress(); err != nil {
				sub.s.log.Debug("watermill subscription: heartbeat failed", "consumer", sub.name, "err", err)
				continue
			}
			sub.s.heartbeats.Add(1)
		}
	}
}

// nakDelay returns the redelivery delay of a nacked wm: its
// MetadataNakDelay when valid, else the configured NakDelay.
func (sub *wmSubscription) nakDelay(wm *message.Message) time.Duration {
	v, ok := wm.Metadata[MetadataNakDelay]
	if !ok {
		return sub.s.cfg.NakDelay
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		sub.s.log.Warn("watermill subscription: invalid nak delay metadata; using NakDelay",
			"consumer", sub.name, "key", MetadataNakDelay, "value", v, "nak_delay", sub.s.cfg.NakDelay)
		return sub.s.cfg.NakDelay
	}
	return d
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (sub *wmSubscription) settle(op string, err error) {
	if err != nil {
		sub.s.log.Warn("watermill subscription: settle failed; the server redelivers after AckWait", "op", op, "consumer", sub.name, "err", err)
	}
}

func (sub *wmSubscription) onConsumeError(_ jetstream.ConsumeContext, err error) {
	sub.s.consumeErrs.Add(1)
	if errors.Is(err, jetstream.ErrNoHeartbeat) {
		sub.s.missedHB.Add(1)
	}
	sub.s.log.Warn("watermill subscription: consume error", "consumer", sub.name, "err", err)
}

// WatermillStats counts what happened inside a [WatermillSubscriber].
type WatermillStats struct {
	// SubscriberStats holds the counters shared with [Subscriber]; its
	// Delivered counts messages sent on output channels.
	SubscriberStats
	// Heartbeats counts InProgress heartbeats sent (and accepted by the
	// connection) for messages handed out and not yet settled.
	Heartbeats uint64
}

// Stats returns the counters of all subscriptions of s.
func (s *WatermillSubscriber) Stats() WatermillStats {
	return WatermillStats{
		SubscriberStats: SubscriberStats{
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
// up to 30s. Later Subscribe calls return [ErrClosed]. It does not close
// the connection. It is safe to call more than once; it returns an error
// only when subscriptions are still running after 30s.
func (s *WatermillSubscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() {
		s.subs.Wait()
		close(done)
	}()
	timer := time.NewTimer(watermillCloseTimeout)
	defer timer.Stop()
	select {
	case <-done:
		return nil
	case <-timer.C:
		return fmt.Errorf("bus: watermill subscriber close: subscriptions still running after %v", watermillCloseTimeout)
	}
}
