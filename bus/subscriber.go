package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// SubscriberStats counts what happened inside a subscriber.
type SubscriberStats struct {
	// Delivered counts deliveries handed to the callback.
	Delivered uint64
	// ConsumeErrors counts errors reported by the pull machinery (missed
	// heartbeats, reconnects, server-side pull errors); the subscriber
	// keeps pulling through them.
	ConsumeErrors uint64
	// MissedHeartbeats counts the ConsumeErrors that were missed
	// heartbeats (the subscriber waited for a pull the server no longer
	// held, and asked again).
	MissedHeartbeats uint64
	// BadMetadata counts messages without JetStream metadata; they are
	// terminated, since they cannot be settled reliably.
	BadMetadata uint64
	// Requests counts pull requests sent.
	Requests uint64
	// Freezes counts pauses of the process (or of its scheduling) long
	// enough to matter, seen as gaps in the subscriber's clock.
	Freezes uint64
}

// Subscriber pulls from one durable consumer and hands every delivery to a
// callback. Several Subscribers (in one process or many) on the same
// Durable share its work.
//
// It never holds more than its Window (see [ConsumerConfig]): it asks the
// server only for what fits, so every message it receives goes straight
// to the callback (nothing waits unseen in a client-side buffer, beyond an
// ack timeout), and a replica whose callback stops settling stops taking
// work from the others.
type Subscriber struct {
	consumer jetstream.Consumer
	cfg      ConsumerConfig
	log      *slog.Logger
	nc       *nats.Conn
	next     string // the pull request subject

	mu       sync.Mutex
	started  bool
	stopped  bool
	sub      *nats.Subscription
	fn       func(*Delivery)
	held     int       // handed to fn, not released
	asked    int       // requested, not received nor reported left over
	requests int       // pull requests that may still be open
	expires  time.Time // when the last of them expires
	heard    time.Time // the last message or status on the inbox
	paused   bool
	drift    string // how the consumer on the server differs from cfg
	recon    uint64 // the connection's reconnect count last seen

	quit    chan struct{}        // closed by Stop, or when pulling ends on its own
	done    chan struct{}        // closed once pulling has ended for good
	inboxes sync.WaitGroup       // inbox subscriptions not closed yet: the current one, and old ones draining after a reconnect
	retired []*nats.Subscription // the old ones, under mu
	tickers sync.WaitGroup
	err     error       // why pulling ended on its own (see end); under mu
	asking  atomic.Bool // a goroutine asks the server whether the consumer is gone

	server      atomic.Pointer[ackTimeouts] // what the consumer on the server applies
	lastTick    atomic.Int64                // Unix nanos of the housekeeper's last tick
	freezeStart atomic.Int64                // the latest gap in the clock (Unix nanos)
	freezeEnd   atomic.Int64

	delivered, consumeErrs, missedHB, badMeta, requested, freezes atomic.Uint64
}

// Timing of the subscriber's housekeeping.
const (
	// tick is how often the housekeeper runs: it detects freezes, missed
	// heartbeats and expired requests.
	tick = 50 * time.Millisecond
	// freezeGap is a gap in the housekeeper's ticks that counts as a
	// freeze of the process (SIGSTOP, a stalled VM, a swap storm).
	freezeGap = 500 * time.Millisecond
	// afterFreeze is how long after a freeze a received message may still
	// have been sent before it (read from the socket's buffer).
	afterFreeze = 250 * time.Millisecond
	// driftEvery is how often the consumer's configuration on the server is
	// compared with the subscriber's.
	driftEvery = 2 * time.Second
)

// NewSubscriber creates (or updates) the durable consumer described by cfg
// on stream and returns a Subscriber for it. It returns a validation error
// before contacting the server when cfg is invalid, and the server's error
// (wrapped) when it refuses the consumer. A nil logger discards logs.
//
// When the consumer exists with other settings (another replica's), it
// logs a warning naming them before rewriting the consumer: replicas that
// disagree on AckWait, BackOff or MaxDeliver compute heartbeats and
// attempts differently (see Drift).
func NewSubscriber(ctx context.Context, js jetstream.JetStream, stream string, cfg ConsumerConfig, logger *slog.Logger) (*Subscriber, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if old, err := js.Consumer(ctx, stream, cfg.Durable); err == nil {
		if diff := cfg.consumerDiff(old.CachedInfo().Config); diff != "" {
			logger.Warn("consumer configuration differs from this replica's; rewriting it (replicas with other settings keep theirs: align them)",
				"consumer", cfg.Durable, "differences", "this replica's->the server's: "+diff)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg.JetStreamConfig())
	if err != nil {
		return nil, fmt.Errorf("bus: consumer %s on stream %s: %w", cfg.Durable, stream, err)
	}
	info := cons.CachedInfo()
	s := &Subscriber{consumer: cons, cfg: cfg, log: logger, nc: js.Conn(),
		next: apiPrefix(js.Options()) + "CONSUMER.MSG.NEXT." + stream + "." + cfg.Durable,
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	s.server.Store(&ackTimeouts{ackWait: info.Config.AckWait, backOff: info.Config.BackOff})
	s.lastTick.Store(time.Now().UnixNano())
	return s, nil
}

// apiPrefix returns the JetStream API prefix o uses, ending in a dot.
func apiPrefix(o jetstream.JetStreamOptions) string {
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	default:
		return jetstream.DefaultAPIPrefix
	}
}

// Config returns the effective configuration, defaults filled in.
func (s *Subscriber) Config() ConsumerConfig { return s.cfg }

// Consumer returns the jetstream consumer, e.g. for its Info.
func (s *Subscriber) Consumer() jetstream.Consumer { return s.consumer }

// Start begins pulling. fn is called for each delivery, one at a time, from
// a goroutine owned by the subscriber; it should return quickly (queue the
// delivery), and every delivery must eventually be settled or released
// (Delivery.Release), or the subscriber stops asking for more once its
// Window is full. Start returns once the first pull request is sent; it
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
	s.fn = fn
	sub, err := s.nc.Subscribe(s.nc.NewInbox(), s.receive)
	if err != nil {
		close(s.done)
		return fmt.Errorf("bus: subscriber %s: subscribe: %w", s.cfg.Durable, err)
	}
	// The default pending limits would drop messages of a large window.
	_ = sub.SetPendingLimits(-1, -1)
	s.inboxes.Add(1)
	sub.SetClosedHandler(func(string) { s.inboxes.Done() })
	s.sub, s.started = sub, true
	s.recon = s.nc.Stats().Reconnects
	s.heard = time.Now()
	s.askLocked()
	s.tickers.Add(1)
	go s.housekeep()
	go func() {
		s.inboxes.Wait()
		s.tickers.Wait()
		close(s.done)
	}()
	return nil
}

// pullRequest is the body of a JetStream pull request.
type pullRequest struct {
	Batch     int           `json:"batch"`
	Expires   time.Duration `json:"expires"`
	Heartbeat time.Duration `json:"idle_heartbeat"`
}

// askLocked sends a pull request for what the window has room for, when
// that is worth a request: at least half the room a request may fill, or
// everything when nothing is on its way. The caller holds s.mu.
func (s *Subscriber) askLocked() {
	if s.stopped || s.paused || s.sub == nil {
		return
	}
	room := s.cfg.Window - s.held - s.asked
	batch := min(room, s.cfg.Prefetch)
	threshold := max(1, min(s.cfg.Window, s.cfg.Prefetch)/2)
	if batch <= 0 || (batch < threshold && s.asked > 0) {
		return
	}
	body, _ := json.Marshal(pullRequest{Batch: batch, Expires: s.cfg.PullExpiry, Heartbeat: s.heartbeat()})
	if err := s.nc.PublishRequest(s.next, s.sub.Subject, body); err != nil {
		s.onError(fmt.Errorf("pull request: %w", err))
		return
	}
	s.requested.Add(1)
	s.asked += batch
	s.requests++
	s.expires = time.Now().Add(s.cfg.PullExpiry)
}

// heartbeat is the idle heartbeat asked of the server for a waiting request.
func (s *Subscriber) heartbeat() time.Duration { return s.cfg.PullExpiry / 2 }

// receive runs on the inbox subscription's goroutine for every message:
// a delivery (handed to fn) or a status of a pull request.
func (s *Subscriber) receive(m *nats.Msg) {
	now := time.Now()
	alive := s.sentNoLaterThan(now)
	if m.Reply == "" && len(m.Data) == 0 && m.Header.Get("Status") != "" {
		s.status(m)
		return
	}
	s.mu.Lock()
	s.heard = now
	if s.asked > 0 {
		s.asked--
	}
	if s.asked == 0 {
		s.requests = 0
	}
	s.held++
	fn := s.fn
	s.mu.Unlock()
	d, err := newDelivery(s.nc, m)
	if err != nil {
		s.badMeta.Add(1)
		s.log.Error("message without JetStream metadata terminated", "subject", m.Subject, "err", err)
		if m.Reply != "" {
			_ = s.nc.Publish(m.Reply, ackTerm)
		}
		s.releaseOne()
		return
	}
	d.alive.Store(alive.UnixNano())
	d.ackTimeout = s.ackTimeout(d.NumDelivered)
	d.release = s.releaseOne
	s.delivered.Add(1)
	fn(d)
}

// status handles a pull request's status message.
func (s *Subscriber) status(m *nats.Msg) {
	code, desc := m.Header.Get("Status"), m.Header.Get("Description")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heard = time.Now()
	left, counted := -1, false
	if v := m.Header.Get("Nats-Pending-Messages"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			left, counted = n, true
		}
	}
	switch {
	case code == "100": // idle heartbeat
		return
	case counted: // a request ended with left messages unsent (408 expired, 409 ...)
		s.asked = max(0, s.asked-left)
		s.requests = max(0, s.requests-1)
		if s.requests == 0 {
			s.asked = 0
		}
	case code == "409" && strings.Contains(desc, "Leadership Change"):
		s.asked, s.requests = 0, 0 // the server dropped every waiting request
	case code == "404" || code == "408":
		s.requests = max(0, s.requests-1)
		if s.requests == 0 {
			s.asked = 0
		}
	}
	switch {
	case code == "409" && strings.Contains(desc, "Consumer Deleted"), code == "503":
		// The consumer was deleted (with its stream, maybe), or nothing
		// answers its pull requests: ask the server whether it is gone.
		s.consumeErrs.Add(1)
		if !s.stopped {
			s.log.Warn("the consumer may be gone; asking the server", "consumer", s.cfg.Durable, "status", code+" "+desc)
		}
		s.askIfGoneLocked(code + " " + desc)
	case code != "408" && code != "404":
		s.onError(fmt.Errorf("pull status %s %s", code, desc))
	}
	s.askLocked()
}

// askIfGoneLocked asks the server, from a goroutine of the subscriber's,
// whether the consumer still exists; when it does not, pulling ends (see
// end). The caller holds s.mu.
func (s *Subscriber) askIfGoneLocked(why string) {
	if s.stopped || !s.asking.CompareAndSwap(false, true) {
		return
	}
	s.log.Debug("the consumer may be gone; asking the server", "consumer", s.cfg.Durable, "why", why)
	s.tickers.Add(1) // not stopped: the housekeeper still counts, so Wait has not begun
	go func() {
		defer s.tickers.Done()
		defer s.asking.Store(false)
		s.askIfGone()
	}()
}

// goneAsks are the pauses before each question of askIfGone: a consumer
// being deleted answers its waiting pull requests a moment before it
// leaves the server's books.
var goneAsks = []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}

// askIfGone asks the server for the consumer's info until it says the
// consumer is gone (then pulling ends), or goneAsks are used up, or Stop.
func (s *Subscriber) askIfGone() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watched := make(chan struct{})
	go func() { // Stop cuts the questions short
		defer close(watched)
		select {
		case <-s.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	defer func() { cancel(); <-watched }()
	for _, pause := range goneAsks {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := s.consumer.Info(actx)
		acancel()
		if IsConsumerGone(err) {
			s.end(err)
			return
		}
	}
}

// IsConsumerGone reports whether err, from a request about a consumer
// (its info, a pull), says that it no longer exists: deleted, or its
// stream was.
func IsConsumerGone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// end stops pulling for good because the consumer is gone (cause says
// how the server said so): Done is closed, Err returns the reason. It
// does nothing once stopped.
func (s *Subscriber) end(cause error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	s.err = fmt.Errorf("%w: %s: %w", ErrConsumerGone, s.cfg.Durable, cause)
	close(s.quit)
	subs := append([]*nats.Subscription{s.sub}, s.retired...)
	s.mu.Unlock()
	s.log.Warn("pulling ended: the consumer is gone", "consumer", s.cfg.Durable, "err", cause)
	for _, sub := range subs {
		_ = sub.Unsubscribe() // what is still on its way cannot be settled any more
	}
}

// releaseOne gives one place of the window back (a delivery settled or
// released) and asks for more when there is room.
func (s *Subscriber) releaseOne() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held--
	s.askLocked()
}

// ackTimeout returns the ack timeout of a delivery made delivered times:
// the shorter of this subscriber's and the consumer's on the server (which
// another replica may have rewritten).
func (s *Subscriber) ackTimeout(delivered uint64) time.Duration {
	local := s.cfg.AckTimeout(delivered)
	if srv := s.server.Load().of(delivered); srv > 0 && srv < local {
		return srv
	}
	return local
}

// sentNoLaterThan returns the latest time a message received at now can
// be known to have been sent: now, unless the process was just frozen (it
// may then have sat in the socket's buffer since the freeze began). A
// receiver that sees a gap in the housekeeper's ticks records the freeze
// itself, so the first messages read after a freeze are covered even
// before the housekeeper runs again.
func (s *Subscriber) sentNoLaterThan(now time.Time) time.Time {
	s.noteGap(now)
	if end := s.freezeEnd.Load(); end != 0 && now.UnixNano()-end < int64(afterFreeze) {
		return time.Unix(0, s.freezeStart.Load())
	}
	return now
}

// noteGap records a freeze when the last tick is further back than
// freezeGap.
func (s *Subscriber) noteGap(now time.Time) {
	last := s.lastTick.Load()
	if now.UnixNano()-last < int64(freezeGap) {
		return
	}
	if s.lastTick.CompareAndSwap(last, now.UnixNano()) {
		s.freezeStart.Store(last)
		s.freezeEnd.Store(now.UnixNano())
		s.freezes.Add(1)
		s.log.Warn("the process was frozen; deliveries it held may have been redelivered meanwhile",
			"consumer", s.cfg.Durable, "for", time.Duration(now.UnixNano()-last).Round(time.Millisecond))
	}
}

// housekeep ticks until Stop: it notices freezes, re-asks when requests
// were lost (missed heartbeats, a reconnect, expiry without a status), and
// compares the consumer on the server with cfg.
func (s *Subscriber) housekeep() {
	defer s.tickers.Done()
	t := time.NewTicker(tick)
	defer t.Stop()
	lastDrift := time.Now()
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			s.noteGap(now)
			s.lastTick.Store(now.UnixNano())
			s.checkRequests(now)
			if now.Sub(lastDrift) >= driftEvery {
				lastDrift = now
				s.checkDrift()
			}
		}
	}
}

// checkRequests forgets requests the server can no longer serve and asks
// again: after a reconnect, two missed idle heartbeats, or expiry (plus a
// heartbeat's grace) without a status.
func (s *Subscriber) checkRequests(now time.Time) {
	recon := s.nc.Stats().Reconnects
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case recon != s.recon:
		s.recon = recon
		s.asked, s.requests = 0, 0
		s.renewInboxLocked()
	case s.requests > 0 && now.Sub(s.heard) > 2*s.heartbeat():
		s.missedHB.Add(1)
		err := fmt.Errorf("%w: no message or heartbeat for %v", jetstream.ErrNoHeartbeat, now.Sub(s.heard).Round(time.Millisecond))
		s.onError(err)
		s.askIfGoneLocked(err.Error()) // a request sent as the consumer was deleted hears nothing
		s.asked, s.requests = 0, 0
		s.heard = now
	case s.requests > 0 && now.After(s.expires.Add(s.heartbeat())):
		s.asked, s.requests = 0, 0
	}
	s.askLocked()
}

// renewInboxLocked moves the subscriber to a fresh inbox after a
// reconnect. The client resubscribes the old inbox, and a pull request sent
// on it before the reconnect may still wait at the server (a dropped
// connection, the server up all along): the server would fill it and the
// request asked after the reconnect, twice the window. Nobody listens on
// the old inbox once it is drained, so the server drops its requests
// unanswered. What reached the old inbox already is still handed to fn.
// The reconnect is seen within a tick; a request the server fills in that
// tick is the only excess. The caller holds s.mu.
func (s *Subscriber) renewInboxLocked() {
	if s.stopped || s.sub == nil {
		return
	}
	sub, err := s.nc.Subscribe(s.nc.NewInbox(), s.receive)
	if err != nil {
		s.onError(fmt.Errorf("a fresh inbox after a reconnect: %w (asking on the old one)", err))
		return
	}
	_ = sub.SetPendingLimits(-1, -1)
	s.inboxes.Add(1) // before the old one's Done: the count never drops to zero meanwhile
	sub.SetClosedHandler(func(string) { s.inboxes.Done() })
	old := s.sub
	s.retired = append(slices.DeleteFunc(s.retired, func(r *nats.Subscription) bool { return !r.IsValid() }), old)
	s.sub = sub
	if err := old.Drain(); err != nil {
		_ = old.Unsubscribe()
	}
}

// checkDrift reads the consumer's configuration on the server; when it
// differs from cfg (another replica rewrote it), it logs a warning once per
// change, and ack timeouts follow the server's where they are shorter.
func (s *Subscriber) checkDrift() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := s.consumer.Info(ctx)
	if IsConsumerGone(err) {
		s.end(err) // deleted while the window was full: no pull request heard it
		return
	}
	if err != nil {
		return
	}
	diff := s.cfg.consumerDiff(info.Config)
	s.server.Store(&ackTimeouts{ackWait: info.Config.AckWait, backOff: info.Config.BackOff})
	s.mu.Lock()
	changed := diff != s.drift
	s.drift = diff
	s.mu.Unlock()
	if changed && diff != "" {
		s.log.Warn("consumer configuration differs from this replica's: another replica rewrote it; heartbeats follow the shorter ack timeouts (align the replicas' settings)",
			"consumer", s.cfg.Durable, "differences", "this replica's->the server's: "+diff)
	} else if changed {
		s.log.Info("consumer configuration agrees with this replica's again", "consumer", s.cfg.Durable)
	}
}

// Drift describes how the consumer on the server differs from this
// subscriber's configuration ("ack_wait 30s->2s, ..."), as last read
// (every few seconds); empty when they agree.
func (s *Subscriber) Drift() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drift
}

// Pause stops (true) or resumes (false) asking for more messages; what
// was asked already still arrives.
func (s *Subscriber) Pause(paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.paused = paused
	s.askLocked()
}

func (s *Subscriber) onError(err error) {
	s.consumeErrs.Add(1)
	s.log.Warn("consume error; pulling continues", "consumer", s.cfg.Durable, "err", err)
}

// Stop stops pulling. Messages already on their way are still handed to
// fn (a drain: the inbox is unsubscribed, and what the server sent before
// that arrives) until ctx ends; the rest are then dropped unsettled, so
// the server redelivers them after AckWait, and Stop returns without
// waiting for a call of fn that is still blocked (wait on Done for that).
// It is safe to call more than once and before Start.
func (s *Subscriber) Stop(ctx context.Context) error {
	s.mu.Lock()
	already, started, sub, retired := s.stopped, s.started, s.sub, s.retired
	s.stopped = true
	if !already {
		close(s.quit)
	}
	s.mu.Unlock()
	if already || !started {
		return nil
	}
	if err := sub.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		_ = sub.Unsubscribe()
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		for _, old := range append([]*nats.Subscription{sub}, retired...) {
			_ = old.Unsubscribe()
		}
		return fmt.Errorf("bus: subscriber %s: drain: %w", s.cfg.Durable, ctx.Err())
	}
}

// Done returns a channel closed once the subscriber has stopped pulling and
// its last call of fn has returned: after Stop, or when pulling ended on
// its own (see Err). It is closed without Start only if Start failed.
func (s *Subscriber) Done() <-chan struct{} { return s.done }

// Err returns why pulling ended on its own: an error wrapping
// ErrConsumerGone once the server said that the consumer no longer
// exists (deleted, or its stream was), told by a pull request's status or
// by the periodic comparison of its configuration. It is nil while the
// subscriber pulls and when Stop ended it.
func (s *Subscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stats returns the subscriber's counters.
func (s *Subscriber) Stats() SubscriberStats {
	return SubscriberStats{
		Delivered:        s.delivered.Load(),
		ConsumeErrors:    s.consumeErrs.Load(),
		MissedHeartbeats: s.missedHB.Load(),
		BadMetadata:      s.badMeta.Load(),
		Requests:         s.requested.Load(),
		Freezes:          s.freezes.Load(),
	}
}

// Holding returns how many deliveries the subscriber has handed out and
// not got back (settled or released), and how many it has asked for.
func (s *Subscriber) Holding() (held, asked int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held, s.asked
}
