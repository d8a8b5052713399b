package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/nats-io/nats.go/jetstream"
)

// Observer is told what a runtime does with each delivery, for metrics
// (package metrics implements it for Prometheus). Set it as
// Config.Observer; with none set, the runtime pays one nil check per event.
//
// Its methods are called from the runtime's workers, its heartbeat
// goroutine and its breakers' transitions, concurrently: they must be safe
// for concurrent use, quick, and must not block (they run on the hot path,
// between a delivery's arrival and its settlement).
//
// The subject passed to Delivered and Settled is the delivery's subject
// when the agent has a handler for its payload type (the subject's tail),
// and UnhandledSubject otherwise: the subjects an Observer sees are
// bounded by the agent's handlers, not by what clients invent.
type Observer interface {
	// Delivered is called when a worker takes a new delivery of subject
	// (a held delivery released later is not delivered again).
	Delivered(subject string)

	// Settled is called once for every outcome of a delivery: exactly
	// what Runtime.Stats counts, each time it counts it (a delivery held
	// by an open breaker is Settled as Held, then once more when it is
	// released and settled; a parked one whose copy could not be stored
	// is Settled as Parked, then as Returned). handler is how long the handler ran; zero
	// when no handler ran (input dead-lettered, held, handed back unrun).
	Settled(subject string, outcome Outcome, handler time.Duration)

	// BreakerChanged is called when the breaker of subject moves to state,
	// in order, outside the breaker's locks.
	BreakerChanged(subject string, state resilience.State)

	// Heartbeat is called for each InProgress signal the server accepted.
	Heartbeat()
}

// Disposition is what the runtime did with a delivery.
type Disposition uint8

// Dispositions, one per counter of [Stats].
const (
	// Succeeded: the handler succeeded; its reply was published, then the
	// delivery acked.
	Succeeded Disposition = iota + 1
	// Retried: handed back for redelivery after a failure (handler error
	// or panic, or a reply or dead letter that could not be published).
	Retried
	// DeadLettered: copied to the dead-letter stream, then terminated.
	DeadLettered
	// Returned: handed back unprocessed (or interrupted) at shutdown.
	Returned
	// Cancelled: the task was stopped by a task.cancel; acked.
	Cancelled
	// Duplicate: acked without running; another message runs the task.
	Duplicate
	// Abandoned: left unsettled; a newer delivery of it owns the task.
	Abandoned
	// Held: kept back, unsettled, because the subject's breaker is open;
	// it gets another outcome once released.
	Held
	// Parked: handed over to be copied to the subject's parked subject,
	// then acked, because the subject's breaker is open and the replica
	// holds enough of its tasks; the copy comes back when the breaker
	// closes. The copies are stored in the background: one that cannot be
	// stored is Settled once more, as Returned (handed back until the
	// breaker's probe), and Stats counts it there instead.
	Parked
)

var dispositionNames = [...]string{"unknown", "succeeded", "retried", "dead_lettered", "returned", "cancelled", "duplicate", "abandoned", "held", "parked"}

// String returns the disposition's stable name ("succeeded",
// "dead_lettered", ...), as used in metrics and spans.
func (d Disposition) String() string {
	if int(d) < len(dispositionNames) {
		return dispositionNames[d]
	}
	return fmt.Sprintf("Disposition(%d)", int(d))
}

// Outcome is how one delivery ended.
type Outcome struct {
	Disposition Disposition
	// Reason says why, when Disposition is DeadLettered.
	Reason dlq.Reason
	// Failure is the kind of the handler's error when the handler failed
	// (KindNone when it succeeded, did not run, or was only interrupted,
	// cancelled or superseded). A recovered panic is KindTransient.
	Failure resilience.Kind
}

// observe reports an outcome to the observer, if any.
func (r *Runtime) observe(subject string, o Outcome, handler time.Duration) {
	if r.cfg.Observer != nil {
		r.cfg.Observer.Settled(r.observedSubject(subject), o, handler)
	}
}

// returnUnrun hands back a delivery no handler ran, and reports it.
func (r *Runtime) returnUnrun(j *job) {
	r.observe(j.d.Subject, r.giveBack(j), 0)
}

// returnAll hands many deliveries back at once (at shutdown, or when every
// worker is stuck), recording them in parallel.
func (r *Runtime) returnAll(js []job) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range js {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.returnUnrun(&js[i])
		})
	}
	wg.Wait()
}

// deliveryLogger returns the logger for lines about one delivery: agent,
// subject, envelope id, attempt, correlation id and trace id (the envelope's
// fields only once it decoded). Build it only on paths that log.
func (r *Runtime) deliveryLogger(d *bus.Delivery, env *envelope.Envelope) *slog.Logger {
	if env == nil {
		return r.cfg.Logger.With("agent", r.cfg.Agent, "subject", d.Subject, "attempt", d.NumDelivered)
	}
	return r.cfg.Logger.With("agent", r.cfg.Agent, "subject", d.Subject, "envelope_id", env.ID, "attempt", d.NumDelivered,
		"correlation_id", env.CorrelationID, "trace_id", env.TraceID)
}

// ErrNotStarted is returned by Ready before Start.
var ErrNotStarted = errors.New("runtime: not started")

// readyTimeout bounds Ready's and Backlog's server requests when ctx has
// no deadline.
const readyTimeout = 2 * time.Second

// Ready reports whether the runtime is taking tasks: nil from the end of
// a successful Start until Stop, while its connection is up, its pull has
// not ended and the server knows its consumer. Otherwise it returns an
// error saying why: ErrNotStarted, ErrStopped, or a wrapped error about
// the connection, the pull or the consumer. It asks the server (one
// request, bounded by ctx, or 2s when ctx has no deadline).
func (r *Runtime) Ready(ctx context.Context) error {
	r.mu.Lock()
	sub, stopped := r.sub, r.stopped
	r.mu.Unlock()
	switch {
	case stopped:
		return ErrStopped
	case sub == nil:
		return ErrNotStarted
	}
	select {
	case <-sub.Done():
		if err := r.Err(); err != nil {
			return err
		}
		return fmt.Errorf("runtime %s: pulling has stopped", r.cfg.Agent)
	default:
	}
	if nc := r.conn.NATS(); !nc.IsConnected() {
		return fmt.Errorf("runtime %s: NATS connection %s", r.cfg.Agent, nc.Status())
	}
	if r.isWedged.Load() {
		return fmt.Errorf("runtime %s: every one of its %d workers is stuck in a handler past its deadline", r.cfg.Agent, r.cfg.Concurrency)
	}
	ctx, cancel := withDefaultTimeout(ctx, readyTimeout)
	defer cancel()
	if _, err := sub.Consumer().Info(ctx); err != nil {
		return fmt.Errorf("runtime %s: consumer: %w", r.cfg.Agent, err)
	}
	return nil
}

// InFlight returns how many deliveries the workers hold now: running
// their handler, or settling it (its reply, dead letter or record) until
// it is acknowledged.
func (r *Runtime) InFlight() int {
	r.mu.Lock()
	slots := r.slots
	r.mu.Unlock()
	n := 0
	for i := range slots {
		s := &slots[i]
		s.mu.Lock()
		if s.d != nil && !s.d.Settled() { // settled, it finishes its bookkeeping
			n++
		}
		s.mu.Unlock()
	}
	return n
}

// Backlog is what the server holds for an agent (all its replicas).
type Backlog struct {
	// Pending counts tasks not yet delivered (the consumer's NumPending).
	Pending uint64
	// AckPending counts tasks delivered but not yet settled: queued,
	// running or held by replicas (the consumer's NumAckPending).
	AckPending uint64
	// DeadLetters counts the agent's entries in the dead-letter stream.
	DeadLetters uint64
}

// Backlog reads the agent's consumer and dead-letter counts from the
// server: three requests, bounded by ctx (2s when ctx has no deadline).
// It returns ErrNotStarted before Start and a wrapped error when the
// connection is down or a request fails.
func (r *Runtime) Backlog(ctx context.Context) (Backlog, error) {
	cons := r.Consumer()
	if cons == nil {
		return Backlog{}, ErrNotStarted
	}
	if nc := r.conn.NATS(); !nc.IsConnected() {
		return Backlog{}, fmt.Errorf("runtime %s: backlog: NATS connection %s", r.cfg.Agent, nc.Status())
	}
	ctx, cancel := withDefaultTimeout(ctx, readyTimeout)
	defer cancel()
	info, err := cons.Info(ctx)
	if err != nil {
		return Backlog{}, fmt.Errorf("runtime %s: backlog: consumer: %w", r.cfg.Agent, err)
	}
	b := Backlog{Pending: info.NumPending, AckPending: uint64(max(info.NumAckPending, 0))}
	st, err := r.conn.JetStream().Stream(ctx, r.cfg.Topology.DLQStream())
	if err != nil {
		return b, fmt.Errorf("runtime %s: backlog: %w", r.cfg.Agent, err)
	}
	si, err := st.Info(ctx, jetstream.WithSubjectFilter(r.cfg.Topology.AgentDLQ(r.cfg.Agent)))
	if err != nil {
		return b, fmt.Errorf("runtime %s: backlog: DLQ: %w", r.cfg.Agent, err)
	}
	for _, n := range si.State.Subjects {
		b.DeadLetters += n
	}
	return b, nil
}

func withDefaultTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
