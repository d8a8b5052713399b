package runtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The runtime counts a task's real attempts itself (ADR 0003): the
// server counts every delivery, and a delivery handed back unrun (at
// shutdown, a suspect waiting its turn, a stale delivery skipped after a
// freeze) or lost with a process that crashed while it sat in the queue
// is not an attempt. What it needs beyond the server's delivery count is
// kept in the agent's records bucket under "att.<stream seq>", and only
// once something other than a first delivery that succeeds happens to a
// task: a first delivery reads and writes nothing.

// attemptRecord is the stored record of one task message (one stream
// sequence).
type attemptRecord struct {
	// GivenBack counts deliveries handed back unrun.
	GivenBack int `json:"g,omitempty"`
	// Failed counts handler runs that failed and were handed back for a
	// retry.
	Failed int `json:"f,omitempty"`
	// Blamed counts runs as a suspect (one at a time) that never ended:
	// the process died, or the handler hung past its deadline.
	Blamed int `json:"b,omitempty"`
	// Running is the delivery whose run as a suspect began and has not
	// ended (0: none).
	Running uint64 `json:"s,omitempty"`
}

// accounting is what a delivery knows of its task's attempts.
type accounting struct {
	rec attemptRecord
	rev uint64 // the record's revision; 0: none stored
	// base is the attempts a parked copy carries from the messages it was
	// copied from (HeaderAttempts).
	base int
	// before is the real attempts before this delivery.
	before int
	// lost counts earlier deliveries of this message that ended without a
	// trace: a crash or a hang (its handler ran), or a process that died
	// with the delivery in its queue (it did not). Only the first counts
	// as an attempt, unless it ran as a suspect (Blamed).
	lost int
	// known is false when the records could not be read: every earlier
	// delivery then counts as an attempt.
	known bool
	read  bool // the record was read (or a first delivery needs none)
}

// attempt is the number of this delivery's attempt, from 1.
func (a *accounting) attempt() int { return a.before + 1 }

// suspect reports whether an earlier delivery of the task was lost: the
// task may be what crashed or hung its process, so it runs alone among
// suspects, with a mark saying so.
func (a *accounting) suspect() bool { return a.known && (a.lost > 0 || a.rec.Blamed > 0) }

// Records.
const (
	// attemptRecordTTL removes an attempt record the runtime did not
	// (the task ended while its agent was down, a crash in between).
	attemptRecordTTL = 24 * time.Hour
	// recordsTimeout bounds one records request.
	recordsTimeout = 5 * time.Second
	// recordsRetry is how long an unavailable records bucket is left
	// alone before it is opened again.
	recordsRetry = 30 * time.Second
)

// HeaderAttempts, on a parked copy of a task, carries the attempts the
// task had before it was copied (see Parked).
const HeaderAttempts = "Jetagent-Attempts"

func attemptKey(seq uint64) string { return "att." + strconv.FormatUint(seq, 10) }

// records opens the agent's records bucket lazily (creating it, with
// bus.ProvisionAgent, when it is missing and the user may); while it is
// unavailable, accounting falls back to the server's delivery count.
type records struct {
	rt *Runtime

	mu     sync.Mutex
	kv     jetstream.KeyValue
	failed time.Time // last failed open
	warned bool
}

// open returns the bucket, or nil while it is unavailable.
func (s *records) open(ctx context.Context) jetstream.KeyValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kv != nil {
		return s.kv
	}
	if !s.failed.IsZero() && time.Since(s.failed) < recordsRetry {
		return nil
	}
	r := s.rt
	ctx, cancel := context.WithTimeout(ctx, recordsTimeout)
	defer cancel()
	js, name := r.conn.JetStream(), r.cfg.Topology.RecordsBucket(r.cfg.Agent)
	kv, err := js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if err = bus.ProvisionAgent(ctx, js, r.cfg.Topology, r.cfg.Agent); err == nil {
			kv, err = js.KeyValue(ctx, name)
		}
	}
	if err != nil {
		s.failed = time.Now()
		if !s.warned {
			s.warned = true
			r.cfg.Logger.Warn("records bucket unavailable: every delivery counts as an attempt, hand-backs included (provision it with bus.ProvisionAgent)",
				"agent", r.cfg.Agent, "bucket", name, "err", err)
		}
		return nil
	}
	s.kv = kv
	return kv
}

// account fills j's accounting: from the parked copy's header, and, for
// a redelivery, from the task's record.
func (r *Runtime) account(j *job) {
	d, a := j.d, &j.acct
	if a.read {
		return
	}
	a.read, a.known = true, true
	if d.Header != nil {
		if v := d.Header.Get(HeaderAttempts); v != "" {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				a.base = n
			}
		}
	}
	if d.NumDelivered <= 1 {
		a.before = a.base
		return
	}
	kv := r.records.open(context.Background())
	if kv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), recordsTimeout)
		e, err := kv.Get(ctx, attemptKey(d.StreamSeq))
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			kv = nil
		default:
			a.rev = e.Revision()
			if json.Unmarshal(e.Value(), &a.rec) != nil {
				a.rec = attemptRecord{}
			}
		}
	}
	earlier := int(d.NumDelivered) - 1
	if kv == nil {
		a.known = false
		a.before = a.base + earlier
		return
	}
	if a.rec.Running != 0 && a.rec.Running < d.NumDelivered {
		a.rec.Blamed++ // its suspect run never ended
		a.rec.Running = 0
	}
	a.lost = max(0, earlier-a.rec.GivenBack-a.rec.Failed-a.rec.Blamed)
	a.before = a.base + a.rec.Failed + a.rec.Blamed + min(a.lost, 1)
}

// exhausted reports whether j's task has had its attempts before this
// delivery: it is dead-lettered without running again. Deliveries that
// are not hand-backs count as well, beyond twice the limit, in case the
// records cannot be written.
func (r *Runtime) exhausted(j *job) bool {
	limit := r.cfg.Consumer.MaxDeliver
	a := &j.acct
	return a.before >= limit || int(j.d.NumDelivered)-1-a.rec.GivenBack >= 2*limit+2
}

// bump applies change to j's record and stores it (compare-and-swap on
// the revision read; on a conflict it reads the record again and
// reapplies change). It returns false when the record could not be
// stored.
func (r *Runtime) bump(ctx context.Context, j *job, change func(*attemptRecord)) bool {
	kv := r.records.open(ctx)
	if kv == nil {
		return false
	}
	d, a := j.d, &j.acct
	key := attemptKey(d.StreamSeq)
	for range 3 {
		next := a.rec
		change(&next)
		body, _ := json.Marshal(next)
		ctx, cancel := context.WithTimeout(ctx, recordsTimeout)
		var rev uint64
		var err error
		if a.rev == 0 {
			rev, err = kv.Create(ctx, key, body, jetstream.KeyTTL(attemptRecordTTL))
		} else {
			rev, err = r.updateRecord(ctx, key, body, a.rev)
		}
		cancel()
		if err == nil {
			a.rec, a.rev = next, rev
			return true
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !isWrongLastSequence(err) {
			r.cfg.Logger.Warn("attempt record not stored", "agent", r.cfg.Agent, "stream_seq", d.StreamSeq, "err", err)
			return false
		}
		// Another delivery of the message wrote it meanwhile: read it again.
		ctx, cancel = context.WithTimeout(context.Background(), recordsTimeout)
		e, gerr := kv.Get(ctx, key)
		cancel()
		switch {
		case errors.Is(gerr, jetstream.ErrKeyNotFound):
			a.rec, a.rev = attemptRecord{}, 0
		case gerr != nil:
			return false
		default:
			a.rev = e.Revision()
			a.rec = attemptRecord{}
			_ = json.Unmarshal(e.Value(), &a.rec)
		}
	}
	return false
}

// updateRecord stores body under key if its last revision is rev, with the
// record's TTL (jetstream.KeyValue.Update would drop it).
func (r *Runtime) updateRecord(ctx context.Context, key string, body []byte, rev uint64) (uint64, error) {
	m := nats.NewMsg("$KV." + r.cfg.Topology.RecordsBucket(r.cfg.Agent) + "." + key)
	m.Data = body
	ack, err := r.conn.JetStream().PublishMsg(ctx, m,
		jetstream.WithExpectLastSequencePerSubject(rev), jetstream.WithMsgTTL(attemptRecordTTL))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func isWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// forget removes j's record once its task has ended (succeeded, was dead-
// lettered, cancelled or parked), if it has one.
func (r *Runtime) forget(j *job) {
	if j == nil || j.acct.rev == 0 {
		return
	}
	kv := r.records.open(context.Background())
	if kv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), recordsTimeout)
	defer cancel()
	if err := kv.Delete(ctx, attemptKey(j.d.StreamSeq)); err != nil {
		r.cfg.Logger.Debug("attempt record not removed; its TTL will", "agent", r.cfg.Agent, "stream_seq", j.d.StreamSeq, "err", err)
	}
	j.acct.rev = 0
}

// noteGivenBack records that j's delivery was handed back unrun, so that
// it does not count as an attempt. A first delivery of a message that has
// no record needs no read.
func (r *Runtime) noteGivenBack(j *job) {
	if !j.acct.read && j.d.NumDelivered > 1 {
		r.account(j)
	}
	r.bump(context.Background(), j, func(rec *attemptRecord) { rec.GivenBack++ })
}

// noteFailed records that j's handler ran and failed; its redelivery is
// a retry, not a suspect.
func (r *Runtime) noteFailed(j *job) {
	if j == nil {
		return
	}
	r.bump(context.Background(), j, func(rec *attemptRecord) {
		rec.Failed++
		rec.Running = 0
	})
}

// suspects lets one suspect delivery run at a time in a replica; the others
// wait, unsettled and heartbeated, their turn. A suspect whose handler runs
// past its deadline gives its turn up (it is hung: its delivery will be
// redelivered and the hang blamed on it).
type suspects struct {
	mu       sync.Mutex
	running  bool
	seq      uint64 // the running suspect's stream sequence
	deadline time.Time
	waiting  []job
}

// turn gives j the turn and returns true when no other suspect runs;
// otherwise it queues j to wait and returns false.
func (s *suspects) turn(j *job, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running && now.Before(s.deadline) {
		s.waiting = append(s.waiting, *j)
		return false
	}
	j.turn = true
	s.running, s.seq = true, j.d.StreamSeq
	s.deadline = now.Add(time.Hour) // until the handler's own deadline is known
	return true
}

// started sets the running suspect's handler deadline.
func (s *suspects) started(deadline time.Time) {
	s.mu.Lock()
	s.deadline = deadline
	s.mu.Unlock()
}

// done ends the turn of the suspect with stream sequence seq and returns
// the next one waiting, if any.
func (s *suspects) done(seq uint64) (next job, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running && s.seq == seq {
		s.running = false
	}
	return s.nextLocked()
}

// expire hands the turn on when the running suspect passed its deadline.
func (s *suspects) expire(now time.Time) (next job, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running || now.Before(s.deadline) {
		return job{}, false
	}
	s.running = false
	return s.nextLocked()
}

func (s *suspects) nextLocked() (job, bool) {
	if s.running || len(s.waiting) == 0 {
		return job{}, false
	}
	next := s.waiting[0]
	s.waiting = s.waiting[1:]
	next.turn = true
	s.running, s.seq = true, next.d.StreamSeq
	s.deadline = time.Now().Add(time.Hour)
	return next, true
}

// appendWaiting appends the waiting suspects' deliveries (for heartbeats).
func (s *suspects) appendWaiting(dst []*bus.Delivery) []*bus.Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, j := range s.waiting {
		dst = append(dst, j.d)
	}
	return dst
}

// drain removes and returns the waiting suspects (at shutdown).
func (s *suspects) drain() []job {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.waiting
	s.waiting = nil
	return out
}

func (s *suspects) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiting)
}

// attemptsError describes a task dead-lettered before running again.
func attemptsError(j *job, limit int) error {
	a := &j.acct
	if a.lost > 0 || a.rec.Blamed > 0 || !a.known {
		return fmt.Errorf("max deliveries exceeded: %d attempts of %d, delivered %d times; runs ended without a trace (the agent crashed or hung on it)",
			a.before, limit, j.d.NumDelivered)
	}
	return fmt.Errorf("attempt %d of %d already failed", a.before, limit)
}
