package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jetagent/jetagent/bus"
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

func markKey(seq uint64) string { return strconv.FormatUint(seq, 10) }

// replayMarks reads every replay mark, by entry sequence.
func (s *Store) replayMarks(ctx context.Context) (map[uint64]replayMark, error) {
	kv, err := s.js.KeyValue(ctx, s.topo.ReplaysBucket())
	if err != nil {
		return nil, fmt.Errorf("dlq: replays bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
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
			seq, err := strconv.ParseUint(e.Key(), 10, 64)
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

// Replay publishes each entry's original message again, as a new task
// (a new Nats-Msg-Id, so the duplicate window does not drop it), with
// HeaderReplayOf naming the entry, to its original subject or opts.To. It
// records each replay in the replays bucket, so that an entry is replayed
// at most once unless opts.Force. Entries stay in the DLQ (purge them
// when done). It stops at ctx's end; failed entries are counted, not
// fatal. The error is ctx's, or the joined failures.
func (s *Store) Replay(ctx context.Context, entries []*Entry, opts ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	kv, err := s.js.KeyValue(ctx, s.topo.ReplaysBucket())
	if err != nil {
		return res, fmt.Errorf("dlq: replays bucket: %w", err)
	}
	var lim *rate.Limiter
	if opts.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(opts.Rate), 1)
	}
	var errs []error
	for _, e := range entries {
		if lim != nil {
			if err := lim.Wait(ctx); err != nil {
				return res, fmt.Errorf("dlq: replay: %w", err)
			}
		}
		outcome, err := s.replayOne(ctx, kv, e, opts)
		switch outcome {
		case Replayed:
			res.Replayed++
		case AlreadyReplayed:
			res.Skipped++
		case WouldReplay:
			res.WouldReplay++
		case Failed:
			res.Failed++
			errs = append(errs, err)
		}
		if opts.Progress != nil {
			opts.Progress(e, outcome, err)
		}
		if ctx.Err() != nil {
			return res, fmt.Errorf("dlq: replay: %w", ctx.Err())
		}
	}
	return res, errors.Join(errs...)
}

func (s *Store) replayOne(ctx context.Context, kv jetstream.KeyValue, e *Entry, opts ReplayOptions) (Outcome, error) {
	key := markKey(e.Seq)
	var prev replayMark
	var rev uint64
	if kve, err := kv.Get(ctx, key); err == nil {
		rev = kve.Revision()
		if err := json.Unmarshal(kve.Value(), &prev); err != nil {
			prev.Count = 1
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return Failed, fmt.Errorf("dlq: replay %d: %w", e.Seq, err)
	}
	if prev.Count > 0 && !opts.Force {
		return AlreadyReplayed, nil
	}
	subject := e.Subject
	if opts.To != "" {
		subject = opts.To
	}
	if opts.DryRun {
		return WouldReplay, nil
	}
	count := prev.Count + 1
	// The same id for the same replay count: if two operators replay at
	// once, or a replay is retried, the server stores the task once.
	msgID := "replay-" + e.Stream + "-" + strconv.FormatUint(e.Sequence, 10) + "-dlq" + key + "-" + strconv.Itoa(count)
	h := make(nats.Header, len(e.Header))
	for k, v := range e.Header {
		h[k] = v
	}
	for _, k := range provenance {
		h.Del(k)
	}
	h.Set(bus.HeaderMsgID, msgID)
	h.Set(HeaderReplayOf, key)
	h.Set(HeaderReplayCount, strconv.Itoa(count))
	if _, err := s.pub.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: e.Data, Header: h}); err != nil {
		return Failed, fmt.Errorf("dlq: replay %d to %s: %w", e.Seq, subject, err)
	}
	mark, _ := json.Marshal(replayMark{Count: count, At: time.Now().UTC(), To: subject, MsgID: msgID})
	var err error
	if rev == 0 {
		_, err = kv.Create(ctx, key, mark)
	} else {
		_, err = kv.Update(ctx, key, mark, rev)
	}
	if err != nil {
		// Someone replayed it at the same time: the same msg id means the
		// server stored one task; report it as theirs.
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return AlreadyReplayed, nil
		}
		return Failed, fmt.Errorf("dlq: replay %d: published, but not recorded (a later replay may repeat it): %w", e.Seq, err)
	}
	return Replayed, nil
}
