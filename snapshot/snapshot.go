package snapshot

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotFound: no snapshot for that agent and task.
	ErrNotFound = errors.New("snapshot: not found")
	// ErrConflict: the snapshot changed since the revision the caller
	// expected (another replica advanced the task, or it was deleted).
	ErrConflict = errors.New("snapshot: revision conflict")
	// ErrIllegalTransition: the status change is not allowed (see Status).
	ErrIllegalTransition = errors.New("snapshot: illegal status transition")
	// ErrInvalid: an agent name, task id or snapshot field is unusable.
	ErrInvalid = errors.New("snapshot: invalid")
	// ErrCorrupt: a stored value does not decode as a snapshot (written
	// by something else, or damaged). Retrying will not help.
	ErrCorrupt = errors.New("snapshot: corrupt value")
)

// Status is a task's state, after the seed protocol.
type Status string

// Statuses. completed, failed and cancelled are terminal.
const (
	Submitted     Status = "submitted"
	Working       Status = "working"
	InputRequired Status = "input_required"
	Completed     Status = "completed"
	Failed        Status = "failed"
	Cancelled     Status = "cancelled"
)

// transitions lists the legal moves; a status may also stay as it is
// (a checkpoint within working), except the terminal ones.
var transitions = map[Status][]Status{
	Submitted:     {Working, Cancelled, Failed},
	Working:       {Working, InputRequired, Completed, Failed, Cancelled},
	InputRequired: {InputRequired, Working, Cancelled, Failed},
}

// Terminal reports whether s ends the task.
func (s Status) Terminal() bool { return s == Completed || s == Failed || s == Cancelled }

// Valid reports whether s is one of the statuses above.
func (s Status) Valid() bool {
	switch s {
	case Submitted, Working, InputRequired, Completed, Failed, Cancelled:
		return true
	}
	return false
}

// CanTransition reports whether a task may go from s to next.
func (s Status) CanTransition(next Status) bool {
	for _, t := range transitions[s] {
		if t == next {
			return true
		}
	}
	return false
}

// Transition returns nil when a task may go from `from` to `to` (a task
// with no snapshot yet is Submitted), or an error wrapping
// ErrIllegalTransition that names both.
func Transition(from, to Status) error {
	if from == "" {
		from = Submitted
	}
	if !to.Valid() || !from.CanTransition(to) {
		return fmt.Errorf("%w: %s -> %s", ErrIllegalTransition, from, to)
	}
	return nil
}

// Snapshot is one checkpoint of a task.
type Snapshot struct {
	Agent  string `msgpack:"agent"`
	TaskID string `msgpack:"task_id"`
	// Step is the last completed step (0: none yet).
	Step int `msgpack:"step"`
	// Running is the step a replica claimed and is running now (0: none);
	// see runtime.Task.Step.
	Running int `msgpack:"running,omitempty"`
	// Owner identifies the delivery that wrote the snapshot.
	Owner  string `msgpack:"owner,omitempty"`
	Status Status `msgpack:"status"`
	// State is the handler's state, msgpack-encoded.
	State   []byte    `msgpack:"state,omitempty"`
	Updated time.Time `msgpack:"updated"`
	// Revision is the store's revision of this snapshot (set by Load,
	// History, List and Watch; Save neither reads nor sets it: the
	// expected revision is its argument and the new one its result).
	// Revisions of one task only grow, also across a Delete.
	Revision uint64 `msgpack:"-"`
	// TTL, when positive, makes the store remove this snapshot TTL after
	// Save unless it was saved again or deleted meanwhile; at least one
	// second, and only on a Save that creates the snapshot (expected 0):
	// a marker for a task not seen yet (a cancel) must not outlive its
	// use. KV buckets raise it to their marker TTL
	// (bus.Topology.SnapshotMarkerTTL). Load and the other reads leave it
	// zero.
	TTL time.Duration `msgpack:"-"`
}

// Event is a change seen by Watch: a new snapshot, or its deletion.
type Event struct {
	Agent, TaskID string
	// Snapshot is nil when the snapshot was deleted.
	Snapshot *Snapshot
}

// Store keeps snapshots. Implementations are safe for concurrent use,
// copy snapshots in and out (a caller never shares State bytes with the
// store), and give up with an error when ctx ends. Every method returns
// an error wrapping ErrInvalid for an agent or task id that Key rejects.
// Package snapshottest pins these semantics for any implementation.
type Store interface {
	// Save writes s (keyed by s.Agent and s.TaskID) if the stored
	// revision is expected (0: no snapshot may exist yet), and returns the
	// new revision, larger than any earlier revision of the task. It does
	// not modify s. With s.TTL set the snapshot disappears after it (see
	// Snapshot.TTL). Errors: ErrConflict (another writer got there first,
	// the task was deleted, or expected is not 0 for a missing task),
	// ErrInvalid (nil s, bad key, invalid Status, negative Step or
	// Running, a TTL under a second or with expected not 0).
	Save(ctx context.Context, s *Snapshot, expected uint64) (uint64, error)
	// Load returns the latest snapshot, with its Revision, or ErrNotFound.
	// ErrCorrupt: the stored value does not decode.
	Load(ctx context.Context, agent, taskID string) (*Snapshot, error)
	// History returns up to n snapshots of the task, newest first (as
	// many as the store keeps, none from before a Delete), or
	// ErrNotFound. n < 1: ErrInvalid. ErrCorrupt as Load.
	History(ctx context.Context, agent, taskID string, n int) ([]*Snapshot, error)
	// Delete removes the task's snapshots, history included. Deleting a
	// missing snapshot is not an error.
	Delete(ctx context.Context, agent, taskID string) error
	// List returns the latest snapshot of every task of agent, ordered by
	// task id (bytewise); none is an empty list, not an error. ErrCorrupt
	// as Load.
	List(ctx context.Context, agent string) ([]*Snapshot, error)
	// Watch sends the changes to agent's snapshots made after the call
	// until ctx ends, then closes the channel. Values that do not decode
	// are skipped.
	Watch(ctx context.Context, agent string) (<-chan Event, error)
}

// Key returns the store key of a task: "<agent>.<task id>", the task id
// kept as it is when it is a plain token of letters, digits, '-' and '_'
// (not starting with '='), and "=" + its unpadded base64url otherwise, so
// that any id maps to a valid, unique key.
//
// Keys contain only [-_=.a-zA-Z0-9] and exactly one '.'; the agent is a
// plain token of at most 256 bytes. It returns an error wrapping
// ErrInvalid for any other agent, or a task id that is empty or longer
// than 1024 bytes.
func Key(agent, taskID string) (string, error) {
	if err := checkAgent(agent); err != nil {
		return "", err
	}
	if taskID == "" || len(taskID) > 1024 {
		return "", fmt.Errorf("%w: task id must be 1..1024 bytes", ErrInvalid)
	}
	if plainToken(taskID) {
		return agent + "." + taskID, nil
	}
	return agent + ".=" + base64.RawURLEncoding.EncodeToString([]byte(taskID)), nil
}

// ParseKey is Key's inverse. It returns an error wrapping ErrInvalid for
// a key that Key does not produce (so keys and tasks map one to one): no
// '.', a bad agent, a task id that is neither a plain token nor the
// canonical "=" + base64url of a non-plain id.
func ParseKey(key string) (agent, taskID string, err error) {
	agent, enc, ok := strings.Cut(key, ".")
	if !ok || !plainToken(agent) || enc == "" {
		return "", "", fmt.Errorf("%w: key %q", ErrInvalid, key)
	}
	rest, encoded := strings.CutPrefix(enc, "=")
	if !encoded {
		if !plainToken(enc) {
			return "", "", fmt.Errorf("%w: key %q", ErrInvalid, key)
		}
		return agent, enc, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil {
		return "", "", fmt.Errorf("%w: key %q: %v", ErrInvalid, key, err)
	}
	taskID = string(b)
	// Only the canonical form round-trips: base64 decoding ignores line
	// breaks and unused trailing bits, and a plain id is never encoded.
	if k, err := Key(agent, taskID); err != nil || k != key {
		return "", "", fmt.Errorf("%w: key %q is not canonical", ErrInvalid, key)
	}
	return agent, taskID, nil
}

// checkAgent returns an error wrapping ErrInvalid unless agent can be the
// first part of a key.
func checkAgent(agent string) error {
	if !plainToken(agent) {
		return fmt.Errorf("%w: agent %q", ErrInvalid, agent)
	}
	return nil
}

// checkTTL refuses a TTL under a second, or on a Save that updates.
func checkTTL(s *Snapshot, expected uint64) error {
	switch {
	case s.TTL == 0:
		return nil
	case s.TTL < time.Second:
		return fmt.Errorf("%w: TTL %v is under a second", ErrInvalid, s.TTL)
	case expected != 0:
		return fmt.Errorf("%w: a TTL is set only when the snapshot is created (expected revision 0, got %d)", ErrInvalid, expected)
	}
	return nil
}

// checkSnapshot validates s for Save and returns its key.
func checkSnapshot(s *Snapshot) (string, error) {
	if s == nil {
		return "", fmt.Errorf("%w: nil snapshot", ErrInvalid)
	}
	key, err := Key(s.Agent, s.TaskID)
	if err != nil {
		return "", err
	}
	if !s.Status.Valid() {
		return "", fmt.Errorf("%w: status %q", ErrInvalid, s.Status)
	}
	if s.Step < 0 || s.Running < 0 {
		return "", fmt.Errorf("%w: negative step", ErrInvalid)
	}
	return key, nil
}

func plainToken(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
