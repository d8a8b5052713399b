package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// replayMark is what the replays bucket records for a replayed entry.
type replayMark struct {
	Count int       `json:"count"`
	At    time.Time `json:"at"`
	To    string    `json:"to"`
	MsgID string    `json:"msg_id"`
	// State is markReserved from before the task is published until it is
	// stored, then markSettled ("" in marks of older versions: settled).
	State string `json:"state,omitempty"`
	rev   uint64 // the mark's revision, as read
}

// markKey is the replays bucket key of e: <agent>.<DLQ sequence>, so that
// listing one agent's dead letters reads that agent's marks only.
func (s *Store) markKey(e *Entry) string {
	agent, ok := s.topo.DLQAgent(e.DLQSubject)
	if !ok {
		agent = "_"
	}
	return agent + "." + strconv.FormatUint(e.Seq, 10)
}

// mark reads the replay mark of e, the zero mark when there is none.
func (s *Store) mark(ctx context.Context, e *Entry) (replayMark, error) {
	var m replayMark
	kv, err := s.replaysBucket(ctx, false)
	if err != nil || kv == nil {
		return m, err
	}
	v, err := kv.Get(ctx, s.markKey(e))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return m, nil
	case err != nil:
		return m, fmt.Errorf("dlq: replays bucket: %w", err)
	}
	_ = json.Unmarshal(v.Value(), &m) // a mark that does not parse counts as none
	m.rev = v.Revision()
	return m, nil
}

// replaysBucket returns the replays bucket; a missing bucket (a server
// provisioned by an older version) is created when create is set, and
// reported as nil otherwise.
func (s *Store) replaysBucket(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	kv, err := s.js.KeyValue(ctx, s.topo.ReplaysBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if !create {
			return nil, nil
		}
		kv, err = s.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: s.topo.ReplaysBucket(), History: 1, Replicas: max(s.topo.Replicas, 1),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: replays bucket: %w", err)
	}
	return kv, nil
}

// replayMarks reads the replay marks of agent's entries (of every entry
// when agent is ""), by entry sequence.
func (s *Store) replayMarks(ctx context.Context, agent string) (map[uint64]replayMark, error) {
	kv, err := s.replaysBucket(ctx, false)
	if err != nil || kv == nil {
		return map[uint64]replayMark{}, err
	}
	keys := ">"
	if agent != "" {
		keys = agent + ".>"
	}
	w, err := kv.Watch(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("dlq: replays bucket: %w", err)
	}
	defer w.Stop()
	marks := make(map[uint64]replayMark)
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // initial values done
				return marks, nil
			}
			key := e.Key()
			seq, err := strconv.ParseUint(key[strings.LastIndexByte(key, '.')+1:], 10, 64)
			if err != nil {
				continue
			}
			var m replayMark
			_ = json.Unmarshal(e.Value(), &m) // a mark that does not parse counts as none
			m.rev = e.Revision()
			marks[seq] = m
		case <-ctx.Done():
			return nil, fmt.Errorf("dlq: replays bucket: %w", ctx.Err())
		}
	}
}

// ReplayOptions configure Replay.
type ReplayOptions struct {
	// To sends every entry to this subject instead of its original one.
	To string
	// Force replays entries replayed before (each replay is a new task).
	// Without it an entry is replayed at most once, even by concurrent
	// replays.
	Force bool
	// DryRun reports what would be replayed and publishes nothing.
	DryRun bool
	// Rate bounds replays per second. Zero: as fast as the server acks.
	Rate float64
	// Progress, when set, is called after each entry with its outcome.
	Progress func(e *Entry, outcome Outcome, err error)
}

// Outcome is what Replay did with one entry.
type Outcome int

// Outcomes.
const (
	Replayed        Outcome = iota // published as a new task
	AlreadyReplayed                // skipped: replayed before and not forced
	WouldReplay                    // dry run
	Failed                         // the publish or the mark failed
	// InDoubt: the task was published and the server never said whether
	// it stored it (its acknowledgement did not come). The entry stays
	// marked replayed, so no later replay repeats it without Force.
	InDoubt
)

var outcomeNames = [...]string{"replayed", "already replayed", "would replay", "failed", "in doubt"}

// String names the outcome.
func (o Outcome) String() string { return outcomeNames[o] }

// ReplayResult counts Replay's outcomes.
type ReplayResult struct {
	Replayed, Skipped, WouldReplay, Failed int
	// InDoubt counts entries whose task was published and the server
	// never said whether it stored it (the replay stopped first, or the
	// acknowledgement did not come): they stay marked replayed
	// (reserved), so no later replay repeats them without Force.
	InDoubt int
}

// replayWindow is how many publishes Replay keeps in flight per stage.
const replayWindow = 512

// replayGrace bounds how long a stopped Replay waits for the server's
// answers to what it already sent, to settle or undo their marks.
const replayGrace = 5 * time.Second

// paceDrain is the wait for a rate's next turn before which a replay lets
// what it has in flight finish: at rates up to 50 a second (a few round
// trips per turn), not at higher ones, where the pipeline keeps them fast.
const paceDrain = 20 * time.Millisecond

// Mark states: a replay reserves an entry's mark before publishing its
// task, and settles it once the task is stored.
const (
	markReserved = "reserved"
	markSettled  = "replayed"
)

// Replay publishes each entry's original message again, as a new task
// (a new Nats-Msg-Id, so the duplicate window does not drop it), with
// HeaderReplayOf naming the entry, to its original subject or opts.To.
// Entries stay in the DLQ (purge them when done).
//
// An entry is replayed at most once unless opts.Force: before its task is
// published, the entry's mark in the replays bucket is reserved with a
// compare-and-set, so of two replays racing on an entry only the one that
// reserved it publishes (the other reports it AlreadyReplayed); once the
// task is stored the mark is settled; when the publish definitely failed
// the reservation is undone, so a later replay tries again. When ctx ends,
// Replay stops publishing, waits (at most replayGrace) for the answers to
// what it sent, settles or undoes those marks, and counts the rest
// InDoubt: a task that may have been stored keeps its reservation.
//
// Publishes are pipelined (reservations, tasks and settlements each keep
// up to replayWindow in flight); opts.Rate paces the tasks. Failed entries
// are counted, not fatal. The error is ctx's (or the rate limiter's), or
// the joined failures.
func (s *Store) Replay(ctx context.Context, entries []*Entry, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	if _, err := s.replaysBucket(ctx, !opts.DryRun); err != nil {
		return res, err
	}
	var lim *rate.Limiter
	if opts.Rate > 0 {
		// A burst of 50ms worth keeps high rates accurate (timers cannot
		// sleep 250µs precisely) without bursting low ones.
		lim = rate.NewLimiter(rate.Limit(opts.Rate), max(1, int(opts.Rate/20)))
	}
	p := &pipeline{s: s, ctx: ctx, to: opts.To, markSubject: "$KV." + s.topo.ReplaysBucket() + "."}
	p.report = func(e *Entry, o Outcome, err error) {
		switch o {
		case Replayed:
			res.Replayed++
		case AlreadyReplayed:
			res.Skipped++
		case WouldReplay:
			res.WouldReplay++
		case Failed:
			res.Failed++
			p.errs = append(p.errs, err)
		case InDoubt:
			res.InDoubt++
			p.errs = append(p.errs, err)
		}
		if opts.Progress != nil {
			opts.Progress(e, o, err)
		}
	}
	var stopped error
	for _, e := range entries {
		switch {
		case e.Replays > 0 && !opts.Force:
			p.report(e, AlreadyReplayed, nil)
			continue
		case opts.DryRun:
			p.report(e, WouldReplay, nil)
			continue
		}
		if lim != nil {
			if err := p.pace(ctx, lim); err != nil {
				stopped = err
				break
			}
		}
		if err := p.reserve(e); err != nil {
			stopped = err
			break
		}
	}
	if stopped == nil {
		stopped = p.drain()
	}
	if stopped != nil {
		p.wind()
		return res, fmt.Errorf("dlq: replay: stopped (%d replayed, %d in doubt): %w", res.Replayed, res.InDoubt, stopped)
	}
	return res, errors.Join(p.errs...)
}

// inFlight is one entry being replayed.
type inFlight struct {
	e       *Entry
	count   int
	subject string
	data    []byte // the body to publish (e's, readdressed for --to)
	msgID   string
	rev     uint64 // the reservation's revision, once stored
	fut     jetstream.PubAckFuture
	// the server's answer to fut, once read
	answered bool
	ack      *jetstream.PubAck
	err      error
}

// poll reads fut's answer if it has come, without waiting.
func (f *inFlight) poll() bool {
	if !f.answered {
		select {
		case f.ack = <-f.fut.Ok():
			f.answered = true
		case f.err = <-f.fut.Err():
			f.answered = true
		default:
		}
	}
	return f.answered
}

// wait waits for fut's answer, or for ctx to end.
func (f *inFlight) wait(ctx context.Context) (*jetstream.PubAck, error) {
	if !f.answered {
		select {
		case f.ack = <-f.fut.Ok():
		case f.err = <-f.fut.Err():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		f.answered = true
	}
	return f.ack, f.err
}

// next points f at a new publish.
func (f *inFlight) next(fut jetstream.PubAckFuture) {
	f.fut, f.answered, f.ack, f.err = fut, false, nil, nil
}

// pipeline runs the three stages of Replay, each a FIFO bounded by
// replayWindow: reservations in flight, then tasks, then settlements.
type pipeline struct {
	s                      *Store
	ctx                    context.Context
	to                     string
	markSubject            string
	reserving, tasks, sett []*inFlight
	report                 func(*Entry, Outcome, error)
	errs                   []error
}

func (p *pipeline) markMsg(f *inFlight, state string) *nats.Msg {
	mark, _ := json.Marshal(replayMark{Count: f.count, At: time.Now().UTC(), To: f.subject, MsgID: f.msgID, State: state})
	return &nats.Msg{Subject: p.markSubject + p.s.markKey(f.e), Data: mark}
}

// reserve publishes e's reservation: a create when e was never replayed,
// else a compare-and-set on the mark's revision as read.
func (p *pipeline) reserve(e *Entry) error {
	f := &inFlight{e: e, count: e.Replays + 1, subject: e.Subject, data: e.Data}
	if p.to != "" {
		f.subject, f.data = p.to, p.s.readdress(e, p.to)
	}
	// The same id for the same replay count: should two replays ever
	// publish the same entry's task, the server stores it once.
	f.msgID = "replay-" + e.Stream + "-" + strconv.FormatUint(e.Sequence, 10) + "-dlq" + strconv.FormatUint(e.Seq, 10) + "-" + strconv.Itoa(f.count)
	var err error
	if f.fut, err = p.s.js.PublishMsgAsync(p.markMsg(f, markReserved), jetstream.WithExpectLastSequencePerSubject(e.markRev)); err != nil {
		p.report(e, Failed, fmt.Errorf("dlq: replay %d: reserve: %w", e.Seq, err))
		return nil
	}
	p.reserving = append(p.reserving, f)
	if len(p.reserving) > replayWindow {
		if err := p.reserved(p.ctx); err != nil {
			return err
		}
	}
	return p.advance()
}

// pace waits for the next entry's turn under lim. A wait long enough to
// matter (paceDrain) first lets everything in flight finish: the entries
// whose turn has come are published and marked now, not when the next
// turn comes, and an interruption in the wait leaves nothing unsettled.
// lim.Wait returns at once when the turn comes after ctx's deadline.
func (p *pipeline) pace(ctx context.Context, lim *rate.Limiter) error {
	if err := p.advance(); err != nil {
		return err
	}
	if missing := 1 - lim.Tokens(); missing > 0 && time.Duration(missing/float64(lim.Limit())*float64(time.Second)) >= paceDrain {
		if err := p.drain(); err != nil {
			return err
		}
	}
	return lim.Wait(ctx)
}

// advance moves on every stage's answered heads, without waiting: a task
// is published as soon as its reservation is stored, so a replay that
// stops leaves as little as possible unsettled.
func (p *pipeline) advance() error {
	for {
		moved := false
		if len(p.sett) > 0 && p.sett[0].poll() {
			_ = p.settled(p.ctx)
			moved = true
		}
		if len(p.tasks) > 0 && p.tasks[0].poll() {
			if err := p.published(p.ctx); err != nil {
				return err
			}
			moved = true
		}
		if len(p.reserving) > 0 && p.reserving[0].poll() {
			if err := p.reserved(p.ctx); err != nil {
				return err
			}
			moved = true
		}
		if !moved {
			return nil
		}
	}
}

// reserved waits for the oldest reservation; once stored, the entry's
// task is published.
func (p *pipeline) reserved(ctx context.Context) error {
	f := p.reserving[0]
	ack, err := f.wait(ctx)
	if !f.answered {
		return ctx.Err()
	}
	p.reserving = p.reserving[1:]
	switch {
	case isWrongLastSequence(err):
		p.report(f.e, AlreadyReplayed, nil) // another replay reserved it first
		return nil
	case err != nil && refused(err):
		p.report(f.e, Failed, fmt.Errorf("dlq: replay %d: reserve: %w", f.e.Seq, err))
		return nil
	case err != nil: // not published; its reservation may be stored
		p.report(f.e, Failed, fmt.Errorf("dlq: replay %d: not published, its reservation unconfirmed (it may stay, and a rerun skip it: see replay show %d, --force if so): %w", f.e.Seq, f.e.Seq, err))
		return nil
	}
	f.rev = ack.Sequence
	fut, err := p.s.js.PublishMsgAsync(replayMsg(f.e, f))
	if err != nil {
		p.undo(f, err)
		return nil
	}
	f.next(fut)
	p.tasks = append(p.tasks, f)
	if len(p.tasks) > replayWindow {
		return p.published(ctx)
	}
	return nil
}

// published waits for the oldest task; once stored, its mark is settled.
func (p *pipeline) published(ctx context.Context) error {
	f := p.tasks[0]
	_, err := f.wait(ctx)
	if !f.answered {
		return ctx.Err()
	}
	p.tasks = p.tasks[1:]
	switch {
	case err != nil && refused(err):
		p.undo(f, err)
		return nil
	case err != nil: // it may be stored: the reservation stays
		p.report(f.e, InDoubt, fmt.Errorf("dlq: replay %d to %s: in doubt, marked replayed (a rerun skips it; see replay show %d, --force if its task did not run): %w", f.e.Seq, f.subject, f.e.Seq, err))
		return nil
	}
	p.report(f.e, Replayed, nil)
	fut, err := p.s.js.PublishMsgAsync(p.markMsg(f, markSettled), jetstream.WithExpectLastSequencePerSubject(f.rev))
	if err != nil {
		return nil // the reservation stays: still replayed once
	}
	f.next(fut)
	p.sett = append(p.sett, f)
	if len(p.sett) > replayWindow {
		return p.settled(ctx)
	}
	return nil
}

// settled waits for the oldest settlement. One that fails leaves the
// reservation, which says replayed as well.
func (p *pipeline) settled(ctx context.Context) error {
	f := p.sett[0]
	_, _ = f.wait(ctx)
	if !f.answered {
		return ctx.Err()
	}
	p.sett = p.sett[1:]
	return nil
}

// refused reports whether err, a publish's failure, says the message was
// not stored: the server answered with an error, or nothing listened on
// the subject. Any other failure (no acknowledgement in time, the
// connection lost) leaves it in doubt.
func refused(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) || errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// undo takes f's reservation back (its task was definitely not stored,
// cause says why) and reports the entry failed.
func (p *pipeline) undo(f *inFlight, cause error) {
	msg := fmt.Errorf("dlq: replay %d to %s: %w", f.e.Seq, f.subject, cause)
	if err := p.restore(f); err != nil {
		msg = fmt.Errorf("%w (its reservation stays: a later replay skips it without --force: %v)", msg, err)
	}
	p.report(f.e, Failed, msg)
}

// takeBack takes back the reservation of an entry whose task a stopped
// replay never published: it is as if the replay had not reached it. If
// the reservation cannot be taken back the entry is reported failed.
func (p *pipeline) takeBack(f *inFlight) {
	if err := p.restore(f); err != nil {
		p.report(f.e, Failed, fmt.Errorf("dlq: replay %d: not published (the replay stopped), but its reservation stays: a later replay skips it without --force: %w", f.e.Seq, err))
	}
}

// restore returns f's mark to its count before the reservation (a delete
// would leave a marker that the next reservation's compare-and-set, which
// reads marks without deletes, could not expect).
func (p *pipeline) restore(f *inFlight) error {
	ctx, cancel := context.WithTimeout(context.Background(), replayGrace)
	defer cancel()
	back := *f
	back.count--
	_, err := p.s.js.PublishMsg(ctx, p.markMsg(&back, markSettled), jetstream.WithExpectLastSequencePerSubject(f.rev))
	return err
}

func (p *pipeline) drain() error {
	for len(p.reserving) > 0 {
		if err := p.reserved(p.ctx); err != nil {
			return err
		}
	}
	for len(p.tasks) > 0 {
		if err := p.published(p.ctx); err != nil {
			return err
		}
	}
	for len(p.sett) > 0 {
		if err := p.settled(p.ctx); err != nil {
			return err
		}
	}
	return nil
}

// wind settles what a stopped replay sent, within replayGrace: tasks
// stored are reported and their marks settled, tasks refused are undone,
// reservations stored are taken back (their task was never published);
// the tasks still unanswered are reported InDoubt.
func (p *pipeline) wind() {
	ctx, cancel := context.WithTimeout(context.Background(), replayGrace)
	defer cancel()
	for len(p.tasks) > 0 {
		if err := p.published(ctx); err != nil {
			for _, f := range p.tasks {
				p.report(f.e, InDoubt, fmt.Errorf("dlq: replay %d to %s: published as the replay stopped, unconfirmed: marked replayed (a rerun skips it; see replay show %d, --force if its task did not run): %w", f.e.Seq, f.subject, f.e.Seq, err))
			}
			p.tasks = nil
		}
	}
	for _, f := range p.reserving {
		ack, err := f.wait(ctx)
		switch {
		case !f.answered:
			// Its reservation may be stored, its task was not published.
			p.report(f.e, Failed, fmt.Errorf("dlq: replay %d: not published (the replay stopped); its reservation may stay, and a rerun skip it: see replay show %d, --force if so", f.e.Seq, f.e.Seq))
		case err == nil:
			f.rev = ack.Sequence
			p.takeBack(f)
		case isWrongLastSequence(err):
			p.report(f.e, AlreadyReplayed, nil)
		default: // never reserved, never published: as if not reached
		}
	}
	p.reserving = nil
	for len(p.sett) > 0 {
		if p.settled(ctx) != nil {
			break
		}
	}
}

// replayMsg is the task message replaying e: its original body and
// headers, provenance removed, a new message id and the replay headers.
func replayMsg(e *Entry, f *inFlight) *nats.Msg {
	h := make(nats.Header, len(e.Header))
	for k, v := range e.Header {
		h[k] = v
	}
	for _, k := range provenance {
		h.Del(k)
	}
	h.Set(bus.HeaderMsgID, f.msgID)
	h.Set(HeaderReplayOf, strconv.FormatUint(e.Seq, 10))
	h.Set(HeaderReplayCount, strconv.Itoa(f.count))
	return &nats.Msg{Subject: f.subject, Data: f.data, Header: h}
}

// readdress returns the body that replays e to subject: e's, with the
// envelope's recipient changed to the agent subject belongs to when they
// differ (a runtime refuses an envelope addressed to another agent). A
// body that does not decode, or a subject that is not a task subject, is
// replayed as it is.
func (s *Store) readdress(e *Entry, subject string) []byte {
	agent, _, ok := s.topo.TaskAgent(subject)
	if !ok {
		return e.Data
	}
	var env envelope.Envelope
	if envelope.Unmarshal(e.Data, &env) != nil || env.Recipient == agent {
		return e.Data
	}
	env.Recipient = agent
	data, err := envelope.Marshal(&env)
	if err != nil {
		return e.Data
	}
	return data
}

// isWrongLastSequence reports a compare-and-set conflict (codes 10071, and
// 10164 on replicated streams).
func isWrongLastSequence(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) {
		return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
	}
	return false
}
