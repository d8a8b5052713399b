package runtime

import (
	"sync"

	"github.com/jetagent/jetagent/bus"
)

// queue holds the deliveries taken from the subscriber until a worker runs
// them. Pushing never blocks, so nothing waits unseen in a client-side
// buffer: every delivery the agent holds is queued here, running, held by a
// breaker or waiting its turn as a suspect, and all of them get InProgress
// heartbeats. The subscriber's window bounds it: a replica holds at most
// Concurrency + Prefetch deliveries in all.
type queue struct {
	mu     sync.Mutex
	cond   sync.Cond
	items  []queued // FIFO from head
	head   int
	closed bool
}

type queued struct {
	j job
}

func newQueue() *queue {
	q := &queue{}
	q.cond.L = &q.mu
	return q
}

// push appends j; it returns false once the queue is closed.
func (q *queue) push(j job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.items = append(q.items, queued{j: j})
	q.cond.Signal()
	return true
}

// pushFront puts released deliveries ahead of new ones.
func (q *queue) pushFront(js []job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	front := make([]queued, 0, len(js)+len(q.items)-q.head)
	for _, j := range js {
		front = append(front, queued{j: j})
	}
	q.items = append(front, q.items[q.head:]...)
	q.head = 0
	q.cond.Broadcast()
}

// pop returns the oldest job, waiting for one; ok is false once the queue
// is closed and empty.
func (q *queue) pop() (j job, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.items) && !q.closed {
		q.cond.Wait()
	}
	if q.head == len(q.items) {
		return job{}, false
	}
	j = q.items[q.head].j
	q.items[q.head] = queued{}
	q.head++
	if q.head == len(q.items) { // reuse the backing array once drained
		q.items, q.head = q.items[:0], 0
	}
	return j, true
}

// close wakes the workers; they finish what is queued, then stop.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}

// appendAll appends the deliveries queued (for heartbeats).
func (q *queue) appendAll(dst []*bus.Delivery) []*bus.Delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, it := range q.items[q.head:] {
		dst = append(dst, it.j.d)
	}
	return dst
}

// drain removes and returns everything queued.
func (q *queue) drain() []job {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]job, 0, len(q.items)-q.head)
	for _, it := range q.items[q.head:] {
		out = append(out, it.j)
	}
	q.items, q.head = nil, 0
	return out
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}
