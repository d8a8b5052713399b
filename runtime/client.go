package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
)

// ErrClientClosed is returned by Send after Close.
var ErrClientClosed = errors.New("runtime: client closed")

// RetryConfig is the client's retry and breaker policy (the seed
// protocol's RetryConfig, in the vocabulary of package resilience: the
// same Backoff, the same BreakerSettings, the same defaults).
// DefaultRetryConfig returns the seed's defaults; the zero value re-sends
// nothing.
type RetryConfig struct {
	// MaxRetries is how many times an attempt that timed out or could not
	// reach the server is re-sent. Re-sends reuse the envelope id, so the
	// server stores the task once. Zero: no re-sends.
	MaxRetries int
	// Backoff is the delay between attempts. Zero: base 1s, max 60s,
	// jitter on (each delay drawn from [d/2, d], so clients failing
	// together do not retry together), as for every resilience.Backoff.
	Backoff resilience.Backoff
	// AttemptTimeout is how long one attempt waits for the reply (the
	// caller's ctx bounds the whole Send). Zero: 10s.
	AttemptTimeout time.Duration
	// Breaker, when set, keeps one breaker per target subject: after
	// Breaker.Threshold consecutive failed attempts (zero: 5) Send fails
	// at once with ErrCircuitOpen, without trying, until
	// Breaker.OpenTimeout (zero: 60s) has passed and one probe succeeds.
	// Nil: no breakers.
	Breaker *resilience.BreakerSettings
}

// DefaultAttemptTimeout is RetryConfig.AttemptTimeout's default.
const DefaultAttemptTimeout = 10 * time.Second

// DefaultRetryConfig returns the seed protocol's defaults: 3 retries, the
// default backoff (1s base, 60s max, jitter on), breaker off, and 10s per
// attempt.
func DefaultRetryConfig() RetryConfig {
	return RetryConfig{MaxRetries: 3, AttemptTimeout: DefaultAttemptTimeout}
}

// ClientConfig configures a [Client]. The zero value is usable.
type ClientConfig struct {
	// Name is the client's reply subject token and the sender it
	// suggests. Zero: "client-<ulid>".
	Name string

	// Topology must match the agents'. Zero: the default topology.
	Topology bus.Topology

	// Retry is the retry and breaker policy. Nil: DefaultRetryConfig().
	Retry *RetryConfig

	// Logger receives the client's logs. Nil: discard.
	Logger *slog.Logger

	// TracerProvider, when set, wraps each Send in a span named
	// "jetagent.send <payload_type>" and publishes its traceparent, so the
	// agent's handler span is its child. Nil: no spans.
	TracerProvider trace.TracerProvider
}

// ClientStats counts what the client did.
type ClientStats struct {
	// Attempts counts envelopes published (first sends and re-sends).
	Attempts uint64
	// Replies counts replies returned to a Send.
	Replies uint64
	// Mismatched counts replies that arrived for a request but carried
	// another correlation id; they were discarded.
	Mismatched uint64
	// Unmatched counts replies for no waiting request (late replies after
	// Send gave up, duplicates); they were discarded. A reply that arrives
	// between two attempts of a Send is kept for the next one.
	Unmatched uint64
	// Undecodable counts reply messages that were not valid envelopes.
	Undecodable uint64
	// Lookups counts look-ups of a reply in the replies stream (before a
	// re-send, and when an attempt timed out); Recovered counts the
	// replies found that way, which the subscription had missed.
	Lookups, Recovered uint64
}

// Client sends envelopes to agents over the tasks stream and waits for the
// correlated reply, retrying, breaking circuits and falling back as its
// RetryConfig says. It is safe for concurrent use.
type Client struct {
	conn      *bus.Conn
	pub       *bus.Publisher
	topo      bus.Topology
	name      string
	replyBase string
	retry     RetryConfig
	breakers  *resilience.BreakerRegistry // nil when disabled
	log       *slog.Logger
	sub       *nats.Subscription
	tracer    trace.Tracer // nil: no spans

	mu      sync.Mutex
	waiting map[string]*waiter
	closed  bool
	done    chan struct{} // closed by Close

	attempts, replies, mismatched, unmatched, undecodable atomic.Uint64
	lookups, recovered                                    atomic.Uint64
	lookupWarned                                          atomic.Bool
}

// waiter is one Send waiting for its reply.
type waiter struct {
	reply      chan *envelope.Envelope // buffered 1
	mismatched atomic.Int32
}

// NewClient subscribes to the client's reply subjects and returns the
// client. It returns a wrapped error when the name is invalid or the
// subscription fails.
func NewClient(conn *bus.Conn, cfg ClientConfig) (*Client, error) {
	name := cfg.Name
	if name == "" {
		name = "client-" + strings.ToLower(envelope.NewID())
	}
	if err := bus.ValidateName(name); err != nil {
		return nil, fmt.Errorf("runtime: client name: %w", err)
	}
	retry := DefaultRetryConfig()
	if cfg.Retry != nil {
		retry = *cfg.Retry
	}
	if retry.MaxRetries < 0 || retry.AttemptTimeout < 0 || retry.Backoff.Base < 0 || retry.Backoff.Max < 0 ||
		(retry.Breaker != nil && (retry.Breaker.Threshold < 0 || retry.Breaker.OpenTimeout < 0)) {
		return nil, fmt.Errorf("runtime: client retry config: negative MaxRetries, AttemptTimeout, Backoff or Breaker setting")
	}
	if retry.AttemptTimeout == 0 {
		retry.AttemptTimeout = DefaultAttemptTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		conn:      conn,
		pub:       bus.NewPublisher(conn.JetStream()),
		topo:      cfg.Topology,
		name:      name,
		replyBase: cfg.Topology.ReplySubject(name),
		retry:     retry,
		log:       log,
		tracer:    tracerOf(cfg.TracerProvider),
		waiting:   make(map[string]*waiter),
		done:      make(chan struct{}),
	}
	if retry.Breaker != nil {
		bs := *retry.Breaker
		user := bs.OnStateChange
		bs.OnStateChange = func(target string, from, to resilience.State) {
			log.Warn("client circuit breaker "+to.String(), "target", target, "from", from.String())
			if user != nil {
				user(target, from, to)
			}
		}
		c.breakers = resilience.NewBreakerRegistry(bs)
	}
	sub, err := conn.NATS().Subscribe(c.replyBase+".>", c.onReply)
	if err != nil {
		return nil, fmt.Errorf("runtime: client subscribe %s: %w", c.replyBase, err)
	}
	c.sub = sub
	return c, nil
}

// Name returns the client's name.
func (c *Client) Name() string { return c.name }

// Breakers returns the client's per-target breakers, or nil when
// RetryConfig.Breaker is nil.
func (c *Client) Breakers() *resilience.BreakerRegistry { return c.breakers }

func (c *Client) onReply(m *nats.Msg) {
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	var env envelope.Envelope
	if err := envelope.Unmarshal(m.Data, &env); err != nil {
		c.undecodable.Add(1)
		c.log.Warn("undecodable reply dropped", "subject", m.Subject, "err", err)
		return
	}
	c.mu.Lock()
	w := c.waiting[id]
	if w != nil && env.CorrelationID == id {
		delete(c.waiting, id)
	}
	c.mu.Unlock()
	switch {
	case w == nil:
		c.unmatched.Add(1)
		c.log.Debug("reply without a waiting request dropped", "request", id, "correlation_id", env.CorrelationID)
	case env.CorrelationID != id:
		c.mismatched.Add(1)
		w.mismatched.Add(1)
		c.log.Warn("reply with a mismatched correlation id discarded", "request", id, "correlation_id", env.CorrelationID)
	default:
		c.replies.Add(1)
		w.reply <- &env // buffered, and only one matching reply gets here
	}
}

// SendOption adjusts one Send.
type SendOption func(*sendOptions)

type sendOptions struct {
	fallback string
}

// WithFallback names a backup agent: when the primary cannot answer (its
// attempts time out, the server cannot be reached, or its circuit is open)
// the envelope is re-addressed to backup, under a new id derived from the
// original, and sent with the same policy. A permanent failure does not
// fall back.
//
// The task runs at most once across the two agents: the primary's copy
// carries a deadline at the end of the primary's attempts (or the
// envelope's own, if earlier), so a copy still queued when the client
// falls back is dead-lettered expired instead of run; the backup is sent
// the task only once that deadline has passed (plus 250ms for the agents'
// clocks). A primary handler that ignores its ctx past the deadline can
// still finish beside the backup.
func WithFallback(backup string) SendOption {
	return func(o *sendOptions) { o.fallback = backup }
}

// Send publishes env to its recipient's tasks subject with a reply subject
// of the client's, and waits for the reply whose correlation id is env.ID;
// a reply carrying any other correlation id is never returned. env.ReplyTo
// is overwritten. Attempts that get no reply within AttemptTimeout, or
// cannot reach the server, are re-sent with backoff up to MaxRetries
// times, under the same id (the server stores the task once).
//
// Errors match with errors.Is: resilience.ErrCircuitOpen (no attempt made),
// resilience.ErrTimeout (no reply; also wraps ErrCorrelationMismatch when
// mismatched replies were discarded), resilience.ErrConnection (the server
// could not be reached), ErrClientClosed, and the wrapped validation error
// for a bad recipient or payload type. With WithFallback, the error joins
// the primary's and the backup's failures.
//
// With a TracerProvider, Send runs in a span and sets env.TraceID to its
// trace id.
func (c *Client) Send(ctx context.Context, env *envelope.Envelope, opts ...SendOption) (*envelope.Envelope, error) {
	if c.tracer == nil {
		return c.send(ctx, env, opts...)
	}
	ctx, span := c.startSendSpan(ctx, env)
	rep, err := c.send(ctx, env, opts...)
	endSendSpan(span, err)
	return rep, err
}

func (c *Client) send(ctx context.Context, env *envelope.Envelope, opts ...SendOption) (*envelope.Envelope, error) {
	var o sendOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.fallback == "" {
		return c.sendTo(ctx, env, nil)
	}
	// The primary's copy must not run once the backup has the task: it
	// carries a deadline at the end of the primary's attempts (or its own,
	// if earlier), so a copy still queued when the client falls back is
	// dead-lettered expired instead of run, and a run still going has its
	// ctx cancelled then. The backup is sent the task once that deadline
	// has passed.
	primary := *env
	withdraw := time.Now().Add(c.attemptsBudget())
	if primary.Deadline.IsZero() || primary.Deadline.After(withdraw) {
		primary.Deadline = withdraw
	}
	var published bool
	rep, err := c.sendTo(ctx, &primary, &published)
	env.ReplyTo = primary.ReplyTo
	if err == nil || ctx.Err() != nil || !canFallBack(err) {
		return rep, err
	}
	if published {
		t := time.NewTimer(time.Until(primary.Deadline) + fallbackSkew)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w; waiting for the primary's copy to expire before the backup: %w", err, ctx.Err())
		}
	}
	alt := *env
	alt.ID = envelope.DeriveID(env.ID, "fallback:"+o.fallback)
	alt.Recipient = o.fallback
	c.log.Info("primary failed; falling back", "primary", env.Recipient, "backup", o.fallback, "err", err)
	rep, ferr := c.sendTo(ctx, &alt, nil)
	if ferr != nil {
		return nil, fmt.Errorf("primary %s failed: %w; backup %s failed: %w", env.Recipient, err, o.fallback, ferr)
	}
	return rep, nil
}

// fallbackSkew is how long after the primary's copy expired the backup is
// sent the task: a margin for the agents' clocks.
const fallbackSkew = 250 * time.Millisecond

// attemptsBudget is the longest the attempts of one envelope can take:
// every attempt's timeout and the longest backoff before each re-send.
func (c *Client) attemptsBudget() time.Duration {
	d := time.Duration(c.retry.MaxRetries+1) * c.retry.AttemptTimeout
	for i := range c.retry.MaxRetries {
		d += c.retry.Backoff.Ceiling(i + 1)
	}
	return d
}

// canFallBack reports whether a backup agent might answer where the
// primary could not: not for permanent or validation failures.
func canFallBack(err error) bool {
	return resilience.Classify(err).Retryable() || errors.Is(err, resilience.ErrCircuitOpen)
}

// sendTo runs the attempts of one envelope to its recipient.
func (c *Client) sendTo(ctx context.Context, env *envelope.Envelope, published *bool) (*envelope.Envelope, error) {
	if err := bus.ValidateName(env.Recipient); err != nil {
		return nil, resilience.Permanent(fmt.Errorf("runtime: send: recipient: %w", err))
	}
	if !env.PayloadType.Valid() {
		return nil, resilience.Permanent(fmt.Errorf("runtime: send: %w: payload type %q", envelope.ErrInvalidField, env.PayloadType))
	}
	target := c.topo.TaskSubject(env.Recipient, env.PayloadType)
	// One waiter for all the attempts: a reply that arrives between two
	// (the first timed out, the client looks in the replies stream or
	// backs off) is kept for the next, which returns it instead of
	// re-sending. The re-send would be deduplicated, and the agent, which
	// ran the task already, would say nothing more.
	w := &waiter{reply: make(chan *envelope.Envelope, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClientClosed
	}
	c.waiting[env.ID] = w
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.waiting[env.ID] == w {
			delete(c.waiting, env.ID)
		}
		c.mu.Unlock()
	}()
	policy := resilience.RetryPolicy{
		MaxRetries: c.retry.MaxRetries,
		Backoff:    c.retry.Backoff,
	}
	rep, err := resilience.Retry(ctx, func(ctx context.Context) (*envelope.Envelope, error) {
		if c.breakers == nil {
			if published != nil {
				*published = true // an attempt publishes (or may have)
			}
			return c.attempt(ctx, target, env, w)
		}
		done, err := c.breakers.Get(target).Allow()
		if err != nil {
			return nil, fmt.Errorf("runtime: send %s to %s: %w", env.ID, env.Recipient, err)
		}
		if published != nil {
			*published = true
		}
		rep, err := c.attempt(ctx, target, env, w)
		done(err)
		return rep, err
	}, policy)
	return rep, err
}

// attempt publishes env once and waits for its reply, on w, for
// AttemptTimeout. A reply that came since the last attempt is returned at
// once.
func (c *Client) attempt(ctx context.Context, target string, env *envelope.Envelope, w *waiter) (*envelope.Envelope, error) {
	select {
	case rep := <-w.reply:
		return rep, nil
	default:
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClientClosed
	}
	actx, cancel := context.WithTimeout(ctx, c.retry.AttemptTimeout)
	defer cancel()

	replyTo := c.replyBase + "." + env.ID
	if env.ReplyTo == replyTo {
		// A re-send: the reply to an earlier attempt may have been published
		// while this client could not hear it (a reconnect). The replies
		// stream kept it; re-sending would be deduplicated and answer nothing.
		if rep := c.storedReply(ctx, env.ID); rep != nil {
			return rep, nil
		}
	}
	env.ReplyTo = replyTo
	c.attempts.Add(1)
	if _, err := c.publishEnvelope(actx, target, env); err != nil {
		return nil, c.publishError(env, err)
	}
	select {
	case rep := <-w.reply:
		return rep, nil
	case <-c.done:
		return nil, fmt.Errorf("runtime: send %s: %w", env.ID, ErrClientClosed)
	case <-actx.Done():
		if rep := c.storedReply(ctx, env.ID); rep != nil {
			return rep, nil
		}
		err := fmt.Errorf("runtime: send %s to %s: no reply within %v: %w", env.ID, env.Recipient, c.retry.AttemptTimeout, resilience.ErrTimeout)
		if n := w.mismatched.Load(); n > 0 {
			err = fmt.Errorf("%w (%d replies with a mismatched correlation id discarded: %w)", err, n, resilience.ErrCorrelationMismatch)
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
		return nil, err
	}
}

// storedReplyTimeout bounds one look-up of a reply in the replies stream.
const storedReplyTimeout = 2 * time.Second

// storedReply looks the reply to request id up in the replies stream (the
// last message on its reply subject, with a direct get), for a reply
// published while the client's subscription could not receive it. It
// returns nil when there is none, or when the look-up fails (the stream
// does not allow direct gets, the client may not read it): the caller then
// re-sends or times out as it would without it. The look-up has a budget
// of its own, so the last attempt's can run after the attempt timed out.
func (c *Client) storedReply(ctx context.Context, id string) *envelope.Envelope {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil // cancelled by the caller: it wants no answer
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storedReplyTimeout)
	defer cancel()
	subject := c.replyBase + "." + id
	c.lookups.Add(1)
	m, err := c.conn.NATS().RequestWithContext(lctx, "$JS.API.DIRECT.GET."+c.topo.RepliesStream()+"."+subject, nil)
	if err != nil {
		if c.lookupWarned.CompareAndSwap(false, true) {
			c.log.Warn("reply look-up in the replies stream failed; a reply published during a reconnect is missed (the stream needs allow_direct, the client a grant for $JS.API.DIRECT.GET.<replies stream>.<its reply subjects>)",
				"stream", c.topo.RepliesStream(), "err", err)
		}
		return nil
	}
	if status := m.Header.Get("Status"); status != "" {
		return nil // 404: no reply stored (yet)
	}
	var env envelope.Envelope
	if err := envelope.Unmarshal(m.Data, &env); err != nil {
		c.undecodable.Add(1)
		c.log.Warn("undecodable stored reply ignored", "subject", subject, "err", err)
		return nil
	}
	if env.CorrelationID != id {
		c.mismatched.Add(1)
		c.log.Warn("stored reply with a mismatched correlation id ignored", "request", id, "correlation_id", env.CorrelationID)
		return nil
	}
	c.replies.Add(1)
	c.recovered.Add(1)
	return &env
}

// publishError classifies a failed publish: not connected, or no JetStream
// answering, is a connection failure; no acknowledgement in time while
// connected is a timeout.
func (c *Client) publishError(env *envelope.Envelope, err error) error {
	switch {
	case errors.Is(err, ErrClientClosed):
		return err
	case !c.conn.NATS().IsConnected(), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrNoServers), errors.Is(err, jetstream.ErrNoStreamResponse):
		return fmt.Errorf("runtime: send %s: server unreachable: %w: %w", env.ID, resilience.ErrConnection, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("runtime: send %s: no publish acknowledgement: %w: %w", env.ID, resilience.ErrTimeout, err)
	default:
		return fmt.Errorf("runtime: send %s: %w", env.ID, err) // transient
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{
		Attempts:    c.attempts.Load(),
		Replies:     c.replies.Load(),
		Mismatched:  c.mismatched.Load(),
		Unmatched:   c.unmatched.Load(),
		Undecodable: c.undecodable.Load(),
		Lookups:     c.lookups.Load(),
		Recovered:   c.recovered.Load(),
	}
}

// Close unsubscribes and ends Sends still waiting for a reply with
// ErrClientClosed. It does not close the connection. Safe to call more
// than once.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	if err := c.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("runtime: client close: %w", err)
	}
	return nil
}
