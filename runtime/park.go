package runtime

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/jetagent/jetagent/resilience"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A subject whose breaker is open keeps only a few of its deliveries held
// in each replica (see holdLimits): every delivery unacknowledged spends
// the consumer's MaxAckPending, which all subjects and replicas share, so
// holding them all would stall every other subject. The others are parked:
// copied, in the tasks stream, to the subject's parked subject (see
// bus.Topology.ParkedSubject), which no consumer reads, and the original
// acknowledged. When the breaker closes, when a replica starts or finds
// its own breaker of the subject closed, parked tasks are moved back to
// their subject, at the end of the queue. A parked task keeps what it had
// done: its attempts and when it was first stored travel with it.
const (
	// HeaderParkedFrom is the stream sequence of the message a parked
	// task (or a task moved back from parking) was copied from.
	HeaderParkedFrom = "Jetagent-Parked-From"
	// HeaderFirstStored is when the server first stored the task (RFC
	// 3339), carried by parked tasks for the clock-skew check.
	HeaderFirstStored = "Jetagent-First-Stored"
)

// unparkEvery is how often a replica looks for parked tasks of subjects
// whose breaker is closed here (parked by another replica, or before a
// restart).
const unparkEvery = 2 * time.Second

// park hands j's delivery to the parker, which copies it to its subject's
// parked subject and acknowledges it once the copy is stored (see
// parkLoop). The copies are pipelined: a worker that parks a burst of a
// broken subject's tasks goes on to the next delivery at once, so the
// healthy subjects queued behind them are not kept waiting one publish
// round trip per parked task. After Stop has closed the parker (a handler
// that ignored cancellation), or should its queue ever be full, park
// stores the copy itself.
func (r *Runtime) park(j job, br *resilience.Breaker) Outcome {
	r.parker.mu.Lock()
	if !r.parker.closed {
		select {
		case r.parker.jobs <- parkJob{j: j, br: br}: // buffered for the whole window
			r.parker.mu.Unlock()
			return Outcome{Disposition: Parked}
		default:
		}
	}
	r.parker.mu.Unlock()
	f := r.startPark(parkJob{j: j, br: br})
	if f.fut == nil {
		return Outcome{Disposition: Returned}
	}
	ctx, cancel := context.WithTimeout(r.handlerCtx, settleTimeout)
	defer cancel()
	ack, err := await(ctx, f.fut)
	if !r.finishPark(f, ack, err) {
		return Outcome{Disposition: Returned}
	}
	return Outcome{Disposition: Parked}
}

// parker runs the parking pipeline of a runtime.
type parker struct {
	mu     sync.Mutex
	closed bool
	jobs   chan parkJob
	done   chan struct{} // closed when parkLoop has settled everything
}

type parkJob struct {
	j  job
	br *resilience.Breaker
}

// parkFlight is one copy being stored.
type parkFlight struct {
	parkJob
	msg   *nats.Msg
	from  string
	fut   jetstream.PubAckFuture // nil: the publish failed at once (handed back)
	start time.Time
}

// parkWindow bounds the copies in flight at once.
const parkWindow = 256

// parkLoop stores the copies handed to park, oldest first, and settles
// each original when its copy is stored (or hands it back when it cannot
// be). It returns once the parker is closed and everything is settled.
func (r *Runtime) parkLoop() {
	defer close(r.parker.done)
	var flying []*parkFlight
	in := r.parker.jobs
	for in != nil || len(flying) > 0 {
		if len(flying) == 0 {
			pj, ok := <-in
			if !ok {
				return
			}
			r.fly(&flying, pj)
			continue
		}
		oldest := flying[0]
		var accept chan parkJob
		if len(flying) < parkWindow {
			accept = in
		}
		timeout := time.NewTimer(max(settleTimeout-time.Since(oldest.start), 0))
		select {
		case pj, ok := <-accept:
			timeout.Stop()
			if !ok {
				in = nil
				continue
			}
			r.fly(&flying, pj)
		case ack := <-oldest.fut.Ok():
			timeout.Stop()
			flying = flying[1:]
			r.observeParked(oldest, r.finishPark(oldest, ack, nil))
		case err := <-oldest.fut.Err():
			timeout.Stop()
			flying = flying[1:]
			r.observeParked(oldest, r.finishPark(oldest, nil, err))
		case <-timeout.C:
			flying = flying[1:]
			r.observeParked(oldest, r.finishPark(oldest, nil, context.DeadlineExceeded))
		}
	}
}

// fly starts parking pj, adding it to flying unless its publish failed
// at once.
func (r *Runtime) fly(flying *[]*parkFlight, pj parkJob) {
	f := r.startPark(pj)
	if f.fut == nil {
		r.observeParked(f, false)
		return
	}
	*flying = append(*flying, f)
}

// await waits for f's publish acknowledgement until ctx ends.
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

// observeParked reports a parked delivery whose copy could not be stored
// once more, as handed back (it was reported Parked when handed over).
func (r *Runtime) observeParked(f *parkFlight, ok bool) {
	if !ok {
		r.observe(f.j.d.Subject, Outcome{Disposition: Returned}, 0)
	}
}

// closeParker stops park from handing over and waits (up to ctx) until
// the copies in flight are settled.
func (r *Runtime) closeParker(ctx context.Context) {
	r.parker.mu.Lock()
	if !r.parker.closed {
		r.parker.closed = true
		close(r.parker.jobs)
	}
	r.parker.mu.Unlock()
	select {
	case <-r.parker.done:
	case <-ctx.Done():
	}
}

// startPark publishes the parked copy of pj's delivery. Its id derives
// from the original's sequence: parking the same delivery again (its ack
// was lost) stores nothing new.
func (r *Runtime) startPark(pj parkJob) *parkFlight {
	d := pj.j.d
	m := r.copyOf(d.Subject, d.Data, d.Header, r.cfg.Topology.ParkedSubject(d.Subject))
	seq := strconv.FormatUint(d.StreamSeq, 10)
	m.Header.Set(HeaderParkedFrom, seq)
	m.Header.Set(HeaderAttempts, strconv.Itoa(pj.j.acct.before))
	if m.Header.Get(HeaderFirstStored) == "" {
		m.Header.Set(HeaderFirstStored, d.Published.UTC().Format(time.RFC3339Nano))
	}
	m.Header.Set(nats.MsgIdHdr, "jetagent-parked-"+r.cfg.Agent+"-"+seq)
	f := &parkFlight{parkJob: pj, msg: m, from: seq, start: time.Now()}
	fut, err := r.conn.JetStream().PublishMsgAsync(m)
	if err != nil {
		r.parkFailed(f, err)
		return f
	}
	f.fut = fut
	return f
}

// finishPark settles f's original once its copy is stored: a duplicate
// ack is trusted only when the stored message is this copy (ids are
// predictable; see storeOnce). It returns false when the copy could not
// be stored and the original was handed back instead.
func (r *Runtime) finishPark(f *parkFlight, ack *jetstream.PubAck, err error) bool {
	d := f.j.d
	if err == nil && ack.Duplicate {
		ctx, cancel := context.WithTimeout(r.handlerCtx, settleTimeout)
		if !r.isCopy(ctx, ack.Sequence, f.msg.Subject, f.from) {
			f.msg.Header.Del(nats.MsgIdHdr)
			_, err = r.conn.JetStream().PublishMsg(ctx, f.msg)
		}
		cancel()
	}
	if err != nil {
		r.parkFailed(f, err)
		return false
	}
	if aerr := d.Ack(); aerr != nil {
		r.cfg.Logger.Warn("parked task's original not acknowledged; its redelivery is parked again (stored once)", "agent", r.cfg.Agent,
			"stream_seq", d.StreamSeq, "err", aerr)
	}
	r.forget(&f.j)
	r.stats.parked.Add(1)
	return true
}

// parkFailed hands f's original back until the breaker's next probe.
func (r *Runtime) parkFailed(f *parkFlight, err error) {
	d := f.j.d
	r.cfg.Logger.Warn("task not parked; handed back until the breaker probes", "agent", r.cfg.Agent,
		"subject", d.Subject, "stream_seq", d.StreamSeq, "err", err)
	r.noteGivenBack(&f.j)
	_ = d.NakWithDelay(max(time.Until(f.br.ProbeAt()), time.Second))
	r.stats.returned.Add(1)
}

// copyOf returns a message to subject with data and a copy of header.
func (r *Runtime) copyOf(_ string, data []byte, header nats.Header, subject string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = data
	for k, v := range header {
		m.Header[k] = append([]string(nil), v...)
	}
	return m
}

// storeOnce publishes m with Nats-Msg-Id id (so that a retry stores
// nothing new). A duplicate ack is trusted only when the stored message is
// this copy (its HeaderParkedFrom is from, on m's subject): ids are
// predictable, and anyone allowed to publish on the subject could take one
// first; otherwise m is stored again without the id.
func (r *Runtime) storeOnce(ctx context.Context, m *nats.Msg, id, from string) error {
	m.Header.Set(nats.MsgIdHdr, id)
	js := r.conn.JetStream()
	ack, err := js.PublishMsg(ctx, m)
	if err != nil {
		return err
	}
	if !ack.Duplicate || r.isCopy(ctx, ack.Sequence, m.Subject, from) {
		return nil
	}
	m.Header.Del(nats.MsgIdHdr)
	_, err = js.PublishMsg(ctx, m)
	return err
}

// isCopy reports whether the message at seq is on subject and copied from
// the message from.
func (r *Runtime) isCopy(ctx context.Context, seq uint64, subject, from string) bool {
	st, err := r.conn.JetStream().Stream(ctx, r.cfg.Topology.TasksStream())
	if err != nil {
		return true // cannot tell: trust the server's duplicate detection
	}
	msg, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true // consumed already
	}
	if err != nil {
		return true
	}
	return msg.Subject == subject && msg.Header.Get(HeaderParkedFrom) == from
}

// unparking moves parked tasks back to their subjects, one subject at a
// time.
type unparking struct {
	mu sync.Mutex // one move at a time
}

// unpark moves at most limit of the parked tasks of subject back to it
// (all of them when limit is 0), oldest first, and returns how many it
// moved. Each is copied back with an id derived from its parked sequence
// (two replicas moving the same one store it once), then deleted. A pass
// moves only what was parked when it began, and stops once subject's
// breaker is open again: the tasks it moved back are parked again behind
// the breaker, and chasing them would move them round in a loop
// (TestUnparkingDoesNotChaseTasksParkedAgain).
func (r *Runtime) unpark(subject string, limit int) int {
	r.unparking.mu.Lock()
	defer r.unparking.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.handlerCtx, 30*time.Second)
	defer cancel()
	js := r.conn.JetStream()
	st, err := js.Stream(ctx, r.cfg.Topology.TasksStream())
	if err != nil {
		return 0
	}
	parked := r.cfg.Topology.ParkedSubject(subject)
	last := st.CachedInfo().State.LastSeq // what is parked later waits for the next pass
	breaker := r.breakers.Get(subject)
	moved := 0
	for seq := uint64(1); seq <= last && (limit == 0 || moved < limit) && breaker.State() != resilience.StateOpen; {
		msg, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(parked))
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgNotFound) {
				r.cfg.Logger.Warn("parked tasks not read", "agent", r.cfg.Agent, "subject", subject, "err", err)
			}
			break
		}
		if msg.Sequence > last {
			break
		}
		seq = msg.Sequence + 1
		m := r.copyOf(msg.Subject, msg.Data, msg.Header, subject)
		from := strconv.FormatUint(msg.Sequence, 10)
		m.Header.Set(HeaderParkedFrom, from)
		if err := r.storeOnce(ctx, m, "jetagent-unparked-"+r.cfg.Agent+"-"+from, from); err != nil {
			r.cfg.Logger.Warn("parked task not moved back; will try again", "agent", r.cfg.Agent, "subject", subject, "err", err)
			break
		}
		if err := st.DeleteMsg(ctx, msg.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			r.cfg.Logger.Warn("parked task moved back, but its parked copy not removed", "agent", r.cfg.Agent, "seq", msg.Sequence, "err", err)
		}
		moved++
	}
	if moved > 0 {
		r.cfg.Logger.Info("parked tasks moved back", "agent", r.cfg.Agent, "subject", subject, "tasks", moved)
	}
	return moved
}

// unparkLoop runs until Stop: at start, and every unparkEvery, it moves
// back the parked tasks of every subject whose breaker is not open here.
func (r *Runtime) unparkLoop() {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-r.beat:
			return
		case <-t.C:
		case <-r.unparkNow:
		}
		for _, subject := range r.parkedSubjects() {
			if r.breakers.Get(subject).State() != resilience.StateOpen {
				r.unpark(subject, 0)
			}
		}
		t.Reset(unparkEvery)
	}
}

// nudgeUnpark makes the unpark loop look now (a breaker closed, or a
// probe is due and none is held).
func (r *Runtime) nudgeUnpark() {
	select {
	case r.unparkNow <- struct{}{}:
	default:
	}
}

// parkedSubjects returns the task subjects that have parked tasks.
func (r *Runtime) parkedSubjects() []string {
	ctx, cancel := context.WithTimeout(r.handlerCtx, 5*time.Second)
	defer cancel()
	st, err := r.conn.JetStream().Stream(ctx, r.cfg.Topology.TasksStream())
	if err != nil {
		return nil
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(r.cfg.Topology.AgentParked(r.cfg.Agent)))
	if err != nil {
		return nil
	}
	var out []string
	for parked, n := range info.State.Subjects {
		if subject, ok := r.cfg.Topology.TaskSubjectOfParked(parked); ok && n > 0 {
			out = append(out, subject)
		}
	}
	return out
}
