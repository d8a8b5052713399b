package runtime

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime/disposition"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"
)

// settleTimeout bounds the publishes (reply, dead letter) that settle one
// delivery, so a stuck server cannot wedge a worker.
const settleTimeout = 10 * time.Second

// settleBudget bounds how long a settling delivery is heartbeated: the
// reply's tries and pauses, then a dead letter and the record.
const settleBudget = replyAttempts*settleTimeout + 6*replyPause + 2*settleTimeout

// errEncodeReply: the handler's result cannot be encoded; publishing it
// again does not help.
var errEncodeReply = errors.New("encode reply")

// errPanic marks a recovered handler panic.
var errPanic = errors.New("runtime: handler panicked")

// process takes one delivery from arrival to settlement.
func (r *Runtime) process(s *slot, j job) {
	// The task is allocated first and holds the job: the paths below take
	// its address without another allocation.
	task := &Task{job: j}
	jp := &task.job
	d := jp.d
	if r.aborting() {
		r.returnUnrun(jp)
		return
	}
	if r.skipExpiredDelivery(jp) { // its ack timeout passed unseen: another delivery owns it
		return
	}
	env := jp.env
	if env == nil { // a new delivery (held and waiting ones were parsed already)
		r.stats.received.Add(1)
		if r.cfg.Observer != nil {
			r.cfg.Observer.Delivered(r.observedSubject(d.Subject))
		}
		r.account(jp)                                  // reads nothing for a first delivery
		if v, ok := r.execs.verdict(d.StreamSeq); ok { // failed for good; the DLQ refused it
			r.observe(d.Subject, r.fileVerdict(jp, v), 0)
			return
		}
		if r.exhausted(jp) {
			r.observe(d.Subject, r.deadLetterExhausted(jp), 0)
			return
		}
		lim := r.cfg.Limits
		lim.ReceivedAt = receivedAt(d)
		lim.AliasPayload = true // the delivery owns its data
		if d.Header != nil && d.Header.Get(dlq.HeaderReplayOf) != "" {
			lim.IgnoreClockSkew = true // replayed from the DLQ: old by design
		}
		var err error
		env, err = envelope.Parse(d.Data, lim)
		if err != nil {
			r.observe(d.Subject, r.refuse(d, env, rejectReason(err), err), 0) // env is nil unless it decoded
			r.forget(jp)
			return
		}
		if err := r.checkAddress(d.Subject, env); err != nil {
			r.observe(d.Subject, r.refuse(d, env, dlq.ReasonInvalid, err), 0)
			r.forget(jp)
			return
		}
		jp.env = env
	} else if r.deadLetterIfExpired(jp) { // held, or waiting its turn, past its deadline
		return
	}
	if seen, ok := r.execs.lookup(env, replayKey(d)); ok && !isControl(env.PayloadType) {
		// It ran already (a re-send the server's window no longer knew, a
		// redelivery after its reply, another envelope of the task): not
		// again. A replay from the DLQ runs once per replay, whatever the
		// task's own record says.
		r.endTurn(jp)
		r.observe(d.Subject, r.answerDuplicate(jp, env, seen), 0)
		return
	}
	if jp.acct.suspect() && !jp.turn && !r.suspects.turn(jp, time.Now()) {
		return // another suspect runs: this one waits its turn, heartbeated
	}
	h := r.handlers[env.PayloadType]
	if h == nil {
		err := fmt.Errorf("%w: %q: agent %s has no handler for it", envelope.ErrUnknownType, env.PayloadType, r.cfg.Agent)
		r.observe(d.Subject, r.refuse(d, env, dlq.ReasonUnknownType, err), 0)
		r.endTurn(jp)
		return
	}
	br := r.breakers.Get(d.Subject)
	done, err := br.Allow()
	if err != nil {
		r.endTurn(jp)
		r.observe(d.Subject, r.holdBack(*jp, br), 0)
		return
	}
	task.Envelope = env
	task.Attempt = jp.acct.attempt()
	task.Subject = d.Subject
	task.StreamSeq = d.StreamSeq
	task.Published = d.Published
	task.Header = d.Header
	task.progress = progress{
		rt:     r,
		taskID: taskIDOf(env),
		seq:    d.StreamSeq,
		nth:    d.NumDelivered,
	}
	r.markSuspectRun(jp)
	ctx, span := r.handlerCtx, trace.Span(nil)
	if r.tracer != nil {
		ctx, span = r.startHandleSpan(d, task)
	}
	start := time.Now()
	result, herr := r.call(ctx, s, d, h, task, start)
	var ran time.Duration
	if r.cfg.Observer != nil {
		ran = time.Since(start)
	}
	done(r.breakerOutcome(herr, task))
	// Settling (a reply retried, a dead letter, the record) can outlast
	// AckWait: the delivery stays heartbeated until it is settled, or for
	// settleBudget at most (issue 13 item 6).
	s.set(d, start, time.Now().Add(settleBudget))
	out := r.settle(d, task, result, herr)
	s.clear()
	r.endTurn(jp)
	r.observe(d.Subject, out, ran)
	if span != nil {
		endHandleSpan(span, out, herr)
	}
	r.afterOutcome(d.Subject, br)
}

// call runs h, started at start, with the handler deadline (or the
// envelope's, if earlier) on a ctx derived from parent, turning a panic
// into an error; the worker's slot tells the heartbeat goroutine that d is
// being worked on (process clears it once d is settled).
func (r *Runtime) call(parent context.Context, s *slot, d *bus.Delivery, h Handler, t *Task, start time.Time) (result any, err error) {
	deadline := start.Add(r.cfg.HandlerTimeout)
	if dl := t.Envelope.Deadline; !dl.IsZero() && dl.Before(deadline) {
		deadline = dl
	}
	ctx := newDeadlineCtx(parent, deadline)
	defer ctx.release()
	if t.job.turn {
		r.suspects.started(deadline)
	}
	s.set(d, start, deadline) // cleared by process, once settled
	defer func() {
		if p := recover(); p != nil {
			r.stats.panics.Add(1)
			r.deliveryLogger(d, t.Envelope).Error("handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("%w: %v", errPanic, p)
		}
	}()
	return h(ctx, t)
}

// breakerOutcome is what the subject's breaker records for a handler
// error: shutdown interruptions say nothing about the subject, nor does a
// task's own deadline passing (its sender gave up on it), and a
// cancelled or taken task is not a failure of it.
func (r *Runtime) breakerOutcome(err error, t *Task) error {
	switch {
	case err != nil && r.aborting() && errors.Is(err, context.Canceled):
		return context.Canceled // ignored by the breaker
	case errors.Is(err, context.DeadlineExceeded) && taskExpired(t.Envelope, time.Now()):
		return context.Canceled // ignored: the task expired, the subject said nothing
	case errors.Is(err, ErrCancelled), errors.Is(err, ErrTaskTaken):
		return nil
	}
	return err
}

// settle carries out what [disposition.Decide] decides for a delivery
// whose handler ran (the table is in that package's doc): the reply and
// ack of a success, a give-back at shutdown, the "cancelled" update of a
// cancelled task, a dead letter, a nak with delay. It returns the
// outcome, which process reports to the Observer.
func (r *Runtime) settle(d *bus.Delivery, t *Task, result any, err error) Outcome {
	env := t.Envelope
	// The logger with the delivery's fields is built only on the paths that
	// log: the success path is hot.
	log := func() *slog.Logger { return r.deliveryLogger(d, env) }
	dec := disposition.Decide(disposition.Facts{Err: err, Stopping: r.aborting(),
		Attempt: t.Attempt, MaxAttempts: r.cfg.Consumer.MaxDeliver})
	switch dec.Action {
	case disposition.Ack:
		return r.succeed(d, t, result, log)
	case disposition.GiveBack:
		return r.giveBack(&t.job)
	case disposition.AckCancelled:
		update := Reply{Type: envelope.TaskUpdate, Payload: TaskState{TaskID: t.taskID, Found: true, Status: snapshot.Cancelled}}
		if rerr := r.replyRetrying(env, update); rerr != nil {
			return r.replyFailed(t, update, rerr) // not dropped: dead-lettered with the update
		}
		_ = d.Ack()
		r.forget(&t.job)
		r.stats.cancelled.Add(1)
		log().Info("task cancelled", "task_id", t.taskID)
		r.dropSnapshot(t)
		return Outcome{Disposition: Cancelled}
	case disposition.Release: // a newer delivery of this message runs the task
		r.stats.abandoned.Add(1)
		d.Release() // unsettled, but no longer this replica's: its window place is free
		log().Warn("a newer delivery of this task runs it; leaving this one", "err", err)
		return Outcome{Disposition: Abandoned}
	case disposition.Wait:
		// Another message runs the task now. This one waits (handed back,
		// not an attempt): once that run ends, its execution record answers
		// this one's reply_to; if it never ends, its claim ages out and
		// this one runs.
		r.noteGivenBack(&t.job)
		r.stats.retried.Add(1)
		if nerr := d.NakWithDelay(r.cfg.Backoff.Delay(int(d.NumDelivered))); nerr != nil {
			log().Warn("nak failed; the task is redelivered after AckWait", "err", nerr)
		}
		log().Info("another message runs this task; this one waits for it to end", "task_id", t.taskID, "err", err)
		return Outcome{Disposition: Retried}
	case disposition.DeadLetter:
		cause := err
		if dec.LastAttempt {
			cause = fmt.Errorf("attempt %d of %d failed: %w", t.Attempt, r.cfg.Consumer.MaxDeliver, err)
		}
		out := r.deadLetterVerdict(t, dec.Reason, cause)
		r.recordDead(t, out)
		r.dropSnapshot(t)
		out.Failure = dec.Kind
		return out
	default: // disposition.Retry
		log().Info("handler failed; redelivering", "kind", dec.Kind.String(), "err", err)
		r.noteFailed(&t.job)
		out := r.retryAttempt(d, dec.Delay, t.Attempt)
		out.Failure = dec.Kind
		return out
	}
}

// succeed settles a task whose handler succeeded: the reply, then the
// ack, then (if it checkpointed) the snapshot dropped.
func (r *Runtime) succeed(d *bus.Delivery, t *Task, result any, log func() *slog.Logger) Outcome {
	env := t.Envelope
	if rerr := r.replyRetrying(env, result); rerr != nil {
		return r.replyFailed(t, result, rerr)
	}
	r.stats.succeeded.Add(1)
	if isControl(env.PayloadType) {
		r.ackDone(d, log)
		r.forget(&t.job)
		return Outcome{Disposition: Succeeded}
	}
	en := execEntry{Task: t.taskID, Key: env.IdempotencyKey, Replay: replayKey(d)}
	if !t.used && t.job.acct.rev == 0 {
		// The common task: acked now, its record stored by the
		// committer in the next batch, while this worker goes on.
		// Acking after the commit would hold the delivery's place in
		// the window for the commit's round trip (measured: 0.63
		// against 0.70 of raw consume), and buys nothing: a process
		// that dies before the commit gets its task redelivered if it
		// had not acked (run again for sure), and loses only the
		// record if it had (run again only by a re-send the server no
		// longer deduplicates).
		r.ackDone(d, log)
		r.execs.record(en, func(bool) {})
		return Outcome{Disposition: Succeeded}
	}
	// It checkpointed (or has an attempt record): its snapshot goes
	// only once the task is recorded and acked for sure (AckSync).
	stored := make(chan struct{})
	r.execs.record(en, func(bool) { close(stored) })
	<-stored
	if aerr := r.ackSync(d); aerr != nil {
		log().Warn("ack not confirmed; a redelivery finds the task's execution record", "err", aerr)
	}
	r.forget(&t.job)
	r.dropSnapshot(t)
	return Outcome{Disposition: Succeeded}
}

// ackDone acks a settled delivery, saying so when the ack fails.
func (r *Runtime) ackDone(d *bus.Delivery, log func() *slog.Logger) {
	if aerr := d.Ack(); aerr != nil {
		log().Warn("ack failed; a redelivery finds the task's execution record", "err", aerr)
	}
}

// ackSync acks d and waits for the server to confirm it.
func (r *Runtime) ackSync(d *bus.Delivery) error {
	ctx, cancel := context.WithTimeout(r.handlerCtx, settleTimeout)
	defer cancel()
	return d.AckSync(ctx)
}

// recordDead records that t's task was dead-lettered (out): a re-send of
// it is not run again, a replay from the DLQ is.
func (r *Runtime) recordDead(t *Task, out Outcome) {
	if out.Disposition != DeadLettered || isControl(t.Envelope.PayloadType) {
		return
	}
	r.execs.record(execEntry{Task: t.taskID, Key: t.Envelope.IdempotencyKey, Dead: true, Replay: replayKey(t.job.d)}, func(bool) {})
}

// replyAttempts and replyPause bound the publishes of one reply: a reply
// is retried, never the handler that made it.
const (
	replyAttempts = 4
	replyPause    = 250 * time.Millisecond
)

// replyRetrying publishes the reply to req, retrying a failed publish
// (replies stream unavailable, a reconnect) a few times.
func (r *Runtime) replyRetrying(req *envelope.Envelope, result any) error {
	var err error
	for try := range replyAttempts {
		if err = r.reply(req, result); err == nil || r.aborting() || errors.Is(err, errEncodeReply) {
			return err
		}
		if try < replyAttempts-1 {
			select {
			case <-time.After(time.Duration(try+1) * replyPause):
			case <-r.abort:
				return err
			}
		}
	}
	return err
}

// replyFailed settles a task whose handler succeeded but whose reply
// could not be published: the handler is not run again. The task is
// recorded as run, and dead-lettered as reply_failed with the reply it
// made; if even that fails, it is redelivered, and the redelivery, which
// finds the record, tries the reply again.
func (r *Runtime) replyFailed(t *Task, result any, cause error) Outcome {
	env := t.Envelope
	if !isControl(env.PayloadType) { // a control message names a task without being it
		r.execs.record(execEntry{Task: t.taskID, Key: env.IdempotencyKey, Replay: replayKey(t.job.d)}, func(bool) {})
	}
	j := &t.job
	h := make(nats.Header, len(j.d.Header)+2)
	for k, v := range j.d.Header {
		h[k] = v
	}
	if body, err := replyBody(env, result); err == nil {
		h.Set(dlq.HeaderResultSize, strconv.Itoa(len(body)))
		if len(body) <= maxResultHeader {
			h.Set(dlq.HeaderResult, base64.StdEncoding.EncodeToString(body))
		}
	}
	out := r.deadLetterAttemptsWith(j, h, env, disposition.Decide(disposition.Facts{Finding: disposition.ReplyFailed}).Reason,
		fmt.Errorf("the handler succeeded; its reply to %s was not published: %w", env.ReplyTo, cause))
	if out.Disposition == DeadLettered {
		r.stats.replyFailed.Add(1)
		r.forget(j)
		r.dropSnapshot(t)
	}
	return out
}

// maxResultHeader bounds the result a reply_failed dead letter carries.
const maxResultHeader = 16 << 10

// replyBody is the encoded reply envelope req's result makes.
func replyBody(req *envelope.Envelope, result any) ([]byte, error) {
	typ, payload := envelope.TaskResponse, result
	if rep, ok := result.(Reply); ok {
		typ, payload = rep.Type, rep.Payload
	}
	out, err := req.NewReply(typ, payload)
	if err != nil {
		return nil, err
	}
	return envelope.Marshal(out)
}

// isControl reports whether typ is one of the runtime's control messages
// (task.cancel, state.query, state.restore): they name a task without
// being it, and have no execution record.
func isControl(typ envelope.PayloadType) bool {
	return typ == envelope.TaskCancel || typ == envelope.StateQuery || typ == envelope.StateRestore
}

// dropSnapshot removes the snapshot of a task that ended, if its handler
// used one (and KeepSnapshots is off). It runs after the settlement: a
// crash in between leaves the snapshot to the bucket's TTL, never a task
// without its progress.
func (r *Runtime) dropSnapshot(t *Task) {
	if !t.used || r.cfg.KeepSnapshots {
		return
	}
	ctx, cancel := context.WithTimeout(r.handlerCtx, settleTimeout)
	defer cancel()
	if err := r.snapshots.Delete(ctx, r.cfg.Agent, t.taskID); err != nil {
		r.cfg.Logger.Warn("snapshot not removed; the bucket's TTL will", "agent", r.cfg.Agent, "task_id", t.taskID, "err", err)
	}
}

// reply publishes the handler's result to the request's reply_to. Replies
// to the replies stream go through JetStream (deduplicated by the derived
// id); any other reply_to (a plain inbox) gets a core NATS publish.
func (r *Runtime) reply(req *envelope.Envelope, result any) error {
	if req.ReplyTo == "" {
		return nil
	}
	typ, payload := envelope.TaskResponse, result
	if rep, ok := result.(Reply); ok {
		typ, payload = rep.Type, rep.Payload
	}
	out, err := req.NewReply(typ, payload)
	if err != nil {
		return fmt.Errorf("%w: %w", errEncodeReply, err)
	}
	out.Sender = r.cfg.Agent
	msg, err := bus.EnvelopeMsg(req.ReplyTo, out)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(req.ReplyTo, r.cfg.Topology.ReplySubject("")) {
		return r.replyUnstored(req, msg)
	}
	ctx, cancel := context.WithTimeout(r.handlerCtx, settleTimeout)
	defer cancel()
	_, err = r.pub.PublishMsg(ctx, msg)
	return err
}

// replyUnstored publishes msg, the reply to req, with core NATS: its
// reply_to is outside the replies stream, so nothing stores it and it is
// lost if nobody listens now. It says so (log, Stats.UnstoredReplies).
func (r *Runtime) replyUnstored(req *envelope.Envelope, msg *nats.Msg) error {
	r.stats.unstoredReplies.Add(1)
	r.cfg.Logger.Info("reply_to is outside the replies stream: reply published unstored (lost if nobody listens)",
		"agent", r.cfg.Agent, "reply_to", req.ReplyTo, "envelope_id", req.ID)
	if err := r.conn.NATS().PublishMsg(msg); err != nil {
		return fmt.Errorf("publish reply to %s: %w", req.ReplyTo, err)
	}
	return nil
}

// retry hands d back for redelivery after delay, or, when delay is zero,
// after the backoff delay of its delivery.
func (r *Runtime) retry(d *bus.Delivery, delay time.Duration) Outcome {
	return r.retryAttempt(d, delay, int(d.NumDelivered))
}

// retryAttempt hands d back for redelivery after delay, or, when delay is
// zero, after the backoff delay of attempt.
func (r *Runtime) retryAttempt(d *bus.Delivery, delay time.Duration, attempt int) Outcome {
	r.stats.retried.Add(1)
	if delay <= 0 {
		delay = r.cfg.Backoff.Delay(attempt)
	}
	if err := d.NakWithDelay(delay); err != nil {
		r.cfg.Logger.Warn("nak failed; the task is redelivered after AckWait", "agent", r.cfg.Agent, "subject", d.Subject,
			"stream_seq", d.StreamSeq, "err", err)
	}
	return Outcome{Disposition: Retried}
}

// giveBack hands j's delivery, not run (or interrupted by shutdown), back
// for immediate redelivery, recording that it spent no attempt; a
// delivery whose ack timeout passed unseen is only released (another
// delivery of it runs).
func (r *Runtime) giveBack(j *job) Outcome {
	r.stats.returned.Add(1)
	r.endTurn(j)
	r.noteGivenBack(j)
	stale := j.d.Expired(time.Now(), staleMargin)
	if disposition.Decide(disposition.Facts{Finding: disposition.NotRun, Stale: stale}).Action == disposition.Release {
		j.d.Release()
	} else {
		_ = j.d.Nak()
	}
	return Outcome{Disposition: Returned}
}

// deadLetter copies d to the dead-letter stream with its provenance, waits
// for the copy to be stored, then terminates d. When the copy cannot be
// stored, d is redelivered instead: it is never dropped.
func (r *Runtime) deadLetter(d *bus.Delivery, env *envelope.Envelope, reason dlq.Reason, cause error) Outcome {
	return r.deadLetterCounted(d, env, reason, cause, d.NumDelivered)
}

// refuse settles a delivery refused before any handler ran (its envelope
// did not parse or validate, or no handler takes its type): dead-lettered
// with reason.
func (r *Runtime) refuse(d *bus.Delivery, env *envelope.Envelope, reason dlq.Reason, cause error) Outcome {
	dec := disposition.Decide(disposition.Facts{Finding: disposition.Refused, Reason: reason})
	return r.deadLetter(d, env, dec.Reason, cause)
}

// deadLetterAttempts dead-letters j's delivery as deadLetter does, its
// record saying how many attempts it had (not deliveries), and drops the
// task's attempt record.
func (r *Runtime) deadLetterAttempts(j *job, env *envelope.Envelope, reason dlq.Reason, cause error) Outcome {
	return r.deadLetterAttemptsWith(j, j.d.Header, env, reason, cause)
}

// deadLetterAttemptsWith is deadLetterAttempts with the dead letter's
// headers h in place of the delivery's.
func (r *Runtime) deadLetterAttemptsWith(j *job, h nats.Header, env *envelope.Envelope, reason dlq.Reason, cause error) Outcome {
	out := r.deadLetterHeader(j.d, h, env, reason, cause, uint64(max(j.acct.attempt(), 1)))
	if out.Disposition == DeadLettered {
		r.forget(j)
	}
	return out
}

func (r *Runtime) deadLetterCounted(d *bus.Delivery, env *envelope.Envelope, reason dlq.Reason, cause error, deliveries uint64) Outcome {
	return r.deadLetterHeader(d, d.Header, env, reason, cause, deliveries)
}

func (r *Runtime) deadLetterHeader(d *bus.Delivery, h nats.Header, env *envelope.Envelope, reason dlq.Reason, cause error, deliveries uint64) Outcome {
	if err := r.fileDead(d, h, env, reason, cause, deliveries); err != nil {
		return r.retry(d, 0) // disposition.DeadLetterRefused: redelivered after the backoff, never dropped
	}
	return Outcome{Disposition: DeadLettered, Reason: reason}
}

// fileDead copies d, with headers h, to the dead-letter stream, waits for
// the copy to be stored, then terminates d. It returns the publish error
// when the DLQ refused the copy (d is left unsettled).
func (r *Runtime) fileDead(d *bus.Delivery, h nats.Header, env *envelope.Envelope, reason dlq.Reason, cause error, deliveries uint64) error {
	now := time.Now().UTC()
	rec := dlq.Record{
		Data:         d.Data,
		Header:       h,
		Reason:       reason,
		Error:        cause.Error(),
		Agent:        r.cfg.Agent,
		Subject:      d.Subject,
		Stream:       d.Stream,
		Sequence:     d.StreamSeq,
		Deliveries:   deliveries,
		FirstFailure: now,
		LastFailure:  now,
	}
	if d.NumDelivered > 1 {
		rec.FirstFailure = d.Published
	}
	if env != nil {
		rec.TraceID = env.TraceID
	}
	log := r.deliveryLogger(d, env).With("stream_seq", d.StreamSeq, "reason", reason)
	ctx, cancel := context.WithTimeout(r.handlerCtx, settleTimeout)
	defer cancel()
	if _, err := r.dlq.Publish(ctx, &rec); err != nil {
		log.Error("dead-letter publish failed; the message stays in the tasks stream", "err", err, "cause", cause)
		return err
	}
	if err := d.Term(string(reason)); err != nil {
		log.Warn("term failed after dead-lettering; a redelivery will be dead-lettered again (same id, stored once)", "err", err)
	}
	r.stats.deadLettered.Add(1)
	log.Warn("dead-lettered", "cause", cause)
	return nil
}

// deadLetterVerdict dead-letters t, whose handler failed for good
// (reason): as deadLetterAttempts, except that when the DLQ refuses it
// the verdict is kept (see execRecords.verdicts) and the delivery handed
// back after its backoff: its redeliveries file the dead letter again
// without running the handler (issue 13 item 7).
func (r *Runtime) deadLetterVerdict(t *Task, reason dlq.Reason, cause error) Outcome {
	j := &t.job
	attempts := uint64(max(j.acct.attempt(), 1))
	if err := r.fileDead(j.d, j.d.Header, t.Envelope, reason, cause, attempts); err == nil {
		r.forget(j)
		return Outcome{Disposition: DeadLettered, Reason: reason}
	}
	d := j.d
	en := execEntry{Task: t.taskID, Key: t.Envelope.IdempotencyKey, Replay: replayKey(d), Dead: true, Seq: d.StreamSeq,
		Verdict: string(reason), Cause: cause.Error(), Attempts: attempts}
	r.execs.noteVerdict(en, func(bool) { r.retry(d, 0) })
	return Outcome{Disposition: Retried}
}

// fileVerdict settles a redelivery of a message whose handler already
// failed for good while the DLQ refused its dead letter: it files the
// dead letter again, the handler is not run.
func (r *Runtime) fileVerdict(j *job, v execVerdict) Outcome {
	d := j.d
	var env envelope.Envelope // for its trace id, if it decodes
	var envp *envelope.Envelope
	if envelope.Unmarshal(d.Data, &env) == nil {
		envp = &env
	}
	reason := disposition.Decide(disposition.Facts{Finding: disposition.Verdict, Reason: dlq.Reason(v.reason)}).Reason
	if err := r.fileDead(d, d.Header, envp, reason, errors.New(v.cause), v.attempts); err != nil {
		return r.retry(d, 0)
	}
	r.forget(j)
	r.execs.clearVerdict(d.StreamSeq)
	r.execs.record(execEntry{Task: v.task, Key: v.key, Replay: replayKey(d), Dead: true, Seq: d.StreamSeq}, func(bool) {})
	return Outcome{Disposition: DeadLettered, Reason: reason}
}

// rejectReason names the dead-letter reason of an envelope Parse refused.
func rejectReason(err error) dlq.Reason {
	switch {
	case errors.Is(err, envelope.ErrTooLarge):
		return dlq.ReasonTooLarge
	case errors.Is(err, envelope.ErrBadTimestamp):
		return dlq.ReasonBadTimestamp
	case errors.Is(err, envelope.ErrExpired):
		return dlq.ReasonExpired
	case errors.Is(err, envelope.ErrMissingField), errors.Is(err, envelope.ErrInvalidField):
		return dlq.ReasonInvalid
	default:
		return dlq.ReasonMalformed
	}
}
