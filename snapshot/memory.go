package snapshot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// Memory is a [Store] in memory, for tests and single-process use, with
// the semantics of [KV]: revisions come from one store-wide counter (like
// a stream sequence, so they only grow, also across a Delete), each task
// keeps its last few revisions, Delete removes a task with its history,
// and a snapshot saved with a TTL is removed by a timer (as a delete)
// unless saved again first. Snapshots are copied in and out. The zero
// value is not usable: call NewMemory.
//
// Watchers never slow Save down: each has an unbounded queue drained by
// its own goroutine, so a watcher that stops reading holds memory (every
// change since) until its ctx ends, and none is dropped or loses events.
type Memory struct {
	depth int

	mu       sync.Mutex
	rev      uint64
	agents   map[string]map[string][]*Snapshot // agent -> task id -> oldest first
	watchers map[*memWatcher]struct{}
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty store that keeps history revisions per task
// (less than 1: bus.DefaultSnapshotHistory, as the KV bucket).
func NewMemory(history int) *Memory {
	if history < 1 {
		history = bus.DefaultSnapshotHistory
	}
	return &Memory{
		depth:    history,
		agents:   make(map[string]map[string][]*Snapshot),
		watchers: make(map[*memWatcher]struct{}),
	}
}

// clone deep-copies s; an empty State becomes nil, as after a msgpack
// round trip.
func clone(s *Snapshot) *Snapshot {
	c := *s
	c.State = nil
	if len(s.State) > 0 {
		c.State = slices.Clone(s.State)
	}
	return &c
}

// Save writes a copy of s if the task's stored revision is expected (0:
// the task has no snapshot) and returns the new revision. It does not
// modify s. Errors: ErrInvalid (see Store.Save), ErrConflict, ctx's error.
func (m *Memory) Save(ctx context.Context, s *Snapshot, expected uint64) (uint64, error) {
	key, err := checkSnapshot(s)
	if err != nil {
		return 0, err
	}
	if err := checkTTL(s, expected); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	c := clone(s)
	c.TTL = 0
	m.mu.Lock()
	defer m.mu.Unlock()
	tasks := m.agents[s.Agent]
	hist := tasks[s.TaskID]
	var cur uint64
	if len(hist) > 0 {
		cur = hist[len(hist)-1].Revision
	}
	if cur != expected {
		return 0, fmt.Errorf("%w: %s at revision %d: stored revision is %d", ErrConflict, key, expected, cur)
	}
	m.rev++
	c.Revision = m.rev
	if tasks == nil {
		tasks = make(map[string][]*Snapshot)
		m.agents[s.Agent] = tasks
	}
	if len(hist) == m.depth {
		// Drop the oldest without keeping the old array alive for ever.
		hist = append(hist[:0:0], hist[1:]...)
	}
	tasks[s.TaskID] = append(hist, c)
	m.notify(Event{Agent: c.Agent, TaskID: c.TaskID, Snapshot: c})
	if s.TTL > 0 {
		rev := c.Revision
		time.AfterFunc(s.TTL, func() { m.expire(c.Agent, c.TaskID, rev) })
	}
	return c.Revision, nil
}

// expire removes the task if its latest revision is still rev (the one
// saved with a TTL), as a Delete would.
func (m *Memory) expire(agent, taskID string, rev uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	hist := m.agents[agent][taskID]
	if len(hist) == 0 || hist[len(hist)-1].Revision != rev {
		return
	}
	m.remove(agent, taskID)
}

// Load returns a copy of the task's latest snapshot with its Revision.
// Errors: ErrInvalid, ErrNotFound, ctx's error.
func (m *Memory) Load(ctx context.Context, agent, taskID string) (*Snapshot, error) {
	key, err := Key(agent, taskID)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	hist := m.agents[agent][taskID]
	m.mu.Unlock()
	if len(hist) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return clone(hist[len(hist)-1]), nil
}

// History returns copies of up to n of the task's snapshots, newest
// first. Errors: ErrInvalid (also for n < 1), ErrNotFound, ctx's error.
func (m *Memory) History(ctx context.Context, agent, taskID string, n int) ([]*Snapshot, error) {
	key, err := Key(agent, taskID)
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("%w: history of %d snapshots", ErrInvalid, n)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	hist := m.agents[agent][taskID] // never modified in place: safe to read unlocked
	m.mu.Unlock()
	if len(hist) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	out := make([]*Snapshot, 0, min(n, len(hist)))
	for i := len(hist) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, clone(hist[i]))
	}
	return out, nil
}

// Delete removes the task and its history, and tells watchers; a missing
// task is not an error (and no event). Errors: ErrInvalid, ctx's error.
func (m *Memory) Delete(ctx context.Context, agent, taskID string) error {
	if _, err := Key(agent, taskID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.agents[agent][taskID]; !ok {
		return nil
	}
	m.remove(agent, taskID)
	return nil
}

// remove deletes a task that exists and tells watchers; m.mu is held.
func (m *Memory) remove(agent, taskID string) {
	tasks := m.agents[agent]
	delete(tasks, taskID)
	if len(tasks) == 0 {
		delete(m.agents, agent)
	}
	m.rev++ // the delete takes a revision, as a purge marker does
	m.notify(Event{Agent: agent, TaskID: taskID})
}

// List returns copies of the latest snapshot of every task of agent,
// ordered by task id. Errors: ErrInvalid, ctx's error.
func (m *Memory) List(ctx context.Context, agent string) ([]*Snapshot, error) {
	if err := checkAgent(agent); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	latest := make([]*Snapshot, 0, len(m.agents[agent]))
	for _, hist := range m.agents[agent] {
		latest = append(latest, hist[len(hist)-1])
	}
	m.mu.Unlock()
	out := make([]*Snapshot, len(latest))
	for i, s := range latest {
		out[i] = clone(s)
	}
	slices.SortFunc(out, func(a, b *Snapshot) int { return strings.Compare(a.TaskID, b.TaskID) })
	return out, nil
}

// Watch sends an Event (with a copy of the snapshot, nil for a delete)
// for every change to agent's snapshots after the call, in revision
// order, until ctx ends; then it closes the channel and its goroutine
// ends. Errors: ErrInvalid, ctx's error.
func (m *Memory) Watch(ctx context.Context, agent string) (<-chan Event, error) {
	if err := checkAgent(agent); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w := &memWatcher{agent: agent, wake: make(chan struct{}, 1)}
	m.mu.Lock()
	m.watchers[w] = struct{}{}
	m.mu.Unlock()
	out := make(chan Event)
	go func() {
		defer close(out)
		defer func() {
			m.mu.Lock()
			delete(m.watchers, w)
			m.mu.Unlock()
		}()
		w.pump(ctx, out)
	}()
	return out, nil
}

// notify queues ev for the watchers of its agent; m.mu is held, so the
// queues are in revision order. Stored snapshots are never modified, so
// the copy for each watcher is made when it is delivered.
func (m *Memory) notify(ev Event) {
	for w := range m.watchers {
		if w.agent == ev.Agent {
			w.push(ev)
		}
	}
}

// memWatcher is one Watch call: an unbounded queue and a wake-up signal.
type memWatcher struct {
	agent string
	wake  chan struct{} // capacity 1: "the queue is not empty"

	mu    sync.Mutex
	queue []Event
}

func (w *memWatcher) push(ev Event) {
	w.mu.Lock()
	w.queue = append(w.queue, ev)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// pump delivers the queue to out until ctx ends.
func (w *memWatcher) pump(ctx context.Context, out chan<- Event) {
	for {
		w.mu.Lock()
		batch := w.queue
		w.queue = nil
		w.mu.Unlock()
		for _, ev := range batch {
			if ev.Snapshot != nil {
				ev.Snapshot = clone(ev.Snapshot)
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return
		}
	}
}
