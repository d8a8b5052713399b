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
			if json.Unmarshal(e.Value(), &m) == nil {
				marks[seq] = m
			}
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
)

var outcomeNames = [...]string{"replayed", "already replayed", "would replay", "failed"}

// String names the outcome.
func (o Outcome) String() string { return outcomeNames[o] }

// ReplayResult counts Replay's outcomes.
type ReplayResult struct {
	Replayed, Skipped, WouldReplay, Failed int
}

// replayWindow is how many publishes Replay keeps in flight per stage.
const replayWindow = 512

// Replay publishes each entry's original message again, as a new task
// (a new Nats-Msg-Id, so the duplicate window does not drop it), with
// HeaderReplayOf naming the entry, to its original subject or opts.To. It
// records each replay in the replays bucket, so that an entry is replayed
// at most once unless opts.Force: entries listed as replayed are skipped,
// and when two replays race on an entry, the server stores its task once
// (same message id, within the duplicate window) and only one records it.
// Entries stay in the DLQ (purge them when done).
//
// Publishes are pipelined: a task's mark is written once the task is
// stored, while later tasks are in flight; opts.Rate paces the tasks. It
// stops when ctx ends; failed entries are counted, not fatal. The error is
// ctx's, or the joined failures.
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
	p := &pipeline{s: s, ctx: ctx, markSubject: "$KV." + s.topo.ReplaysBucket() + "."}
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
		}
		if opts.Progress != nil {
			opts.Progress(e, o, err)
		}
	}
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
			if err := lim.Wait(ctx); err != nil {
				return res, fmt.Errorf("dlq: replay: %w", err)
			}
		}
		if err := p.publishTask(e, opts.To); err != nil {
			return res, fmt.Errorf("dlq: replay: %w", err)
		}
	}
	if err := p.drain(); err != nil {
		return res, fmt.Errorf("dlq: replay: %w", err)
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
	fut     jetstream.PubAckFuture
}

// pipeline runs the two stages of Replay: tasks in flight, then marks in
// flight, each bounded by replayWindow.
type pipeline struct {
	s            *Store
	ctx          context.Context
	markSubject  string
	tasks, marks []*inFlight // FIFO
	report       func(*Entry, Outcome, error)
	errs         []error
}

func (p *pipeline) publishTask(e *Entry, to string) error {
	f := &inFlight{e: e, count: e.Replays + 1, subject: e.Subject, data: e.Data}
	if to != "" {
		f.subject, f.data = to, p.s.readdress(e, to)
	}
	// The same id for the same replay count: if two operators replay at
	// once, or a replay is retried, the server stores the task once.
	f.msgID = "replay-" + e.Stream + "-" + strconv.FormatUint(e.Sequence, 10) + "-dlq" + strconv.FormatUint(e.Seq, 10) + "-" + strconv.Itoa(f.count)
	var err error
	if f.fut, err = p.s.js.PublishMsgAsync(replayMsg(e, f)); err != nil {
		p.report(e, Failed, fmt.Errorf("dlq: replay %d to %s: %w", e.Seq, f.subject, err))
		return nil
	}
	p.tasks = append(p.tasks, f)
	if len(p.tasks) > replayWindow {
		return p.taskDone()
	}
	return nil
}

// taskDone waits for the oldest task; once stored, its mark is published.
func (p *pipeline) taskDone() error {
	f := p.tasks[0]
	p.tasks = p.tasks[1:]
	if _, err := await(p.ctx, f.fut); err != nil {
		if p.ctx.Err() != nil {
			return p.ctx.Err()
		}
		p.report(f.e, Failed, fmt.Errorf("dlq: replay %d to %s: %w", f.e.Seq, f.subject, err))
		return nil
	}
	mark, _ := json.Marshal(replayMark{Count: f.count, At: time.Now().UTC(), To: f.subject, MsgID: f.msgID})
	var opts []jetstream.PublishOpt
	if f.count == 1 {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(0)) // create: one replay wins
	}
	var err error
	if f.fut, err = p.s.js.PublishMsgAsync(&nats.Msg{Subject: p.markSubject + p.s.markKey(f.e), Data: mark}, opts...); err != nil {
		p.report(f.e, Failed, fmt.Errorf("dlq: replay %d: published, but not recorded (a later replay may repeat it): %w", f.e.Seq, err))
		return nil
	}
	p.marks = append(p.marks, f)
	if len(p.marks) > replayWindow {
		return p.markDone()
	}
	return nil
}

// markDone waits for the oldest mark and reports its entry.
func (p *pipeline) markDone() error {
	f := p.marks[0]
	p.marks = p.marks[1:]
	_, err := await(p.ctx, f.fut)
	switch {
	case err == nil:
		p.report(f.e, Replayed, nil)
	case isWrongLastSequence(err):
		// Another replay recorded it first; the same message id means the
		// server stored one task.
		p.report(f.e, AlreadyReplayed, nil)
	case p.ctx.Err() != nil:
		return p.ctx.Err()
	default:
		p.report(f.e, Failed, fmt.Errorf("dlq: replay %d: published, but not recorded (a later replay may repeat it): %w", f.e.Seq, err))
	}
	return nil
}

func (p *pipeline) drain() error {
	for len(p.tasks) > 0 {
		if err := p.taskDone(); err != nil {
			return err
		}
	}
	for len(p.marks) > 0 {
		if err := p.markDone(); err != nil {
			return err
		}
	}
	return nil
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

func await(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case a := <-f.Ok():
		return a, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
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
