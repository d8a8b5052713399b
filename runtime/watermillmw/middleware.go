package watermillmw

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime/disposition"
)

// ErrPanic is wrapped by the error a handler panic is turned into (a
// transient failure: the message is redelivered after the backoff delay).
var ErrPanic = errors.New("watermillmw: handler panicked")

const (
	// holdRecheck is how often a held message asks its breaker again when
	// the breaker names no probe time (half-open, its probe in flight) and
	// no state change wakes it first.
	holdRecheck = 250 * time.Millisecond
	// minHoldWait keeps a held message from spinning when the probe time
	// has just passed but the breaker has not let a probe through yet.
	minHoldWait = 5 * time.Millisecond
)

// Middleware gives watermill handlers jetagent's dispositions: redelivery
// after a backoff delay, dead letters with provenance, per-subject circuit
// breakers that hold messages instead of failing them, and recovered
// panics. It is safe for concurrent use; one Middleware may serve several
// handlers and Routers.
type Middleware struct {
	cfg         Config
	maxAttempts uint64
	agentTasks  string // "<prefix>.tasks.<agent>.", the task subjects of Agent
	log         *slog.Logger
	breakers    *resilience.BreakerRegistry
	changes     breakerChanges
	stats       counters
}

// counters back Stats.
type counters struct {
	succeeded, retried, deadLettered, deadLetterFailures, panics, held, returned atomic.Uint64
	holding                                                                      atomic.Int64
}

// Stats counts what a [Middleware] did.
type Stats struct {
	// Succeeded counts handler calls that returned no error.
	Succeeded uint64
	// Retried counts messages handed back for redelivery after a delay:
	// failures, and dead letters that could not be stored.
	Retried uint64
	// DeadLettered counts messages copied to the dead-letter stream (and
	// then acknowledged).
	DeadLettered uint64
	// DeadLetterFailures counts dead letters the server did not store; each
	// original was redelivered instead.
	DeadLetterFailures uint64
	// Panics counts handler panics recovered.
	Panics uint64
	// Held counts messages that waited because their subject's breaker was
	// open; Holding is how many wait now.
	Held    uint64
	Holding int
	// Returned counts messages given back for immediate redelivery because
	// their context ended (the subscription stopped) before they settled.
	Returned uint64
}

// New returns a Middleware configured by cfg. It contacts no server. It
// returns an error wrapping [ErrInvalidConfig] (and [bus.ErrInvalidName]
// for a bad Agent) when cfg is invalid.
func New(cfg Config) (*Middleware, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxAttempts == 0 {
		cfg.MaxAttempts = bus.DefaultMaxDeliver
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	agentTasks := cfg.Topology.AgentTasks(cfg.Agent)
	m := &Middleware{
		cfg:         cfg,
		maxAttempts: uint64(cfg.MaxAttempts),
		agentTasks:  agentTasks[:len(agentTasks)-1], // without the ">" wildcard
		log:         cfg.Logger,
	}
	rules := make([]resilience.BreakerRule, len(cfg.BreakerRules))
	for i, r := range cfg.BreakerRules {
		rules[i] = resilience.BreakerRule{Pattern: r.Pattern, Settings: m.observed(r.Settings)}
	}
	m.breakers = resilience.NewBreakerRegistry(m.observed(cfg.Breaker), rules...)
	return m, nil
}

// Breakers returns the registry of the per-subject breakers (keyed by the
// subject a message was published on), to inspect their states.
func (m *Middleware) Breakers() *resilience.BreakerRegistry { return m.breakers }

// Stats returns the counters of m.
func (m *Middleware) Stats() Stats {
	return Stats{
		Succeeded:          m.stats.succeeded.Load(),
		Retried:            m.stats.retried.Load(),
		DeadLettered:       m.stats.deadLettered.Load(),
		DeadLetterFailures: m.stats.deadLetterFailures.Load(),
		Panics:             m.stats.panics.Load(),
		Held:               m.stats.held.Load(),
		Holding:            int(m.stats.holding.Load()),
		Returned:           m.stats.returned.Load(),
	}
}

// Middleware wraps h; it is a watermill message.HandlerMiddleware (pass
// m.Middleware to Router.AddMiddleware or Handler.AddMiddleware). For each
// message, in this order:
//
//  1. The breaker of the message's subject (watermillbus.MetadataSubject,
//     else the Router's topic): while it is open the handler is not called
//     and the message is not nacked (a nack would use up a delivery, and in
//     the end dead-letter a message nothing is wrong with): the call blocks
//     until the breaker's probe time, then asks again, for as long as the
//     breaker stays open. The subscriber's heartbeats keep the message
//     meanwhile, and a subscription hands out one message at a time, so
//     this pauses exactly that subscription. If the message's context ends
//     first, it is given back for immediate redelivery.
//  2. h runs; a panic is recovered, logged with its stack, and becomes a
//     transient error wrapping [ErrPanic].
//  3. The outcome is recorded by the breaker and turned into exactly one
//     disposition (see settle): success, redelivery after a delay (an
//     error, with [watermillbus.MetadataNakDelay] set), or dead letter
//     (nil, after the dead letter is stored).
//
// Messages from other subscribers work too: the delivery count is then
// taken as 1 (so failures are retried until they succeed or turn
// permanent, at whatever delay that subscriber applies to a Nack), and
// the subject is the Router's subscribed topic.
func (m *Middleware) Middleware(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		// The message's own context: middleware inside this one may
		// replace it with one it cancels on return (middleware.Timeout).
		ctx := msg.Context()
		d := deliveryOf(msg)
		done, err := m.admit(ctx, m.breakers.Get(d.breakerKey()))
		if err != nil { // disposition.NotRun: held until the subscription stopped
			return nil, m.giveBack(msg, err)
		}
		out, err := m.call(h, msg)
		msg.SetContext(ctx)
		done(err)
		return m.settle(ctx, msg, d, out, err)
	}
}

// settle carries out what [disposition.Decide] decides for a message
// whose handler ran (the table is in that package's doc; the middleware
// meets its Ran rows for success, shutdown, permanent, last attempt and
// retry, and its not-run and breaker-open rows in admit):
//
//	Ack        -> the handler's messages, nil (the Router publishes them and acks)
//	GiveBack   -> nak at once (the message's context ended: the subscription is stopping)
//	DeadLetter -> dead letter, then nil (the Router acks)
//	Retry      -> nak with the decision's delay, or Backoff.Delay(n)
//
// where "nak with delay" is returning the error with
// watermillbus.MetadataNakDelay set (the Router nacks; watermillbus.Subscriber
// naks with that delay), and a dead letter that cannot be stored is a nak
// with the backoff delay. The runtime's own errors (runtime.ErrCancelled,
// ErrTaskTaken) do not reach a watermill handler; if one is returned
// anyway, it is retried.
func (m *Middleware) settle(ctx context.Context, msg *message.Message, d delivery, out []*message.Message, err error) ([]*message.Message, error) {
	dec := disposition.Decide(disposition.Facts{Err: err, Stopping: ctx.Err() != nil,
		Attempt: d.attempt(), MaxAttempts: int(min(m.maxAttempts, 1<<30))})
	switch dec.Action {
	case disposition.Ack:
		m.stats.succeeded.Add(1)
		return out, nil
	case disposition.GiveBack, disposition.Release:
		return nil, m.giveBack(msg, err)
	case disposition.DeadLetter:
		cause := err
		if dec.LastAttempt {
			cause = fmt.Errorf("attempt %d of %d failed: %w", d.n, m.maxAttempts, err)
		}
		return nil, m.deadLetter(ctx, msg, d, dec.Reason, cause)
	default: // Retry; and Wait or AckCancelled, from runtime errors a watermill handler should not return
		delay := dec.Delay
		if delay <= 0 {
			delay = m.cfg.Backoff.Delay(d.attempt())
		}
		m.stats.retried.Add(1)
		m.log.Info("handler failed; redelivering", "agent", m.cfg.Agent, "subject", d.subject,
			"message_uuid", msg.UUID, "attempt", d.n, "kind", dec.Kind.String(), "delay", delay, "err", err)
		return nil, m.nakAfter(msg, delay, err)
	}
}

// nakAfter asks for msg's redelivery after delay and returns err, for the
// Router to nack msg.
func (m *Middleware) nakAfter(msg *message.Message, delay time.Duration, err error) error {
	msg.Metadata.Set(watermillbus.MetadataNakDelay, delay.String())
	return err
}

// giveBack asks for msg's immediate redelivery: its context ended, so the
// subscription that handed it out is stopping.
func (m *Middleware) giveBack(msg *message.Message, err error) error {
	m.stats.returned.Add(1)
	return m.nakAfter(msg, 0, err)
}

// call runs h, turning a panic into an error wrapping ErrPanic.
func (m *Middleware) call(h message.HandlerFunc, msg *message.Message) (out []*message.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			m.stats.panics.Add(1)
			m.log.Error("handler panicked", "agent", m.cfg.Agent, "message_uuid", msg.UUID,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			out, err = nil, fmt.Errorf("%w: %v", ErrPanic, p)
		}
	}()
	return h(msg)
}

// admit waits until br lets a call through, and returns its done func;
// or it returns ctx's error, wrapped, when ctx ends first.
func (m *Middleware) admit(ctx context.Context, br *resilience.Breaker) (func(error), error) {
	if done, err := br.Allow(); err == nil { // the common case: no lock taken
		return done, nil
	}
	m.stats.held.Add(1)
	m.stats.holding.Add(1)
	defer m.stats.holding.Add(-1)
	for {
		changed := m.changes.watch(br.Name()) // before Allow: no change is missed
		done, err := br.Allow()
		if err == nil {
			return done, nil
		}
		wait := holdRecheck
		if at := br.ProbeAt(); !at.IsZero() {
			wait = max(time.Until(at), minHoldWait)
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, fmt.Errorf("watermillmw: held by the open breaker of %s until the message's context ended: %w", br.Name(), context.Cause(ctx))
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// observed returns s with an OnStateChange hook that logs the change,
// wakes the messages held by that breaker, and calls s's own hook.
func (m *Middleware) observed(s resilience.BreakerSettings) resilience.BreakerSettings {
	user := s.OnStateChange
	s.OnStateChange = func(name string, from, to resilience.State) {
		m.log.Info("breaker state changed", "agent", m.cfg.Agent, "subject", name, "from", from.String(), "to", to.String())
		m.changes.notify(name)
		if user != nil {
			user(name, from, to)
		}
	}
	return s
}

// breakerChanges wakes the messages held by a breaker when it changes
// state: a channel per breaker name, closed (and forgotten) on a change.
type breakerChanges struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

// watch returns a channel closed at the next change of breaker name.
func (c *breakerChanges) watch(name string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch == nil {
		c.ch = make(map[string]chan struct{})
	}
	ch := c.ch[name]
	if ch == nil {
		ch = make(chan struct{})
		c.ch[name] = ch
	}
	return ch
}

func (c *breakerChanges) notify(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch := c.ch[name]; ch != nil {
		close(ch)
		delete(c.ch, name)
	}
}
