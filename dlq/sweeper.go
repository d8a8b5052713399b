package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/nats-io/nats.go/jetstream"
)

// maxDeliveriesAdvisory is the part of the server's MAX_DELIVERIES
// advisory the sweeper reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`

	why string // the dead letter's error, when not the advisory's
}

// Sweeper is the safety net for poison messages that never reach a
// disposition: a task that crashes or hangs its agent on every delivery is
// never settled, and after MaxDeliver deliveries the server stops
// delivering it and publishes a MAX_DELIVERIES advisory. The sweeper reads
// those advisories (captured by the advisories stream), fetches the task
// by its stream sequence, dead-letters it with ReasonMaxDeliveries and
// removes it from the tasks stream. Replicas of one agent share the
// sweeper's durable consumer.
//
// Advisories are messages like any other: anyone allowed to publish on
// $JS.EVENT.ADVISORY.> can write one. So the sweeper believes an advisory
// only when the server agrees: it must name the tasks stream and this
// agent's consumer, the message at its sequence must be on this agent's
// task subjects, and the consumer must have delivered that message (its
// delivered sequence is at least the advisory's) as many times as its
// MaxDeliver. Any other advisory is refused (logged, counted in Swept)
// and moves nothing.
type Sweeper struct {
	js    jetstream.JetStream
	topo  bus.Topology
	agent string
	store *Store
	log   *slog.Logger

	cons jetstream.Consumer

	mu       sync.Mutex
	started  bool
	stopped  bool
	cc       jetstream.ConsumeContext
	lastErr  error         // the last error the pull machinery reported; under mu
	watched  chan struct{} // closed when the watcher of cc has returned
	stopOnce sync.Once
	end      lifecycle.End

	// OnDeadLettered, when set before Start, is called with each task the
	// sweeper dead-lettered (the runtime releases its step claim, so that
	// a replay of it runs).
	OnDeadLettered func(ctx context.Context, rec *Record)

	consumeErr chan struct{} // a consume error came: the watcher asks whether the consumer is gone

	swept, gone, refused atomic.Uint64
}

// consumerGone asks the server whether the advisories consumer exists
// ($JS.API.CONSUMER.INFO.<advisories>.<agent>_sweeper, docs/security.md);
// when it (or its stream) does not, it stops cc, recording why, and
// reports true. An unanswered or refused question is no answer: the next
// consume error asks again.
func (s *Sweeper) consumerGone(cc jetstream.ConsumeContext) bool {
	ctx, cancel := context.WithTimeout(context.Background(), goneCheckTimeout)
	defer cancel()
	_, err := s.cons.Info(ctx)
	if !bus.IsConsumerGone(err) {
		return false
	}
	s.mu.Lock()
	s.lastErr = fmt.Errorf("%w (the server says: %w)", jetstream.ErrConsumerDeleted, err)
	s.mu.Unlock()
	cc.Stop()
	return true
}

// errNotBelieved marks an advisory the server's state contradicts.
var errNotBelieved = errors.New("dlq: sweeper: advisory contradicted by the server")

// NewSweeper creates (or joins) the durable consumer of agent's
// MAX_DELIVERIES advisories. A nil logger discards logs.
func NewSweeper(ctx context.Context, js jetstream.JetStream, topo bus.Topology, agent string, logger *slog.Logger) (*Sweeper, error) {
	if err := bus.ValidateName(agent); err != nil {
		return nil, fmt.Errorf("dlq: sweeper: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, topo.AdvisoriesStream(), jetstream.ConsumerConfig{
		Durable:       agent + "_sweeper",
		Description:   "jetagent: dead-letters " + agent + "'s tasks that exceeded MaxDeliver",
		FilterSubject: topo.MaxDeliveriesAdvisories(agent),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    -1, // an advisory is retried until its task is safely in the DLQ
		BackOff:       nil,
	})
	if err != nil {
		return nil, fmt.Errorf("dlq: sweeper for %s: %w", agent, err)
	}
	return &Sweeper{js: js, topo: topo, agent: agent, store: NewStore(js, topo), log: logger, cons: cons,
		consumeErr: make(chan struct{}, 1)}, nil
}

// Start begins sweeping in the background; Stop ends it. ctx is not
// used: starting sends one pull request and waits for nothing. It returns
// the consumer's error (wrapped), ErrSweeperStarted or ErrSweeperStopped.
// When consuming ends without Stop (the advisories consumer or stream was
// deleted, the connection closed), Done is closed and Err says why.
func (s *Sweeper) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return ErrSweeperStopped
	case s.started:
		return ErrSweeperStarted
	}
	cc, err := s.cons.Consume(s.handle, jetstream.PullMaxMessages(16), jetstream.PullExpiry(5*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			s.mu.Lock()
			s.lastErr = err
			s.mu.Unlock()
			select {
			case s.consumeErr <- struct{}{}: // the watcher asks the server
			default:
			}
		}))
	if err != nil {
		return fmt.Errorf("dlq: sweeper for %s: %w", s.agent, err)
	}
	s.cc, s.started, s.watched = cc, true, make(chan struct{})
	go s.watch(cc)
	return nil
}

// goneCheckTimeout bounds the question whether the consumer exists.
const goneCheckTimeout = 2 * time.Second

// watch ends the sweeper (Done, with Err) when consuming ends without
// Stop, or when, after a consume error, the server says the consumer (or
// its stream) is gone: a consumer deleted before the first pull request
// reached it sends no status, only "no responders" to each pull, which a
// JetStream that is restarting sends too, and consuming would go on
// pulling forever.
func (s *Sweeper) watch(cc jetstream.ConsumeContext) {
	defer close(s.watched)
	for gone := false; !gone; {
		select {
		case <-cc.Closed():
			gone = true
			s.mu.Lock()
			named := errors.Is(s.lastErr, jetstream.ErrConsumerDeleted)
			stopped := s.stopped
			s.mu.Unlock()
			if !named && !stopped {
				s.consumerGone(cc) // ended on "no responders" (its stream deleted?): ask the server why
			}
		case <-s.consumeErr:
			gone = s.consumerGone(cc)
		}
	}
	<-cc.Closed()
	s.mu.Lock()
	stopped, cause := s.stopped, s.lastErr
	s.mu.Unlock()
	if stopped {
		return
	}
	err := fmt.Errorf("dlq: sweeper for %s: %w", s.agent, ErrSweeperEnded)
	if cause != nil {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	s.log.Warn("the sweeper of MAX_DELIVERIES advisories ended", "agent", s.agent, "err", err)
	s.end.Close(err)
}

// Stop stops sweeping and waits (up to ctx) for the advisory in hand;
// when ctx ends first it returns ctx's error (wrapped), and the advisory
// in hand is redelivered. Before Start it returns nil, and the sweeper can
// no longer start; a later Stop waits for the first to return and returns
// nil. Done is closed when Stop returns.
func (s *Sweeper) Stop(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		err = s.stop(ctx)
		s.end.Close(nil) // a no-op when consuming had ended: its error stays
	})
	return err
}

func (s *Sweeper) stop(ctx context.Context) error {
	s.mu.Lock()
	cc, watched := s.cc, s.watched
	s.stopped = true
	s.mu.Unlock()
	if cc == nil {
		return nil
	}
	cc.Drain()
	select {
	case <-watched: // cc is closed, and the watcher saw Stop
		return nil
	case <-ctx.Done():
		cc.Stop() // the watcher returns once the advisory in hand is settled
		return fmt.Errorf("dlq: sweeper: %w", ctx.Err())
	}
}

// Done returns a channel closed once the sweeper has ended: when Stop
// returns, or as soon as consuming ends without Stop (see Err).
func (s *Sweeper) Done() <-chan struct{} { return s.end.Done() }

// Err returns why the sweeper ended on its own, once Done is closed: an
// error wrapping ErrSweeperEnded (and the pull machinery's last error,
// such as jetstream.ErrConsumerDeleted). It is nil while the sweeper runs
// and when Stop ended it.
func (s *Sweeper) Err() error { return s.end.Err() }

// Swept returns how many tasks the sweeper dead-lettered, and how many
// advisories named a task already gone (settled after all).
func (s *Sweeper) Swept() (deadLettered, gone uint64) { return s.swept.Load(), s.gone.Load() }

// Refused returns how many advisories the sweeper did not believe (see
// Sweeper): forged, or about another agent's tasks.
func (s *Sweeper) Refused() uint64 { return s.refused.Load() }

func (s *Sweeper) handle(m jetstream.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(m.Data(), &adv); err != nil || adv.StreamSeq == 0 {
		s.log.Error("unreadable MAX_DELIVERIES advisory dropped", "err", err)
		_ = m.Term()
		return
	}
	err := s.sweep(ctx, adv)
	switch {
	case errors.Is(err, errNotBelieved):
		s.refused.Add(1)
		s.log.Warn("MAX_DELIVERIES advisory refused: the server's state contradicts it (forged, or not this agent's task)",
			"agent", s.agent, "stream", adv.Stream, "consumer", adv.Consumer, "stream_seq", adv.StreamSeq, "err", err)
		_ = m.Term()
	case err != nil:
		s.log.Error("sweeping a task that exceeded MaxDeliver failed; will retry", "agent", s.agent, "stream_seq", adv.StreamSeq, "err", err)
		_ = m.NakWithDelay(time.Second)
	default:
		_ = m.Ack()
	}
}

// sweep dead-letters the task named by adv, then deletes it from the
// tasks stream. Safe to repeat: the dead letter's id is derived from the
// task's stream sequence.
func (s *Sweeper) sweep(ctx context.Context, adv maxDeliveriesAdvisory) error {
	if adv.Stream != s.topo.TasksStream() || adv.Consumer != s.agent {
		return fmt.Errorf("%w: it names %s/%s, this sweeper's consumer is %s/%s", errNotBelieved, adv.Stream, adv.Consumer, s.topo.TasksStream(), s.agent)
	}
	st, err := s.js.Stream(ctx, adv.Stream)
	if err != nil {
		return err
	}
	msg, err := st.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		s.gone.Add(1) // settled or removed meanwhile: nothing to do
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.believe(ctx, adv, msg.Subject); err != nil {
		return err
	}
	rec := &Record{
		Data:         msg.Data,
		Header:       msg.Header,
		Reason:       ReasonMaxDeliveries,
		Error:        fmt.Sprintf("max deliveries exceeded: delivered %d times to %s and never settled (the agent crashed or hung on it)", adv.Deliveries, adv.Consumer),
		Agent:        s.agent,
		Subject:      msg.Subject,
		Stream:       adv.Stream,
		Sequence:     adv.StreamSeq,
		Deliveries:   adv.Deliveries,
		FirstFailure: msg.Time,
		LastFailure:  time.Now().UTC(),
	}
	if adv.why != "" {
		rec.Error = adv.why
	}
	var env envelope.Envelope
	if envelope.Unmarshal(msg.Data, &env) == nil {
		rec.TraceID = env.TraceID
	}
	if _, err := s.store.Publish(ctx, rec); err != nil {
		return err
	}
	if err := st.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("dead-lettered, but not removed from %s: %w", adv.Stream, err)
	}
	s.swept.Add(1)
	if s.OnDeadLettered != nil {
		s.OnDeadLettered(ctx, rec)
	}
	s.log.Warn("dead-lettered a task that exceeded MaxDeliver", "agent", s.agent, "subject", msg.Subject, "stream_seq", adv.StreamSeq, "deliveries", adv.Deliveries)
	return nil
}

// strandedSettle is how long a task seen stranded must stay so before
// SweepStranded files it: an acknowledgement leaves the consumer's pending
// set a moment before the work queue deletes the message.
const strandedSettle = 2 * time.Second

// SweepStranded dead-letters the tasks of agent that the server stopped
// delivering and that no advisory swept: a MaxDeliver the consumer cons
// had (an older version's, another replica's settings) was exhausted
// while the advisories stream was down or no sweeper ran, and the task
// stays in the work queue for ever. It looks only while the consumer has
// nothing unacknowledged (then every task it delivered and that is still
// stored is such a task), checks each again strandedSettle later, files it
// with ReasonMaxDeliveries and removes it from the tasks stream. It needs
// no advisory, and is safe to run from several replicas at once (a dead
// letter's id derives from the task's sequence). It returns how many it
// swept, and the first error.
func SweepStranded(ctx context.Context, js jetstream.JetStream, topo bus.Topology, agent string, cons jetstream.Consumer) (int, error) {
	candidates, err := strandedTasks(ctx, js, topo, agent, cons)
	if err != nil || len(candidates) == 0 {
		return 0, err
	}
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(strandedSettle):
	}
	again, err := strandedTasks(ctx, js, topo, agent, cons)
	if err != nil {
		return 0, err
	}
	still := make(map[uint64]bool, len(again))
	for _, seq := range again {
		still[seq] = true
	}
	s := &Sweeper{js: js, topo: topo, agent: agent, store: NewStore(js, topo), log: slog.New(slog.DiscardHandler)}
	swept := 0
	for _, seq := range candidates {
		if !still[seq] {
			continue
		}
		if err := s.sweep(ctx, maxDeliveriesAdvisory{Stream: topo.TasksStream(), Consumer: agent, StreamSeq: seq,
			why: "max deliveries exceeded: the server stopped delivering it to " + agent +
				" (a MaxDeliver the consumer had was reached, never settled: the agent crashed or hung on it), and no advisory swept it",
		}); err != nil {
			return swept, err
		}
		swept++
	}
	return swept, nil
}

// strandedTasks returns the stream sequences of agent's tasks that cons
// delivered and no longer holds, while it holds none (see SweepStranded).
func strandedTasks(ctx context.Context, js jetstream.JetStream, topo bus.Topology, agent string, cons jetstream.Consumer) ([]uint64, error) {
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dlq: stranded tasks of %s: %w", agent, err)
	}
	if info.NumAckPending > 0 || info.Delivered.Stream == 0 {
		return nil, nil
	}
	st, err := js.Stream(ctx, topo.TasksStream())
	if err != nil {
		return nil, fmt.Errorf("dlq: stranded tasks of %s: %w", agent, err)
	}
	var out []uint64
	for seq := uint64(1); seq <= info.Delivered.Stream; {
		msg, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(topo.AgentTasks(agent)))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("dlq: stranded tasks of %s: %w", agent, err)
		}
		if msg.Sequence > info.Delivered.Stream {
			break // not delivered yet: still the consumer's
		}
		out = append(out, msg.Sequence)
		seq = msg.Sequence + 1
	}
	return out, nil
}

// believe checks adv against the server: the task at its sequence, on
// subject, must be one of this agent's, and the agent's consumer must have
// delivered it, as often as it may. It returns an error wrapping
// errNotBelieved when the server contradicts adv, or the request's error.
func (s *Sweeper) believe(ctx context.Context, adv maxDeliveriesAdvisory, subject string) error {
	prefix := strings.TrimSuffix(s.topo.AgentTasks(s.agent), ">")
	if !strings.HasPrefix(subject, prefix) {
		return fmt.Errorf("%w: task %d is on %s, not one of %s's subjects", errNotBelieved, adv.StreamSeq, subject, s.agent)
	}
	cons, err := s.js.Consumer(ctx, adv.Stream, s.agent)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("%w: consumer %s does not exist", errNotBelieved, s.agent)
	}
	if err != nil {
		return err
	}
	info := cons.CachedInfo()
	if info.Delivered.Stream < adv.StreamSeq {
		return fmt.Errorf("%w: consumer %s has delivered up to task %d, not %d", errNotBelieved, s.agent, info.Delivered.Stream, adv.StreamSeq)
	}
	if max := info.Config.MaxDeliver; max > 0 && adv.Deliveries < uint64(max) {
		return fmt.Errorf("%w: %d deliveries, below the consumer's MaxDeliver %d", errNotBelieved, adv.Deliveries, max)
	}
	return nil
}
