package runtime

import (
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// minHeartbeat bounds how often heartbeats are sent.
const minHeartbeat = 100 * time.Millisecond

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

// heartbeatInterval is a quarter of the shortest ack timeout the server
// may apply (AckWait, or a BackOff step, which replaces it). A delivery is
// heartbeated from half an interval after it arrived, so the server hears
// about it at most 0.375 of that timeout after handing it out, with room
// for a late tick.
func (r *Runtime) heartbeatInterval() time.Duration {
	wait := r.cfg.Consumer.AckWait
	for _, b := range r.cfg.Consumer.BackOff {
		wait = min(wait, b)
	}
	return max(wait/4, minHeartbeat)
}

// heartbeats sends InProgress, every heartbeatInterval, for every handler
// that has run half an interval and is still within its deadline, for
// every delivery queued that long, and for every delivery held by an open
// breaker, so that the server redelivers none of them to another worker. A handler past its deadline gets no more
// heartbeats: if it hangs, its task is redelivered after AckWait.
func (r *Runtime) heartbeats() {
	defer close(r.beatDone)
	every := r.heartbeatInterval()
	young := every / 2 // younger deliveries need no heartbeat yet
	tick := time.NewTicker(every)
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
				if s.d != nil && now.Sub(s.started) >= young && now.Before(s.deadline) {
					due = append(due, s.d)
				}
				s.mu.Unlock()
			}
			due = r.hold.appendAll(due)
			due = r.queue.appendWaiting(due, now, young)
			for _, d := range due {
				if err := d.InProgress(); err == nil {
					r.stats.heartbeats.Add(1)
					if r.cfg.Observer != nil {
						r.cfg.Observer.Heartbeat()
					}
				}
			}
		}
	}
}
