package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
)

// ErrStarted is returned by Start when the runtime was already started,
// and ErrStopped once it was stopped: a Runtime runs once.
var (
	ErrStarted = fmt.Errorf("runtime: %w", lifecycle.ErrStarted)
	ErrStopped = fmt.Errorf("runtime: %w", lifecycle.ErrStopped)
)

// ErrPullEnded is wrapped by Err when the runtime's pull ended for good
// without Stop: the server no longer has the agent's consumer (deleted,
// or its tasks stream was; see bus.ErrConsumerGone). The runtime takes no
// more tasks; the process should end, for its restart to provision the
// consumer anew.
var ErrPullEnded = errors.New("pull ended")

// Stats counts what a runtime did. Every delivery taken ends in exactly
// one of Succeeded, Retried, DeadLettered, Returned, Cancelled, Duplicates,
// Abandoned or Parked (a delivery held by an open breaker, or waiting its
// turn as a suspect, ends in one of them once it is released).
type Stats struct {
	// Received counts deliveries taken by a worker.
	Received uint64
	// Succeeded counts tasks whose handler succeeded, reply sent, acked.
	Succeeded uint64
	// Retried counts deliveries handed back for redelivery after a
	// failure (handler error, panic, reply or dead-letter publish failure).
	Retried uint64
	// DeadLettered counts deliveries moved to the dead-letter stream.
	DeadLettered uint64
	// Returned counts deliveries handed back unprocessed: at shutdown,
	// while every worker was stuck, or (Skipped) after a freeze.
	Returned uint64
	// Skipped counts the Returned deliveries not started because their
	// ack timeout had passed while they waited (the process was frozen):
	// the server had redelivered them.
	Skipped uint64
	// Parked counts deliveries copied to the end of the tasks stream, and
	// acknowledged, because their subject's breaker was open and the
	// replica held as many of its tasks as it may.
	Parked uint64
	// Cancelled counts tasks stopped by a task.cancel (acked).
	Cancelled uint64
	// Duplicates counts deliveries acked without running because another
	// message carrying the same task id runs it.
	Duplicates uint64
	// Abandoned counts deliveries left unsettled because a newer delivery
	// of the same message (redelivered meanwhile) owns the task.
	Abandoned uint64
	// Panics counts recovered handler panics (also counted in Retried).
	Panics uint64
	// Held counts deliveries held because their subject's breaker was
	// open (each time it happened); Holding is how many are held now.
	Held, Holding uint64
	// Queued is how many deliveries wait for a worker now.
	Queued uint64
	// Suspects is how many deliveries wait for their turn now: an earlier
	// delivery of their task ended without a trace (a crash or a hang),
	// so they run one at a time.
	Suspects uint64
	// Heartbeats counts InProgress signals sent for queued deliveries,
	// slow handlers and held deliveries.
	Heartbeats uint64
	// UnstoredReplies counts replies published with core NATS because the
	// request's reply_to is outside the replies stream: nothing stores
	// them, so they are lost if nobody listens at that moment.
	UnstoredReplies uint64
	// Unrecorded counts tasks whose execution record could not be stored
	// (records bucket unavailable): a re-send of one after a server
	// restart may run it again.
	Unrecorded uint64
	// ReplyFailed counts tasks whose handler succeeded but whose reply
	// could never be published: dead-lettered as reply_failed, with the
	// result, instead of running the handler again.
	ReplyFailed uint64
}

type counters struct {
	received, succeeded, retried, deadLettered, returned, panics, held, heartbeats atomic.Uint64
	cancelled, duplicates, abandoned, skipped, parked, unstoredReplies             atomic.Uint64
	unrecorded, replyFailed                                                        atomic.Uint64
}

// Runtime runs one agent: it consumes the agent's tasks and dispatches each
// to the handler registered for its payload type. Register handlers with
// Handle, then Start (or Run). Several Runtimes with the same agent name,
// in one process or many, share the agent's tasks.
type Runtime struct {
	cfg       Config
	conn      *bus.Conn
	pub       *bus.Publisher
	handlers  map[envelope.PayloadType]Handler
	breakers  *resilience.BreakerRegistry
	snapshots snapshot.Store
	dlq       *dlq.Store
	replica   string // names this runtime in snapshot owners
	// taskPrefix is "<prefix>.tasks.<agent>.": a task subject without its
	// payload type; ownPrefix "<prefix>." and replyPrefix
	// "<prefix>.replies.".
	taskPrefix, ownPrefix, replyPrefix string
	stats                              counters
	tracer                             trace.Tracer // nil: no spans
	// agentBuckets are ensured on first use (snapshots.go).
	agentBuckets agentBuckets

	mu       sync.Mutex
	started  bool
	stopped  bool
	sub      *bus.Subscriber
	sweeper  *dlq.Sweeper
	queue    *queue // deliveries waiting for a worker
	slots    []slot // what each worker is running, for heartbeats
	hold     holding
	suspects suspects
	records  records
	execs    execRecords
	workers  sync.WaitGroup
	// background runs Start's asynchronous work; Stop waits for it.
	background sync.WaitGroup
	beat       chan struct{} // closed to stop the heartbeat goroutine
	beatDone   chan struct{}
	stopOnce   sync.Once
	end        lifecycle.End // Done and Err

	// handlerCtx is the parent of every handler's ctx; cancelled (and
	// abort closed) when a graceful stop runs out of time.
	handlerCtx context.Context
	cancel     context.CancelFunc
	abort      chan struct{}
	abortOnce  sync.Once

	// Pulling stops while paused has a reason bit set (see pause).
	pauseMu   sync.Mutex
	paused    uint32
	subPtr    atomic.Pointer[bus.Subscriber]
	isWedged  atomic.Bool
	unparking unparking
	parker    parker
	unparkNow chan struct{} // wakes unparkLoop
}

// job is a delivery, with its envelope once parsed and what is known of
// its task's attempts once accounted.
type job struct {
	d    *bus.Delivery
	env  *envelope.Envelope
	acct accounting
	turn bool // it has the suspects' turn (see suspects)
}

// New returns a runtime for cfg.Agent on conn. It validates cfg and returns
// an error naming the bad setting; it does not contact the server (Start
// does). The topology must have been provisioned (see bus.Provision).
func New(conn *bus.Conn, cfg Config) (*Runtime, error) {
	full := cfg.withDefaults()
	if err := full.validate(cfg); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Runtime{
		cfg:         full,
		conn:        conn,
		pub:         bus.NewPublisher(conn.JetStream()),
		dlq:         dlq.NewStore(conn.JetStream(), full.Topology),
		replica:     strings.ToLower(envelope.NewID()[16:]),
		taskPrefix:  strings.TrimSuffix(full.Topology.AgentTasks(full.Agent), ">"),
		ownPrefix:   strings.TrimSuffix(full.Topology.ReplySubject(""), "replies."),
		replyPrefix: full.Topology.ReplySubject(""),
		tracer:      tracerOf(full.TracerProvider),
		handlers:    make(map[envelope.PayloadType]Handler),
		handlerCtx:  ctx,
		cancel:      cancel,
		abort:       make(chan struct{}),
		unparkNow:   make(chan struct{}, 1),
	}
	r.hold.bySubject = make(map[string]*heldSubject)
	r.records.rt = r
	r.execs.init(r)
	rules := make([]resilience.BreakerRule, len(full.BreakerRules))
	for i, rule := range full.BreakerRules {
		rules[i] = resilience.BreakerRule{Pattern: rule.Pattern, Settings: r.breakerSettings(rule.Settings)}
	}
	r.breakers = resilience.NewBreakerRegistry(r.breakerSettings(full.Breaker), rules...)
	return r, nil
}

// breakerSettings chains the runtime's state-change hook before the user's.
func (r *Runtime) breakerSettings(s resilience.BreakerSettings) resilience.BreakerSettings {
	user := s.OnStateChange
	s.OnStateChange = func(name string, from, to resilience.State) {
		r.cfg.Logger.Warn("circuit breaker "+to.String(), "agent", r.cfg.Agent, "subject", name, "from", from.String())
		if r.cfg.Observer != nil {
			r.cfg.Observer.BreakerChanged(name, to)
		}
		if user != nil {
			user(name, from, to)
		}
	}
	return s
}

// Agent returns the agent's name.
func (r *Runtime) Agent() string { return r.cfg.Agent }

// Breakers returns the registry of the runtime's per-subject breakers
// (to read their states, e.g. for metrics).
func (r *Runtime) Breakers() *resilience.BreakerRegistry { return r.breakers }

// Handle registers h for envelopes of payload type typ. It must be called
// before Start. It panics when typ is not a valid payload type, h is nil,
// typ already has a handler, or the runtime has started: these are
// programming errors, like registering a pattern twice on an http.ServeMux.
func (r *Runtime) Handle(typ envelope.PayloadType, h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !typ.Valid():
		panic(fmt.Sprintf("runtime: Handle: invalid payload type %q", typ))
	case h == nil:
		panic("runtime: Handle: nil handler for " + string(typ))
	case r.handlers[typ] != nil:
		panic("runtime: Handle: payload type " + string(typ) + " already has a handler")
	case r.started || r.stopped:
		panic("runtime: Handle called after Start")
	}
	r.handlers[typ] = h
}

// Start creates or updates the agent's durable consumer, starts the workers
// and begins pulling; it returns once tasks flow. It returns the consumer
// error from the server (wrapped), ErrStarted or ErrStopped.
func (r *Runtime) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	if r.started {
		return ErrStarted
	}
	sub, err := bus.NewSubscriber(ctx, r.conn.JetStream(), r.cfg.Topology.TasksStream(), r.serverConsumer(), r.cfg.Logger)
	if err != nil {
		return fmt.Errorf("runtime %s: %w", r.cfg.Agent, err)
	}
	r.snapshots = r.cfg.Snapshots
	if r.snapshots == nil {
		// Opens nothing yet: the agent's bucket is ensured on first use.
		kv, err := snapshot.NewKV(r.conn.JetStream(), r.cfg.Topology)
		if err != nil {
			return fmt.Errorf("runtime %s: %w", r.cfg.Agent, err)
		}
		r.snapshots = &ownSnapshots{kv: kv, agent: r.cfg.Agent, rt: r}
	}
	for typ, h := range r.controlHandlers() {
		if r.handlers[typ] == nil {
			r.handlers[typ] = h
		}
	}
	if !r.cfg.DisableSweeper {
		r.sweeper = r.startSweeper(ctx)
	}
	r.queue = newQueue()
	r.slots = make([]slot, r.cfg.Concurrency)
	for i := range r.cfg.Concurrency {
		r.workers.Add(1)
		go r.worker(&r.slots[i])
	}
	r.beat, r.beatDone = make(chan struct{}), make(chan struct{})
	go r.heartbeats()
	// Every delivery the replica holds may be handed to the parker at once.
	r.parker.jobs = make(chan parkJob, r.cfg.Concurrency+r.cfg.Consumer.Prefetch+1)
	r.parker.done = make(chan struct{})
	r.background.Go(r.parkLoop)
	r.execs.start(ctx) // before the first delivery: re-sends waiting in the stream are recognised
	r.subPtr.Store(sub)
	if err := sub.Start(r.enqueue); err != nil {
		if r.sweeper != nil {
			_ = r.sweeper.Stop(ctx)
		}
		r.queue.close()
		r.workers.Wait()
		r.closeParker(ctx)
		r.execs.stop()
		close(r.beat)
		<-r.beatDone
		return fmt.Errorf("runtime %s: %w", r.cfg.Agent, err)
	}
	r.sub, r.started = sub, true
	r.background.Go(func() { r.watchPull(sub) })
	if sw := r.sweeper; sw != nil {
		r.background.Go(func() { r.watchSweeper(sw) })
	}
	r.cfg.Logger.Info("agent started", "agent", r.cfg.Agent, "concurrency", r.cfg.Concurrency, "prefetch", r.cfg.Consumer.Prefetch,
		"ack_wait", r.cfg.Consumer.AckWait, "max_deliver", r.cfg.Consumer.MaxDeliver)
	r.background.Go(func() { r.records.open(context.Background()) }) // so that the first redelivery finds it open
	r.background.Go(r.sweepStranded)
	r.background.Go(r.unparkLoop)
	return nil
}

// watchPull ends the runtime (Done, with Err) when its pull ends without
// Stop. Stop's own end of the subscriber leaves its Err nil.
func (r *Runtime) watchPull(sub *bus.Subscriber) {
	<-sub.Done()
	err := sub.Err()
	if err == nil {
		return
	}
	err = fmt.Errorf("runtime %s: %w: %w", r.cfg.Agent, ErrPullEnded, err)
	r.cfg.Logger.Error("the agent takes no more tasks: its pull ended", "agent", r.cfg.Agent, "err", err)
	r.end.Close(err)
}

// watchSweeper logs when the sweeper ends without Stop. The runtime goes
// on: it dead-letters the tasks that exhaust their attempts itself, as it
// does when no sweeper could start.
func (r *Runtime) watchSweeper(sw *dlq.Sweeper) {
	select {
	case <-sw.Done():
		if err := sw.Err(); err != nil {
			r.cfg.Logger.Warn("no more sweeping of MAX_DELIVERIES advisories (the runtime dead-letters tasks that exhaust their attempts itself)",
				"agent", r.cfg.Agent, "err", err)
		}
	case <-r.beat: // stopping
	}
}

// strandedEvery is how often a runtime looks for tasks the server stopped
// delivering (see dlq.SweepStranded).
const strandedEvery = time.Minute

// sweepStranded dead-letters, at start and then every strandedEvery until
// Stop, the agent's tasks that a MaxDeliver the consumer had (an older
// version, another replica's settings) left in the work queue without an
// advisory swept: with the sweeper off or the advisories stream down,
// they would stay there for ever.
func (r *Runtime) sweepStranded() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-r.beat:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(r.handlerCtx, 30*time.Second)
		n, err := dlq.SweepStranded(ctx, r.conn.JetStream(), r.cfg.Topology, r.cfg.Agent, r.Consumer())
		cancel()
		switch {
		case err != nil:
			r.cfg.Logger.Warn("looking for stranded tasks failed; will try again", "agent", r.cfg.Agent, "err", err)
		case n > 0:
			r.cfg.Logger.Warn("dead-lettered tasks the server had stopped delivering", "agent", r.cfg.Agent, "tasks", n)
		}
		t.Reset(strandedEvery)
	}
}

// serverConsumer is the consumer the runtime asks the server for: the
// configured one, except that the server never stops redelivering (the
// runtime counts attempts itself, see attempts.go), and each replica's
// window is its Concurrency plus its Prefetch.
func (r *Runtime) serverConsumer() bus.ConsumerConfig {
	c := r.cfg.Consumer
	c.MaxDeliver = bus.UnlimitedDeliveries
	c.Window = r.cfg.Concurrency + c.Prefetch
	return c
}

// startSweeper starts the agent's sweeper of MAX_DELIVERIES advisories; it
// only matters for consumers that another process configured with a
// MaxDeliver. Without the advisories stream it logs and runs none: the
// runtime counts attempts itself.
func (r *Runtime) startSweeper(ctx context.Context) *dlq.Sweeper {
	sw, err := dlq.NewSweeper(ctx, r.conn.JetStream(), r.cfg.Topology, r.cfg.Agent, r.cfg.Logger)
	if err == nil {
		sw.OnDeadLettered = func(_ context.Context, rec *dlq.Record) {
			var env envelope.Envelope
			if envelope.Unmarshal(rec.Data, &env) == nil {
				r.releaseClaim(taskIDOf(&env))
			}
		}
		err = sw.Start(ctx)
	}
	if err != nil {
		r.cfg.Logger.Warn("no sweeper of MAX_DELIVERIES advisories (the runtime dead-letters tasks that exhaust their attempts itself)",
			"agent", r.cfg.Agent, "err", err)
		return nil
	}
	return sw
}

// enqueue runs on the subscriber's goroutine. It never blocks (see
// queue); once stopping, it hands the delivery back.
func (r *Runtime) enqueue(d *bus.Delivery) {
	if r.aborting() || !r.queue.push(job{d: d}) {
		r.returnUnrun(&job{d: d})
	}
}

// worker runs queued deliveries until the queue is closed and empty.
func (r *Runtime) worker(s *slot) {
	defer r.workers.Done()
	for {
		j, ok := r.queue.pop()
		if !ok {
			return
		}
		r.process(s, j)
	}
}

// Run starts the runtime, blocks until ctx ends or the runtime ends on its
// own (see Done), then stops gracefully within ShutdownTimeout. It
// returns Start's error, or Err and Stop's (joined).
func (r *Runtime) Run(ctx context.Context) error {
	if err := r.Start(ctx); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-r.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), r.cfg.ShutdownTimeout)
	defer cancel()
	serr := r.Stop(sctx)
	return errors.Join(r.Err(), serr)
}

// Done returns a channel closed once the runtime has ended: when Stop
// returns, or as soon as its pull ends for good without Stop (see Err).
// It is not closed before Start, nor while the runtime takes tasks.
func (r *Runtime) Done() <-chan struct{} { return r.end.Done() }

// Err returns why the runtime ended on its own once Done is closed: an
// error wrapping ErrPullEnded (and the subscriber's reason, such as
// bus.ErrConsumerGone). It is nil while the runtime runs and when Stop
// ended it. After such an end, call Stop still: it lets the handlers in
// hand finish and releases the rest.
func (r *Runtime) Err() error { return r.end.Err() }

// Stop shuts the runtime down gracefully: it stops pulling, hands the
// deliveries it has not started (queued, or held by open breakers) back
// for immediate redelivery to another replica, lets the running handlers
// finish and settle (replies published), and returns when they have. When ctx ends first,
// handlers' contexts are cancelled and every delivery not yet settled is
// handed back; Stop then returns ctx's error (after at most a second more
// for handlers that ignore their ctx; their deliveries are redelivered
// after AckWait). Before Start it returns nil, and the runtime can no
// longer start; a later Stop waits for the first to return and returns
// nil. Done is closed when Stop returns.
func (r *Runtime) Stop(ctx context.Context) error {
	var err error
	r.stopOnce.Do(func() {
		err = r.stop(ctx)
		r.end.Close(nil) // a no-op when the pull had ended: its error stays
	})
	return err
}

func (r *Runtime) stop(ctx context.Context) error {
	r.mu.Lock()
	sub := r.sub
	r.stopped = true
	r.mu.Unlock()
	if sub == nil {
		r.hardStop()
		return nil
	}
	err := sub.Stop(ctx)
	if err != nil {
		r.hardStop()
	}
	<-sub.Done()   // the subscriber's callback has returned for good
	r.hold.close() // no more releases; held deliveries are handed back below
	// Deliveries not started yet go back at once, for another replica to
	// take now rather than after this one has worked through its queue.
	r.returnAll(append(r.queue.drain(), r.suspects.drain()...))
	r.queue.close()
	done := make(chan struct{})
	go func() { r.workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.hardStop()
		select {
		case <-done:
		case <-time.After(time.Second):
			r.cfg.Logger.Error("handlers ignored cancellation at shutdown; their tasks will be redelivered after AckWait", "agent", r.cfg.Agent)
		}
		err = ctx.Err()
	}
	r.closeParker(ctx) // the workers are done: nothing more is parked
	r.execs.stop()     // nor recorded: the last batch is stored, its tasks acked
	close(r.beat)
	<-r.beatDone
	if r.sweeper != nil {
		if serr := r.sweeper.Stop(ctx); serr != nil && err == nil {
			err = serr
		}
	}
	r.returnAll(append(append(r.hold.drain(), r.queue.drain()...), r.suspects.drain()...))
	r.background.Wait()
	r.cancel()
	r.cfg.Logger.Info("agent stopped", "agent", r.cfg.Agent)
	if err != nil {
		return fmt.Errorf("runtime %s: stop: %w", r.cfg.Agent, err)
	}
	return nil
}

func (r *Runtime) hardStop() {
	r.abortOnce.Do(func() {
		close(r.abort)
		r.cancel()
	})
}

func (r *Runtime) aborting() bool {
	select {
	case <-r.abort:
		return true
	default:
		return false
	}
}

// Stats returns the runtime's counters.
func (r *Runtime) Stats() Stats {
	return Stats{
		Received:     r.stats.received.Load(),
		Succeeded:    r.stats.succeeded.Load(),
		Retried:      r.stats.retried.Load(),
		DeadLettered: r.stats.deadLettered.Load(),
		Returned:     r.stats.returned.Load(),
		Panics:       r.stats.panics.Load(),
		Held:         r.stats.held.Load(),
		Holding:      uint64(r.hold.count()),
		Queued:       uint64(r.queueLen()),
		Suspects:     uint64(r.suspects.count()),
		Skipped:      r.stats.skipped.Load(),
		Parked:       r.stats.parked.Load(),
		Heartbeats:   r.stats.heartbeats.Load(),
		Cancelled:    r.stats.cancelled.Load(),
		Duplicates:   r.stats.duplicates.Load(),
		Abandoned:    r.stats.abandoned.Load(),

		UnstoredReplies: r.stats.unstoredReplies.Load(),
		Unrecorded:      r.stats.unrecorded.Load(),
		ReplyFailed:     r.stats.replyFailed.Load(),
	}
}

func (r *Runtime) queueLen() int {
	r.mu.Lock()
	q := r.queue
	r.mu.Unlock()
	if q == nil {
		return 0
	}
	return q.len()
}

// SubscriberStats returns the pull machinery's counters (zero before Start).
func (r *Runtime) SubscriberStats() bus.SubscriberStats {
	r.mu.Lock()
	sub := r.sub
	r.mu.Unlock()
	if sub == nil {
		return bus.SubscriberStats{}
	}
	return sub.Stats()
}

// Consumer returns the agent's JetStream consumer (nil before Start), e.g.
// for its Info.
func (r *Runtime) Consumer() jetstream.Consumer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sub == nil {
		return nil
	}
	return r.sub.Consumer()
}
