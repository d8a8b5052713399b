package runtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/snapshot"
)

// TaskState is the payload of the task.update replies to task.cancel,
// state.query and state.restore, and of a cancelled task's reply.
type TaskState struct {
	TaskID  string          `msgpack:"task_id"`
	Found   bool            `msgpack:"found"`
	Status  snapshot.Status `msgpack:"status,omitempty"`
	Step    int             `msgpack:"step"`
	Running int             `msgpack:"running,omitempty"`
	Updated time.Time       `msgpack:"updated,omitempty"`
}

// RestoreRequest is the payload of a state.restore envelope: copy the
// snapshot of the envelope's task_id from agent From to the receiving
// agent, which then resumes the task where From stopped (the seed's
// failover to a backup agent).
type RestoreRequest struct {
	From string `msgpack:"from"`
}

// ownerUnseen is the owner of the cancel marker of a task the agent had
// not seen: it says "cancelled", not "found".
const ownerUnseen = "cancel-unseen"

func stateOf(taskID string, s *snapshot.Snapshot) TaskState {
	if s == nil {
		return TaskState{TaskID: taskID}
	}
	return TaskState{TaskID: taskID, Found: s.Owner != ownerUnseen, Status: s.Status, Step: s.Step, Running: s.Running, Updated: s.Updated}
}

// storeError marks the store's refusals of what a task asked for
// (snapshot.ErrInvalid: a task id or agent name it cannot hold) as
// permanent: retrying the same input cannot succeed.
func storeError(err error) error {
	if errors.Is(err, snapshot.ErrInvalid) {
		return resilience.Permanent(err)
	}
	return err
}

// controlHandlers are the built-in handlers of the task-control payload
// types, used unless the agent registered its own.
func (r *Runtime) controlHandlers() map[envelope.PayloadType]Handler {
	return map[envelope.PayloadType]Handler{
		envelope.TaskCancel:   r.handleCancel,
		envelope.StateQuery:   r.handleStateQuery,
		envelope.StateRestore: r.handleStateRestore,
	}
}

func controlTaskID(t *Task) (string, error) {
	if t.Envelope.TaskID == "" {
		return "", resilience.Permanent(fmt.Errorf("%w: %s needs a task_id", envelope.ErrMissingField, t.Envelope.PayloadType))
	}
	return t.Envelope.TaskID, nil
}

// handleCancel marks the task cancelled; a running task stops at its next
// Step or Checkpoint, one not started yet stops at its first. For a task
// the agent has no snapshot of, it answers found: false and leaves a
// marker that cancels the task if it arrives within CancelMarkerTTL, then
// expires: cancels of ids that never come leave nothing behind.
func (r *Runtime) handleCancel(ctx context.Context, t *Task) (any, error) {
	id, err := controlTaskID(t)
	if err != nil {
		return nil, err
	}
	for range 10 {
		s, err := r.snapshots.Load(ctx, r.cfg.Agent, id)
		var rev uint64
		next := snapshot.Snapshot{Agent: r.cfg.Agent, TaskID: id, Status: snapshot.Cancelled, Owner: "cancel"}
		switch {
		case errors.Is(err, snapshot.ErrNotFound):
			next.Owner, next.TTL = ownerUnseen, r.cfg.CancelMarkerTTL
		case err != nil:
			return nil, storeError(err)
		case s.Status.Terminal():
			return Reply{Type: envelope.TaskUpdate, Payload: stateOf(id, s)}, nil
		default:
			next, rev = *s, s.Revision
			next.Status, next.Owner = snapshot.Cancelled, "cancel"
		}
		next.Updated = time.Now().UTC()
		newRev, err := r.snapshots.Save(ctx, &next, rev)
		if errors.Is(err, snapshot.ErrConflict) {
			continue // the task moved on meanwhile: look again
		}
		if err != nil {
			return nil, storeError(err)
		}
		next.Revision = newRev
		r.cfg.Logger.Info("task cancelled", "agent", r.cfg.Agent, "task_id", id)
		return Reply{Type: envelope.TaskUpdate, Payload: stateOf(id, &next)}, nil
	}
	return nil, fmt.Errorf("runtime: cancel %s: the task keeps changing; try again", id)
}

// handleStateQuery answers the task's status and last step.
func (r *Runtime) handleStateQuery(ctx context.Context, t *Task) (any, error) {
	id, err := controlTaskID(t)
	if err != nil {
		return nil, err
	}
	s, err := r.snapshots.Load(ctx, r.cfg.Agent, id)
	if err != nil && !errors.Is(err, snapshot.ErrNotFound) {
		return nil, storeError(err)
	}
	return Reply{Type: envelope.TaskUpdate, Payload: stateOf(id, s)}, nil
}

// handleStateRestore copies another agent's snapshot of the task to this
// agent, replacing this agent's own.
func (r *Runtime) handleStateRestore(ctx context.Context, t *Task) (any, error) {
	id, err := controlTaskID(t)
	if err != nil {
		return nil, err
	}
	var req RestoreRequest
	if err := t.Decode(&req); err != nil || req.From == "" {
		return nil, resilience.Permanent(fmt.Errorf("%w: state.restore needs a payload {\"from\": agent}", envelope.ErrInvalidField))
	}
	if err := bus.ValidateName(req.From); err != nil {
		return nil, resilience.Permanent(fmt.Errorf("%w: state.restore from: %w", envelope.ErrInvalidField, err))
	}
	src, err := r.snapshots.Load(ctx, req.From, id)
	if errors.Is(err, snapshot.ErrNotFound) || errors.Is(err, snapshot.ErrNoBucket) {
		return nil, resilience.Permanent(fmt.Errorf("runtime: restore %s: agent %s has no snapshot of it: %w", id, req.From, err))
	}
	if err != nil {
		return nil, storeError(err)
	}
	for range 10 {
		var rev uint64
		if cur, err := r.snapshots.Load(ctx, r.cfg.Agent, id); err == nil {
			rev = cur.Revision
		} else if !errors.Is(err, snapshot.ErrNotFound) {
			return nil, storeError(err)
		}
		copied := *src
		copied.Agent, copied.Running, copied.Owner, copied.Updated = r.cfg.Agent, 0, "restore", time.Now().UTC()
		if copied.Status == snapshot.Submitted {
			copied.Status = snapshot.Working
		}
		newRev, err := r.snapshots.Save(ctx, &copied, rev)
		if errors.Is(err, snapshot.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, storeError(err)
		}
		copied.Revision = newRev
		r.cfg.Logger.Info("task restored", "agent", r.cfg.Agent, "task_id", id, "from", req.From, "step", copied.Step)
		return Reply{Type: envelope.TaskUpdate, Payload: stateOf(id, &copied)}, nil
	}
	return nil, fmt.Errorf("runtime: restore %s: the task keeps changing; try again", id)
}
