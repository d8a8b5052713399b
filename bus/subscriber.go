package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of [ConsumerConfig].
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliver    = 10
	DefaultMaxAckPending = 1000
	DefaultPrefetch      = 256
	DefaultPullExpiry    = 5 * time.Second
)

// ConsumerConfig configures a durable pull consumer. Durable and
// FilterSubjects are required; every other zero value means the default
// named on the field.
type ConsumerConfig struct {
	// Durable is the consumer's name; replicas of one agent share it and
	// so share the work. Required.
	Durable string

	// FilterSubjects selects the subjects consumed. Required.
	FilterSubjects []string

	// Description is shown by the NATS tooling.
	Description string

	// AckWait is how long the server waits for a settlement (or an
	// InProgress heartbeat) before redelivering. Zero: 30s.
	AckWait time.Duration

	// MaxDeliver is the number of deliveries after which the server stops
	// redelivering and emits a MAX_DELIVERIES advisory. Zero: 10.
	MaxDeliver int

	// BackOff is the redelivery schedule after ack timeouts (not after
	// naks). It replaces AckWait with its first step; it may not have
	// more steps than MaxDeliver. Nil: redeliver after AckWait each time.
	BackOff []time.Duration

	// MaxAckPending bounds deliveries outstanding (unsettled) across all
	// subscribers of the consumer, client-side buffers included. It must be
	// at least Prefetch. Zero: 1000.
	MaxAckPending int

	// Prefetch is how many messages a subscriber buffers ahead of its
	// callback. Zero: 256.
	Prefetch int

	// PullExpiry is the lifetime of one pull request. Short expiries bound
	// the stalls seen under high rates (see docs). Zero: 5s.
	PullExpiry time.Duration

	// RecoveryWindow is how long a subscriber that starts while the
	// consumer has unacknowledged deliveries (a replica died holding
	// them) pulls one message at a time, handing the next only once the
	// previous is settled. A poison message that crashes its process then
	// takes only itself down, instead of pushing every message buffered
	// beside it towards MaxDeliver. Zero: AckWait (or the first BackOff
	// step, if shorter) plus a quarter.
	RecoveryWindow time.Duration

	// NoRecovery starts streaming at once, whatever is unacknowledged.
	NoRecovery bool
}

func (c ConsumerConfig) withDefaults() ConsumerConfig {
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = max(DefaultMaxAckPending, c.Prefetch)
	}
	if c.PullExpiry == 0 {
		c.PullExpiry = DefaultPullExpiry
	}
	if c.RecoveryWindow == 0 {
		w := c.AckWait
		for _, b := range c.BackOff[:min(1, len(c.BackOff))] {
			w = min(w, b)
		}
		c.RecoveryWindow = w + w/4
	}
	return c
}

// validate reports settings the server would reject or that break the
// runtime's assumptions, before anything is sent.
func (c ConsumerConfig) validate() error {
	if err := ValidateName(c.Durable); err != nil {
		return fmt.Errorf("consumer durable name: %w", err)
	}
	if len(c.FilterSubjects) == 0 {
		return errors.New("bus: consumer: at least one filter subject is required")
	}
	switch {
	case c.AckWait < time.Second:
		return fmt.Errorf("bus: consumer %s: AckWait %v is below 1s", c.Durable, c.AckWait)
	case c.MaxDeliver < 1:
		return fmt.Errorf("bus: consumer %s: MaxDeliver must be at least 1, got %d", c.Durable, c.MaxDeliver)
	case len(c.BackOff) > c.MaxDeliver:
		return fmt.Errorf("bus: consumer %s: BackOff has %d steps, more than MaxDeliver %d", c.Durable, len(c.BackOff), c.MaxDeliver)
	case c.Prefetch < 1:
		return fmt.Errorf("bus: consumer %s: Prefetch must be at least 1, got %d", c.Durable, c.Prefetch)
	case c.MaxAckPending < c.Prefetch:
		return fmt.Errorf("bus: consumer %s: MaxAckPending %d is below Prefetch %d (buffered messages count as pending)", c.Durable, c.MaxAckPending, c.Prefetch)
	case c.PullExpiry < time.Second:
		return fmt.Errorf("bus: consumer %s: PullExpiry %v is below 1s", c.Durable, c.PullExpiry)
	}
	for i, d := range c.BackOff {
		if d <= 0 {
			return fmt.Errorf("bus: consumer %s: BackOff step %d is %v, must be positive", c.Durable, i, d)
		}
	}
	return nil
}

func (c ConsumerConfig) jetstream() jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   c.Description,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		BackOff:       c.BackOff,
		MaxAckPending: c.MaxAckPending,
	}
	if len(c.FilterSubjects) == 1 {
		cc.FilterSubject = c.FilterSubjects[0]
	} else {
		cc.FilterSubjects = c.FilterSubjects
	}
	return cc
}

// SubscriberStats counts what happened inside a subscriber.
type SubscriberStats struct {
	// Delivered counts deliveries handed to the callback.
	Delivered uint64
	// ConsumeErrors counts errors reported by the pull machinery (missed
	// heartbeats, reconnects, server-side pull errors); the subscriber
	// keeps pulling through them.
	ConsumeErrors uint64
	// MissedHeartbeats counts the ConsumeErrors that were missed
	// heartbeats (the client waited for a pull the server no longer held).
	MissedHeartbeats uint64
	// BadMetadata counts messages without JetStream metadata; they are
	// terminated, since they cannot be settled reliably.
	BadMetadata uint64
	// Recovered counts deliveries handed one at a time in recovery mode.
	Recovered uint64
}

// Subscriber pulls from one durable consumer and hands every delivery to a
// callback. Several Subscribers (in one process or many) on the same
// Durable share its work.
type Subscriber struct {
	consumer jetstream.Consumer
	cfg      ConsumerConfig
	log      *slog.Logger

	// pendingAtStart is the consumer's unacknowledged deliveries when the
	// subscriber was created: non-zero means a replica died holding them.
	pendingAtStart int

	mu      sync.Mutex
	cc      jetstream.ConsumeContext
	started bool
	stopped bool
	quit    chan struct{} // closed by Stop
	done    chan struct{} // closed once pulling has ended for good

	delivered, consumeErrs, missedHB, badMeta, recovered atomic.Uint64
}

// NewSubscriber creates (or updates) the durable consumer described by cfg
// on stream and returns a Subscriber for it. It returns a validation error
// before contacting the server when cfg is invalid, and the server's error
// (wrapped) when it refuses the consumer. A nil logger discards logs.
func NewSubscriber(ctx context.Context, js jetstream.JetStream, stream string, cfg ConsumerConfig, logger *slog.Logger) (*Subscriber, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg.jetstream())
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on stream %s: %w", cfg.Durable, stream, err)
	}
	return &Subscriber{consumer: cons, cfg: cfg, log: logger, pendingAtStart: cons.CachedInfo().NumAckPending,
		quit: make(chan struct{}), done: make(chan struct{})}, nil
}

// Config returns the effective configuration, defaults filled in.
func (s *Subscriber) Config() ConsumerConfig { return s.cfg }

// Consumer returns the jetstream consumer, e.g. for its Info.
func (s *Subscriber) Consumer() jetstream.Consumer { return s.consumer }

// Start begins pulling. fn is called for each delivery, one at a time, from
// a goroutine owned by the subscriber; while fn blocks, no further messages
// are pulled beyond the Prefetch buffer (so a slow fn is backpressure, not
// memory growth). When the consumer had unacknowledged deliveries at
// creation, the subscriber first runs in recovery mode (see
// ConsumerConfig.RecoveryWindow). Start returns once pulling has begun; it
// returns ErrClosed after Stop and an error when called twice.
func (s *Subscriber) Start(fn func(*Delivery)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("bus: subscriber %s: start: %w", s.cfg.Durable, ErrClosed)
	}
	if s.started {
		return fmt.Errorf("bus: subscriber %s: already started", s.cfg.Durable)
	}
	s.started = true
	if s.pendingAtStart > 0 && !s.cfg.NoRecovery {
		s.log.Warn("unacknowledged deliveries found: recovering one message at a time", "consumer", s.cfg.Durable,
			"pending", s.pendingAtStart, "window", s.cfg.RecoveryWindow)
		go s.recover(fn)
		return nil
	}
	if err := s.stream(fn); err != nil {
		close(s.done)
		return err
	}
	return nil
}

// stream starts the streaming pull; the caller holds s.mu.
func (s *Subscriber) stream(fn func(*Delivery)) error {
	cc, err := s.consumer.Consume(func(m jetstream.Msg) {
		if d := s.delivery(m); d != nil {
			fn(d)
		}
	},
		jetstream.PullMaxMessages(s.cfg.Prefetch),
		jetstream.PullExpiry(s.cfg.PullExpiry),
		jetstream.ConsumeErrHandler(s.onConsumeError),
	)
	if err != nil {
		return fmt.Errorf("bus: subscriber %s: consume: %w", s.cfg.Durable, err)
	}
	s.cc = cc
	go func() {
		<-cc.Closed()
		close(s.done)
	}()
	return nil
}

// delivery wraps m, or terminates it when it has no metadata.
func (s *Subscriber) delivery(m jetstream.Msg) *Delivery {
	d, err := newDelivery(m)
	if err != nil {
		s.badMeta.Add(1)
		s.log.Error("message without JetStream metadata terminated", "subject", m.Subject(), "err", err)
		_ = m.Term()
		return nil
	}
	s.delivered.Add(1)
	return d
}

// recover pulls one message at a time, handing the next only once the
// previous was settled (or RecoveryWindow passed without it), until the
// window has passed and the queue yields nothing or a first delivery; then
// it streams.
func (s *Subscriber) recover(fn func(*Delivery)) {
	start := time.Now()
	for !s.quitting() {
		wait := 100 * time.Millisecond
		if left := s.cfg.RecoveryWindow - time.Since(start); left > wait {
			wait = min(left, s.cfg.PullExpiry)
		}
		batch, err := s.consumer.Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			s.onConsumeError(nil, err)
			select {
			case <-s.quit:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		var d *Delivery
		for m := range batch.Messages() {
			d = s.delivery(m)
		}
		if d == nil {
			if time.Since(start) >= s.cfg.RecoveryWindow {
				break // nothing left to recover
			}
			continue
		}
		d.settled = make(chan struct{})
		s.recovered.Add(1)
		fn(d)
		select {
		case <-d.settled:
		case <-s.quit:
		case <-time.After(s.cfg.RecoveryWindow):
		}
		if d.NumDelivered == 1 && time.Since(start) >= s.cfg.RecoveryWindow {
			break // past the window and back to first deliveries
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		close(s.done)
		return
	}
	s.log.Info("recovery done: streaming", "consumer", s.cfg.Durable, "recovered", s.recovered.Load())
	if err := s.stream(fn); err != nil {
		s.log.Error("cannot start streaming after recovery", "consumer", s.cfg.Durable, "err", err)
		close(s.done)
	}
}

func (s *Subscriber) quitting() bool {
	select {
	case <-s.quit:
		return true
	default:
		return false
	}
}

func (s *Subscriber) onConsumeError(_ jetstream.ConsumeContext, err error) {
	s.consumeErrs.Add(1)
	if errors.Is(err, jetstream.ErrNoHeartbeat) {
		s.missedHB.Add(1)
	}
	s.log.Warn("consume error; pulling continues", "consumer", s.cfg.Durable, "err", err)
}

// Stop stops pulling. Messages already buffered in the client are still
// handed to fn (drain) until they are all delivered or ctx ends; after ctx
// ends the rest are dropped from the buffer unsettled, so the server
// redelivers them after AckWait, and Stop returns without waiting for a
// call of fn that is still blocked (wait on Done for that). It is safe to
// call more than once and before Start.
func (s *Subscriber) Stop(ctx context.Context) error {
	s.mu.Lock()
	cc := s.cc
	already := s.stopped
	started := s.started
	s.stopped = true
	if !already {
		close(s.quit)
		if cc != nil {
			cc.Drain() // does not block; done under the lock so "stopped" implies "draining"
		}
	}
	s.mu.Unlock()
	if already || !started {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		if cc != nil {
			cc.Stop()
		}
		return fmt.Errorf("bus: subscriber %s: drain: %w", s.cfg.Durable, ctx.Err())
	}
}

// Done returns a channel closed once the subscriber has stopped pulling and
// its last call of fn has returned. It is closed without Start only if
// Start failed.
func (s *Subscriber) Done() <-chan struct{} { return s.done }

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{
		Delivered:        s.delivered.Load(),
		ConsumeErrors:    s.consumeErrs.Load(),
		MissedHeartbeats: s.missedHB.Load(),
		BadMetadata:      s.badMeta.Load(),
		Recovered:        s.recovered.Load(),
	}
}
