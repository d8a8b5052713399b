package runtime

import (
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// Bounds of the heartbeat goroutine's tick.
const (
	minHeartbeat = 50 * time.Millisecond
	maxHeartbeat = time.Second
)

// slot records what one worker is running, for the heartbeat goroutine.
// Setting and clearing it is two uncontended lock pairs per delivery: no
// timer or goroutine per message.
type slot struct {
	mu       sync.Mutex
	d        *bus.Delivery
	started  time.Time
	deadline time.Time
}

func (s *slot) set(d *bus.Delivery, started, deadline time.Time) {
	s.mu.Lock()
	s.d, s.started, s.deadline = d, started, deadline
	s.mu.Unlock()
}

func (s *slot) clear() {
	s.mu.Lock()
	s.d = nil
	s.mu.Unlock()
}

// shortestAckTimeout is the shortest ack timeout the server may apply to a
// delivery: AckWait, or a BackOff step.
func (r *Runtime) shortestAckTimeout() time.Duration {
	wait := r.cfg.Consumer.AckWait
	for _, b := range r.cfg.Consumer.BackOff {
		wait = min(wait, b)
	}
	return wait
}

// heartbeatInterval is a quarter of the shortest ack timeout: the safety
// net of a held subject's probe timer.
func (r *Runtime) heartbeatInterval() time.Duration {
	return max(r.shortestAckTimeout()/4, minHeartbeat)
}

// heartbeatTick is how often the heartbeat goroutine looks at what the
// replica holds: a twelfth of the shortest ack timeout, within
// [minHeartbeat, maxHeartbeat].
func (r *Runtime) heartbeatTick() time.Duration {
	return min(max(r.shortestAckTimeout()/12, minHeartbeat), maxHeartbeat)
}

// beatDue reports whether d needs a heartbeat at now: a third of its own
// ack timeout (BackOff's step for its delivery count, or AckWait; the
// shorter of this replica's and the consumer's on the server) has passed
// since the server last heard of it. A delivery whose timeout passed
// unseen (a freeze) gets none: the server has redelivered it.
func beatDue(d *bus.Delivery, now time.Time) bool {
	timeout := d.AckTimeout()
	if timeout <= 0 {
		return true
	}
	age := now.Sub(d.LastAlive())
	return age >= timeout/3 && age < timeout-staleMargin
}

// heartbeats ticks until Stop. On each tick it sends InProgress for every
// delivery the replica holds whose own cadence is due (see beatDue): each
// handler running within its deadline, each delivery queued, held by an
// open breaker or waiting its turn as a suspect. So a delivery gets two to
// three heartbeats per ack timeout, whatever the other deliveries' ack
// timeouts are. A handler past its deadline gets no more heartbeats: if it
// hangs, its task is redelivered after its ack timeout.
//
// The tick also dead-letters held tasks whose deadline passed, hands the
// suspect turn on from a hung suspect, and stops pulling while every
// worker is stuck.
func (r *Runtime) heartbeats() {
	defer close(r.beatDone)
	tick := time.NewTicker(r.heartbeatTick())
	defer tick.Stop()
	var due []*bus.Delivery
	for {
		select {
		case <-r.beat:
			return
		case now := <-tick.C:
			due = due[:0]
			for i := range r.slots {
				s := &r.slots[i]
				s.mu.Lock()
				if s.d != nil && now.Before(s.deadline) {
					due = append(due, s.d)
				}
				s.mu.Unlock()
			}
			due = r.hold.appendAll(due)
			due = r.queue.appendAll(due)
			due = r.suspects.appendWaiting(due)
			for _, d := range due {
				if !beatDue(d, now) {
					continue
				}
				if err := d.InProgress(); err == nil {
					r.stats.heartbeats.Add(1)
					if r.cfg.Observer != nil {
						r.cfg.Observer.Heartbeat()
					}
				}
			}
			r.housekeep(now)
		}
	}
}

// housekeep is the rest of a heartbeat tick.
func (r *Runtime) housekeep(now time.Time) {
	if expired := r.hold.takeExpired(now); len(expired) > 0 {
		r.queue.pushFront(expired) // dead-lettered "expired" by a worker
	}
	if next, ok := r.suspects.expire(now); ok {
		r.queue.pushFront([]job{next})
	}
	r.checkWedged(now)
}
