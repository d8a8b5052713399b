package runtime

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime/disposition"
)

// holding keeps some of the deliveries whose subject's breaker is open:
// the probe, and those released first when it closes. They stay
// unacknowledged (kept alive by heartbeats), so they use up no attempt and
// are never dead-lettered for the breaker's sake. Held deliveries spend
// the consumer's MaxAckPending, which every subject and replica shares, and
// the replica's window: a replica holds at most holdLimits of them, and
// parks the others (see park).
type holding struct {
	n atomic.Int64 // held deliveries, read without the lock on the hot path

	mu        sync.Mutex
	closed    bool
	bySubject map[string]*heldSubject
}

type heldSubject struct {
	queue []job
	timer *time.Timer
}

// Why add did not hold a delivery.
const (
	holdFull   = 1 // the subject, or the replica, holds as many as it may
	holdClosed = 2 // shutting down
)

// add holds j, unless its subject holds perSubject deliveries already or
// the replica holds total; it returns 0 when it held j, else holdFull or
// holdClosed.
func (h *holding) add(j job, perSubject, total int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return holdClosed
	}
	hs := h.bySubject[j.d.Subject]
	if int(h.n.Load()) >= total || hs != nil && len(hs.queue) >= perSubject {
		return holdFull
	}
	if hs == nil {
		hs = &heldSubject{}
		h.bySubject[j.d.Subject] = hs
	}
	hs.queue = append(hs.queue, j)
	h.n.Add(1)
	return 0
}

// take removes and returns the oldest held job of subject, or all of them;
// nothing once closed (drain hands those back at shutdown).
func (h *holding) take(subject string, all bool) []job {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	hs := h.bySubject[subject]
	if hs == nil || len(hs.queue) == 0 {
		return nil
	}
	n := 1
	if all {
		n = len(hs.queue)
	}
	out := append([]job(nil), hs.queue[:n]...)
	hs.queue = hs.queue[n:]
	if len(hs.queue) == 0 {
		if hs.timer != nil {
			hs.timer.Stop()
		}
		delete(h.bySubject, subject)
	}
	h.n.Add(-int64(n))
	return out
}

// arm makes fn run after delay for subject, replacing an earlier timer.
func (h *holding) arm(subject string, delay time.Duration, fn func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hs := h.bySubject[subject]
	if h.closed || hs == nil {
		return
	}
	if hs.timer != nil {
		hs.timer.Stop()
	}
	hs.timer = time.AfterFunc(delay, fn)
}

// takeExpired removes and returns the held jobs whose task's deadline has
// passed at now.
func (h *holding) takeExpired(now time.Time) []job {
	if h.n.Load() == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	var out []job
	for _, hs := range h.bySubject {
		kept := hs.queue[:0]
		for _, j := range hs.queue {
			if taskExpired(j.env, now) {
				out = append(out, j)
			} else {
				kept = append(kept, j)
			}
		}
		hs.queue = kept
	}
	h.n.Add(-int64(len(out)))
	return out
}

// appendAll appends every held delivery to dst (for heartbeats).
func (h *holding) appendAll(dst []*bus.Delivery) []*bus.Delivery {
	if h.n.Load() == 0 {
		return dst
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, hs := range h.bySubject {
		for _, j := range hs.queue {
			dst = append(dst, j.d)
		}
	}
	return dst
}

func (h *holding) count() int { return int(h.n.Load()) }

// close stops every timer and refuses further holds.
func (h *holding) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, hs := range h.bySubject {
		if hs.timer != nil {
			hs.timer.Stop()
		}
	}
}

// drain removes and returns everything held (after close, at shutdown).
func (h *holding) drain() []job {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []job
	for s, hs := range h.bySubject {
		out = append(out, hs.queue...)
		delete(h.bySubject, s)
	}
	h.n.Store(0)
	return out
}

// holdLimits are how many deliveries a replica holds for one subject whose
// breaker is open (its Concurrency, so that a closing breaker has work for
// every worker) and for all of them (half its Prefetch): the rest of its
// window stays free for the other subjects.
func (r *Runtime) holdLimits() (perSubject, total int) {
	return r.cfg.Concurrency, max(1, r.cfg.Consumer.Prefetch/2)
}

// holdBack holds j because its subject's breaker refused it, and arranges
// for the breaker's next probe; beyond the hold limits it parks j.
func (r *Runtime) holdBack(j job, br *resilience.Breaker) Outcome {
	per, total := r.holdLimits()
	added := r.hold.add(j, per, total) // held now, unless full or closed
	switch disposition.Decide(disposition.Facts{Finding: disposition.BreakerOpen,
		Stopping: added == holdClosed, HoldFull: added == holdFull}).Action {
	case disposition.GiveBack:
		return r.giveBack(&j)
	case disposition.Park:
		return r.park(j, br)
	}
	r.stats.held.Add(1)
	r.scheduleProbe(j.d.Subject, br)
	return Outcome{Disposition: Held}
}

// scheduleProbe releases one held delivery of subject as the probe when
// the breaker half-opens. If it is half-open already, another delivery is
// the probe; its outcome releases the rest, and this timer is only a
// safety net.
func (r *Runtime) scheduleProbe(subject string, br *resilience.Breaker) {
	delay := r.heartbeatInterval()
	if at := br.ProbeAt(); !at.IsZero() {
		delay = max(time.Until(at), 0)
	}
	r.hold.arm(subject, delay, func() { r.release(subject, false) })
}

// afterOutcome runs once a delivery of subject is settled and its outcome
// recorded by br: when the breaker closed, every held delivery of subject
// goes back to the workers; when it is (again) open, the next probe is
// scheduled.
func (r *Runtime) afterOutcome(subject string, br *resilience.Breaker) {
	if r.hold.count() == 0 {
		return
	}
	switch br.State() {
	case resilience.StateClosed:
		r.release(subject, true)
		r.nudgeUnpark() // and its parked tasks come back
	case resilience.StateOpen:
		r.scheduleProbe(subject, br)
	}
}

// release hands the oldest held delivery of subject (or all of them) to
// the workers, ahead of new deliveries.
func (r *Runtime) release(subject string, all bool) {
	if js := r.hold.take(subject, all); len(js) > 0 {
		r.queue.pushFront(js)
		return
	}
	if !all {
		r.nudgeUnpark() // no probe held here: a parked task will be
	}
}
