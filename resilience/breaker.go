package resilience

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// State is a circuit breaker's state.
type State int

// States, after the seed tutorial: closed lets calls through, open rejects
// them, half-open lets exactly one probe through to test recovery.
const (
	StateClosed State = iota
	StateHalfOpen
	StateOpen
)

// String returns "closed", "half-open" or "open".
func (s State) String() string {
	switch s {
	case StateClosed:
		return "closed"
	case StateHalfOpen:
		return "half-open"
	case StateOpen:
		return "open"
	default:
		return fmt.Sprintf("State(%d)", int(s))
	}
}

// Defaults of [BreakerSettings], after the seed's RetryConfig.
const (
	DefaultBreakerThreshold   = 5
	DefaultBreakerOpenTimeout = 60 * time.Second
)

// BreakerSettings configure a [Breaker]. The zero value is usable.
type BreakerSettings struct {
	// Threshold is the number of consecutive failures that opens the
	// breaker. Zero: 5.
	Threshold int

	// OpenTimeout is how long the breaker stays open before it lets one
	// probe through (half-open). Zero: 60s.
	OpenTimeout time.Duration

	// ProbeLease bounds how long the half-open probe may take: a probe
	// whose result has not come back after it is written off (its late
	// result ignored) and the next caller probes instead, so a lost probe
	// cannot wedge the breaker half-open. Zero: OpenTimeout.
	ProbeLease time.Duration

	// IsFailure decides whether a call's error counts against the target.
	// Nil: retryable kinds (transient, retry-after, timeout, connection)
	// are failures; context.Canceled is ignored (the caller gave up, the
	// target said nothing); any other error (permanent, malformed: the
	// target answered) counts as a success.
	IsFailure func(error) bool

	// OnStateChange is called on every transition, in order, outside any
	// lock: it may call back into the breaker. Keep it quick; it runs on
	// the goroutine of a caller of Allow, a done func or State.
	OnStateChange func(name string, from, to State)
}

// errIgnored marks a result that says nothing about the target.
var errIgnored = errors.New("result ignored")

// errLeaseExpired marks a half-open probe written off by its lease.
var errLeaseExpired = fmt.Errorf("probe lease expired: %w", errIgnored)

type transition struct{ from, to State }

// Breaker is a circuit breaker for one target (e.g. one subject). It is
// safe for concurrent use. It wraps sony/gobreaker's two-step breaker (its
// generation count drops late results of an earlier state) and adds the
// half-open probe lease and hooks that run outside locks.
type Breaker struct {
	name      string
	cb        *gobreaker.TwoStepCircuitBreaker[struct{}]
	isFailure func(error) bool
	onChange  func(string, State, State)
	timeout   time.Duration
	lease     time.Duration

	mu    sync.Mutex // serialises Allow so a half-open grant is known to be the probe
	probe *probeGrant

	openedAt atomic.Int64 // unix nanos of the last transition to open; 0 when not open

	evMu      sync.Mutex
	events    []transition
	deliverMu sync.Mutex // held while hooks run; TryLock, never waited on
}

type probeGrant struct {
	deadline time.Time
	once     sync.Once
	done     func(error)
}

func (p *probeGrant) finish(err error) { p.once.Do(func() { p.done(err) }) }

// NewBreaker returns a closed breaker named name with settings s.
func NewBreaker(name string, s BreakerSettings) *Breaker {
	b := &Breaker{
		name:      name,
		isFailure: s.IsFailure,
		onChange:  s.OnStateChange,
		timeout:   s.OpenTimeout,
		lease:     s.ProbeLease,
	}
	if b.isFailure == nil {
		b.isFailure = defaultIsFailure
	}
	if b.timeout <= 0 {
		b.timeout = DefaultBreakerOpenTimeout
	}
	if b.lease <= 0 {
		b.lease = b.timeout
	}
	threshold := s.Threshold
	if threshold <= 0 {
		threshold = DefaultBreakerThreshold
	}
	b.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1, // exactly one half-open probe
		Timeout:     b.timeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= uint32(threshold) },
		IsExcluded:  func(err error) bool { return errors.Is(err, errIgnored) },
		// gobreaker calls this under its lock: only record, deliver later.
		OnStateChange: func(_ string, from, to gobreaker.State) {
			f, t := fromGobreaker(from), fromGobreaker(to)
			if t == StateOpen {
				b.openedAt.Store(time.Now().UnixNano())
			} else {
				b.openedAt.Store(0)
			}
			b.evMu.Lock()
			b.events = append(b.events, transition{f, t})
			b.evMu.Unlock()
		},
	})
	return b
}

func defaultIsFailure(err error) bool {
	return !errors.Is(err, context.Canceled) && Classify(err).Retryable()
}

func fromGobreaker(s gobreaker.State) State {
	switch s {
	case gobreaker.StateOpen:
		return StateOpen
	case gobreaker.StateHalfOpen:
		return StateHalfOpen
	default:
		return StateClosed
	}
}

// Name returns the breaker's name.
func (b *Breaker) Name() string { return b.name }

// State returns the current state (an open breaker whose timeout passed
// reports half-open).
func (b *Breaker) State() State {
	s := fromGobreaker(b.cb.State())
	b.flush()
	return s
}

// ProbeAt returns when an open breaker lets its next probe through, or
// the zero time when it is not open.
func (b *Breaker) ProbeAt() time.Time {
	at := b.openedAt.Load()
	if at == 0 {
		return time.Time{}
	}
	return time.Unix(0, at).Add(b.timeout)
}

// Allow asks to make one call. When the breaker lets it through, Allow
// returns a done func that must be called exactly once with the call's
// outcome (nil for success); later calls of done are ignored. When the
// breaker is open, or half-open with its probe in flight, Allow returns an
// error wrapping ErrCircuitOpen and makes no call possible.
func (b *Breaker) Allow() (done func(err error), err error) {
	b.mu.Lock()
	if p := b.probe; p != nil && time.Now().After(p.deadline) {
		b.probe = nil
		p.finish(errLeaseExpired) // frees the half-open slot
	}
	probing := b.cb.State() == gobreaker.StateHalfOpen
	gdone, gerr := b.cb.Allow()
	var grant *probeGrant
	if gerr == nil && probing {
		grant = &probeGrant{deadline: time.Now().Add(b.lease), done: gdone}
		b.probe = grant
	}
	b.mu.Unlock()
	b.flush()
	if gerr != nil {
		return nil, fmt.Errorf("breaker %s: %w", b.name, ErrCircuitOpen)
	}
	c := &call{b: b, grant: grant, gdone: gdone}
	return c.done, nil
}

// call is one call Allow let through: one allocation for its done func
// (with gobreaker's own closure, two per call).
type call struct {
	b     *Breaker
	grant *probeGrant // the half-open probe's lease, when this call is it
	gdone func(error) // gobreaker's done
	used  atomic.Bool
}

// done records the call's outcome once; later calls are ignored.
func (c *call) done(err error) {
	if c.used.Swap(true) {
		return
	}
	b := c.b
	err = b.outcome(err)
	if c.grant != nil {
		b.mu.Lock()
		if b.probe == c.grant {
			b.probe = nil
		}
		b.mu.Unlock()
		c.grant.finish(err)
	} else {
		c.gdone(err)
	}
	b.flush()
}

// outcome maps a call's error to what gobreaker records: nil (success),
// the error (failure) or one wrapping errIgnored (no verdict).
func (b *Breaker) outcome(err error) error {
	switch {
	case err == nil, errors.Is(err, errIgnored):
		return err
	case b.isFailure(err):
		return err
	case errors.Is(err, context.Canceled):
		return errIgnored
	default:
		return nil // the target answered, with a verdict on the request
	}
}

// Execute runs fn if the breaker allows it and records its outcome; it
// returns ErrCircuitOpen (wrapped) without calling fn otherwise. A panic in
// fn counts as a failure and is re-raised.
func (b *Breaker) Execute(fn func() error) (err error) {
	done, err := b.Allow()
	if err != nil {
		return err
	}
	defer func() {
		if p := recover(); p != nil {
			done(fmt.Errorf("panic: %v", p))
			panic(p)
		}
		done(err)
	}()
	return fn()
}

// flush delivers queued transitions to OnStateChange outside every lock.
// One goroutine delivers at a time (so hooks see transitions in order);
// others leave their events to it instead of waiting.
func (b *Breaker) flush() {
	if b.onChange == nil {
		b.evMu.Lock()
		b.events = b.events[:0]
		b.evMu.Unlock()
		return
	}
	for {
		if !b.deliverMu.TryLock() {
			return // the goroutine delivering will see our events
		}
		b.evMu.Lock()
		evs := b.events
		b.events = nil
		b.evMu.Unlock()
		for _, e := range evs {
			b.onChange(b.name, e.from, e.to)
		}
		b.deliverMu.Unlock()
		b.evMu.Lock()
		more := len(b.events) > 0
		b.evMu.Unlock()
		if !more {
			return
		}
	}
}
