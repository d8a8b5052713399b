package runtime

import (
	"context"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime/disposition"
)

// staleMargin is how much before its ack timeout a delivery that waited
// unseen (a freeze) is given up: the server's redelivery and this
// replica's start would otherwise race.
const staleMargin = 50 * time.Millisecond

// skipExpiredDelivery leaves j's delivery, unstarted, when its ack timeout
// has visibly passed since the server last heard of it (the process was
// frozen, or starved, while it waited): the server has redelivered it,
// maybe to another replica, which owns it now. Settling it would settle
// that delivery (a Nak would even make it run a third time), so it is
// only released, and recorded as handed back: it was no attempt.
func (r *Runtime) skipExpiredDelivery(j *job) bool {
	d := j.d
	if !d.Expired(time.Now(), staleMargin) {
		return false
	}
	r.stats.skipped.Add(1)
	r.stats.returned.Add(1)
	r.cfg.Logger.Warn("delivery not started: its ack timeout passed while it waited (the process was frozen?); the server redelivers it",
		"agent", r.cfg.Agent, "subject", d.Subject, "stream_seq", d.StreamSeq, "delivered", d.NumDelivered,
		"waited", time.Since(d.LastAlive()).Round(time.Millisecond), "ack_timeout", d.AckTimeout())
	r.endTurn(j)
	r.noteGivenBack(j)
	d.Release()
	r.observe(d.Subject, Outcome{Disposition: Returned}, 0)
	return true
}

// receivedAt is when the server first stored the task: a parked copy
// carries its original's time, for the clock-skew check.
func receivedAt(d *bus.Delivery) time.Time {
	if d.Header != nil {
		if v := d.Header.Get(HeaderFirstStored); v != "" {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return t
			}
		}
	}
	return d.Published
}

// taskExpired reports whether env's own deadline has passed at now.
func taskExpired(env *envelope.Envelope, now time.Time) bool {
	return env != nil && !env.Deadline.IsZero() && !now.Before(env.Deadline)
}

// deadLetterIfExpired dead-letters a held (or waiting) delivery whose
// task's deadline passed meanwhile, without asking the breaker: an
// expired task must never be a probe (it would fail at once and open the
// breaker again). The next held delivery of the subject is released, to
// probe in its place.
func (r *Runtime) deadLetterIfExpired(j *job) bool {
	if !taskExpired(j.env, time.Now()) {
		return false
	}
	err := fmt.Errorf("%w: deadline %s passed while the task waited", envelope.ErrExpired, j.env.Deadline.UTC().Format(time.RFC3339Nano))
	r.endTurn(j)
	r.observe(j.d.Subject, r.deadLetterAttempts(j, j.env, disposition.Decide(disposition.Facts{Finding: disposition.Expired}).Reason, err), 0)
	r.release(j.d.Subject, false)
	return true
}

// deadLetterExhausted dead-letters a task whose attempts are used up
// before it runs again: its runs failed, or ended without a trace (the
// process crashed or the handler hung on it).
func (r *Runtime) deadLetterExhausted(j *job) Outcome {
	a := &j.acct
	reason := dlq.ReasonMaxAttempts
	if a.lost > 0 || a.rec.Blamed > 0 || !a.known {
		reason = dlq.ReasonMaxDeliveries
	}
	var env envelope.Envelope // for its trace id, if it decodes
	var envp *envelope.Envelope
	if envelope.Unmarshal(j.d.Data, &env) == nil {
		envp = &env
	}
	reason = disposition.Decide(disposition.Facts{Finding: disposition.Exhausted, Reason: reason}).Reason
	out := r.deadLetterCounted(j.d, envp, reason, attemptsError(j, r.cfg.Consumer.MaxDeliver), uint64(a.before))
	if out.Disposition == DeadLettered {
		r.forget(j)
		if envp != nil {
			r.releaseClaim(taskIDOf(envp))
		}
	}
	return out
}

// releaseClaim clears the step claim a run that never ended left in the
// snapshot of a task now dead-lettered: a replay of it (or a re-send with
// its task_id) would otherwise be refused as "taken" until the claim aged
// out, and acked without running. The steps it completed stay recorded.
func (r *Runtime) releaseClaim(taskID string) {
	if r.snapshots == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.handlerCtx, settleTimeout)
	defer cancel()
	s, err := r.snapshots.Load(ctx, r.cfg.Agent, taskID)
	if err != nil || s.Running == 0 {
		return // none (or unreadable: the claim ages out after HandlerTimeout)
	}
	next := *s
	next.Running, next.Owner, next.Updated = 0, "", time.Now().UTC()
	if _, err := r.snapshots.Save(ctx, &next, s.Revision); err != nil {
		r.cfg.Logger.Warn("the step claim of a dead-lettered task not released; a replay of it waits HandlerTimeout", "agent", r.cfg.Agent, "task_id", taskID, "err", err)
	}
}

// markSuspectRun records, before a suspect's handler starts, that it runs:
// if the process dies or the handler hangs, the next delivery knows this
// run was a real attempt, and whose.
func (r *Runtime) markSuspectRun(j *job) {
	if !j.turn {
		return
	}
	n := j.d.NumDelivered
	r.bump(context.Background(), j, func(rec *attemptRecord) {
		rec.Blamed = j.acct.rec.Blamed // a blame found when it was read, stored now
		rec.Running = n
	})
}

// endTurn ends j's turn as the running suspect, if it has it, and hands
// the turn to the next waiting suspect.
func (r *Runtime) endTurn(j *job) {
	if !j.turn {
		return
	}
	j.turn = false
	if next, ok := r.suspects.done(j.d.StreamSeq); ok {
		r.queue.pushFront([]job{next})
	}
}

// wedged reports how many workers run a handler past its deadline, and
// whether all of them do: the replica can run nothing more until one
// returns.
func (r *Runtime) wedged(now time.Time) (stuck int, all bool) {
	for i := range r.slots {
		s := &r.slots[i]
		s.mu.Lock()
		if s.d != nil && !now.Before(s.deadline) {
			stuck++
		}
		s.mu.Unlock()
	}
	return stuck, stuck == len(r.slots) && stuck > 0
}

// checkWedged runs on every heartbeat tick: when every worker is stuck
// past its deadline, the replica stops pulling and hands back what it
// queued and holds (other replicas take it); pulling resumes as soon as a
// worker is free again.
func (r *Runtime) checkWedged(now time.Time) {
	_, all := r.wedged(now)
	was := r.isWedged.Swap(all)
	switch {
	case all && !was:
		r.cfg.Logger.Error("every worker is stuck in a handler past its deadline: not ready, and handing back queued tasks",
			"agent", r.cfg.Agent, "workers", len(r.slots))
		r.pause(pauseWedged, true)
		r.returnAll(append(r.queue.drain(), r.hold.drain()...))
	case !all && was:
		r.cfg.Logger.Info("a worker is free again: pulling resumes", "agent", r.cfg.Agent)
		r.pause(pauseWedged, false)
	}
}

// Reasons to stop pulling.
const (
	pauseWedged = 1 << iota // every worker stuck past its deadline
)

// pause sets or clears one reason to stop pulling.
func (r *Runtime) pause(reason uint32, on bool) {
	r.pauseMu.Lock()
	defer r.pauseMu.Unlock()
	if on {
		r.paused |= reason
	} else {
		r.paused &^= reason
	}
	if sub := r.subPtr.Load(); sub != nil {
		sub.Pause(r.paused != 0)
	}
}
