package runtime

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime/disposition"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/vmihailenco/msgpack/v5"
)

// Errors a handler returns as they are, for the runtime to settle.
var (
	// ErrCancelled: a task.cancel for this task arrived; the task stops at
	// its next Step or Checkpoint. The runtime acks it, answers its
	// reply_to with a task.update {"status": "cancelled"} and removes its
	// snapshot.
	ErrCancelled = disposition.ErrCancelled

	// ErrTaskTaken: another delivery runs this task (a duplicate message
	// with the same task id, or, after a redelivery, a newer delivery of
	// this one). The step was not run. The runtime settles the duplicate
	// without running anything more.
	ErrTaskTaken = disposition.ErrTaskTaken
)

// takenError says who has the task.
type takenError struct {
	owner string
	same  bool // the owner is a newer delivery of this very message
}

func (e *takenError) Error() string {
	return fmt.Sprintf("%v (owner %s)", ErrTaskTaken, e.owner)
}

func (e *takenError) Unwrap() []error {
	if e.same {
		return []error{ErrTaskTaken, disposition.ErrSuperseded, snapshot.ErrConflict}
	}
	return []error{ErrTaskTaken, snapshot.ErrConflict}
}

// progress is a task's view of its snapshot.
type progress struct {
	rt     *Runtime
	taskID string
	seq    uint64 // the delivery's stream sequence and count, for owner
	nth    uint64
	owner  string // set on first use
	loaded bool
	used   bool               // the handler touched checkpoints: clean up at the end
	snap   *snapshot.Snapshot // nil: none stored
}

// TaskID returns the task's id: the envelope's task_id, or its id.
func (t *Task) TaskID() string { return t.taskID }

// LastStep returns the last step a previous delivery completed (0 when
// the task starts fresh). It loads the task's checkpoint on first use.
// Errors: the store's (wrapped), ErrCancelled.
func (t *Task) LastStep(ctx context.Context) (int, error) {
	if err := t.load(ctx); err != nil {
		return 0, err
	}
	if t.snap == nil {
		return 0, nil
	}
	return t.snap.Step, nil
}

// State decodes the state saved with the last completed step into v and
// reports whether there was one.
func (t *Task) State(ctx context.Context, v any) (bool, error) {
	if err := t.load(ctx); err != nil {
		return false, err
	}
	if t.snap == nil || len(t.snap.State) == 0 {
		return false, nil
	}
	if err := msgpack.Unmarshal(t.snap.State, v); err != nil {
		return false, fmt.Errorf("runtime: task %s state: %w", t.taskID, err)
	}
	return true, nil
}

// Step runs step n of the task unless a previous delivery completed it:
// it claims the step in the task's snapshot (compare-and-swap), runs fn,
// and records the step as done with the state fn returns. Steps are
// numbered from 1 and run in order. So a task killed after step 3
// resumes at step 4 on whichever replica gets it next, and when two
// deliveries race on one task only one runs each step: the other's claim
// fails and Step returns ErrTaskTaken without running fn.
//
// A step interrupted by a crash (claimed, never recorded) runs again on
// the next delivery: make the step itself idempotent if that matters.
// Errors: fn's, ErrTaskTaken, ErrCancelled, the store's (wrapped).
func (t *Task) Step(ctx context.Context, n int, fn func(ctx context.Context) (state any, err error)) error {
	if n < 1 {
		return fmt.Errorf("runtime: task %s: steps are numbered from 1, got %d", t.taskID, n)
	}
	if err := t.load(ctx); err != nil {
		return err
	}
	if t.snap != nil && t.snap.Step >= n {
		return nil // done by an earlier delivery
	}
	if err := t.claim(n); err != nil {
		return err
	}
	if err := t.write(ctx, func(s *snapshot.Snapshot) { s.Running = n }); err != nil {
		return err
	}
	state, err := fn(ctx)
	if err != nil {
		return err
	}
	return t.Checkpoint(ctx, n, state)
}

// Checkpoint records that step n is done, with state (msgpack-encoded;
// nil keeps none), compare-and-swapping the task's snapshot. Use it
// directly when a handler tracks its own progress; Step calls it.
// Errors: ErrTaskTaken, ErrCancelled, the store's (wrapped), the state's
// encoding error.
func (t *Task) Checkpoint(ctx context.Context, n int, state any) error {
	var raw []byte
	if state != nil {
		var err error
		if raw, err = msgpack.Marshal(state); err != nil {
			return fmt.Errorf("runtime: task %s: encode state: %w", t.taskID, err)
		}
	}
	if err := t.load(ctx); err != nil {
		return err
	}
	return t.write(ctx, func(s *snapshot.Snapshot) {
		s.Step, s.Running, s.State = n, 0, raw
	})
}

// SetStatus moves the task to status (e.g. snapshot.InputRequired), if
// the transition is legal. Errors: snapshot.ErrIllegalTransition,
// ErrTaskTaken, ErrCancelled, the store's (wrapped).
func (t *Task) SetStatus(ctx context.Context, status snapshot.Status) error {
	if err := t.load(ctx); err != nil {
		return err
	}
	var from snapshot.Status
	if t.snap != nil {
		from = t.snap.Status
	}
	if err := snapshot.Transition(from, status); err != nil {
		return err
	}
	return t.write(ctx, func(s *snapshot.Snapshot) { s.Status = status })
}

// load reads the task's snapshot once.
func (t *Task) load(ctx context.Context) error {
	t.used = true
	if t.owner == "" {
		t.owner = ownerOf(t.rt.replica, t.seq, t.nth)
	}
	if t.loaded {
		return t.cancelled()
	}
	s, err := t.rt.snapshots.Load(ctx, t.rt.cfg.Agent, t.taskID)
	switch {
	case errors.Is(err, snapshot.ErrNotFound):
		t.snap = nil
	case err != nil:
		return fmt.Errorf("runtime: task %s: load checkpoint: %w", t.taskID, storeError(err))
	default:
		t.snap = s
	}
	t.loaded = true
	return t.cancelled()
}

func (t *Task) cancelled() error {
	if t.snap != nil && t.snap.Status == snapshot.Cancelled {
		return ErrCancelled
	}
	return nil
}

// claim refuses step n when another live delivery has claimed it: a
// duplicate message's claim younger than the handler timeout, or a newer
// delivery of this message (the server redelivered it: this one is
// stale). An older delivery's claim of this message is taken over: the
// server redelivered because that one stopped answering.
func (t *Task) claim(n int) error {
	s := t.snap
	if s == nil || s.Running == 0 || s.Owner == t.owner {
		return nil
	}
	oseq, odel, ok := parseOwner(s.Owner)
	seq, del, _ := parseOwner(t.owner)
	switch {
	case ok && oseq == seq && odel > del:
		return &takenError{owner: s.Owner, same: true}
	case ok && oseq == seq:
		return nil // our message, redelivered: the older delivery is gone
	case time.Since(s.Updated) < t.rt.cfg.HandlerTimeout:
		return &takenError{owner: s.Owner}
	default:
		return nil // an abandoned claim
	}
}

// write applies change to a copy of the snapshot and saves it against the
// revision last seen. On a conflict it reloads: a cancel shows as
// ErrCancelled, anything else as ErrTaskTaken.
func (t *Task) write(ctx context.Context, change func(*snapshot.Snapshot)) error {
	next := snapshot.Snapshot{Agent: t.rt.cfg.Agent, TaskID: t.taskID, Status: snapshot.Working}
	var rev uint64
	if t.snap != nil {
		next = *t.snap
		rev = t.snap.Revision
	}
	change(&next)
	next.Owner, next.Updated = t.owner, time.Now().UTC()
	newRev, err := t.rt.snapshots.Save(ctx, &next, rev)
	if errors.Is(err, snapshot.ErrConflict) {
		t.loaded = false
		if lerr := t.load(ctx); lerr != nil {
			return lerr // ErrCancelled, or the store's
		}
		owner := ""
		if t.snap != nil {
			owner = t.snap.Owner
		}
		seq, _, _ := parseOwner(t.owner)
		oseq, _, ok := parseOwner(owner)
		return &takenError{owner: owner, same: ok && oseq == seq}
	}
	if err != nil {
		return fmt.Errorf("runtime: task %s: checkpoint: %w", t.taskID, storeError(err))
	}
	next.Revision = newRev
	t.snap = &next
	return nil
}

// ownerOf names a delivery: "<replica>.<stream seq>.<delivery>".
func ownerOf(replica string, seq, delivered uint64) string {
	return replica + "." + strconv.FormatUint(seq, 10) + "." + strconv.FormatUint(delivered, 10)
}

func parseOwner(o string) (seq, delivered uint64, ok bool) {
	parts := strings.Split(o, ".")
	if len(parts) != 3 {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseUint(parts[1], 10, 64)
	delivered, err2 := strconv.ParseUint(parts[2], 10, 64)
	return seq, delivered, err1 == nil && err2 == nil
}

// taskIDOf returns the task id an envelope belongs to.
func taskIDOf(env *envelope.Envelope) string {
	if env.TaskID != "" {
		return env.TaskID
	}
	return env.ID
}
