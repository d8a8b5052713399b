// Package snapshot keeps task checkpoints, so that a task interrupted by a
// crash resumes where it stopped, on whichever replica gets it next.
//
// A [Snapshot] is a task's last completed step, its state (msgpack), its
// [Status] and when it was written. A [Store] saves snapshots with
// compare-and-swap on their revision: two replicas racing on one task
// cannot both advance it, the loser's Save fails with [ErrConflict]. Two
// implementations pass one conformance suite (package snapshottest): [KV]
// on a JetStream key-value bucket (history depth and TTL configurable in
// bus.Topology), and [Memory] for tests and single-process use.
//
// Keys are "<agent>.<task id>"; task ids that are not plain tokens are
// encoded (see [Key]), so any id a user sends is safe.
//
// A task's life in the store, as the runtime drives it: Load (ErrNotFound
// for a new task), then Save after each step with the revision last seen
// (0 the first time), each status change checked with [Transition]; a
// Save failing with ErrConflict means another replica owns the task, so
// stop. When the task completes or is dead-lettered, Delete removes the
// snapshot and its history. Revisions of a task only grow, so a replica
// holding a revision from before a Delete also gets ErrConflict.
//
// Errors are sentinels matched with errors.Is: [ErrNotFound],
// [ErrConflict], [ErrInvalid], [ErrCorrupt], [ErrIllegalTransition].
//
// snapshot imports bus (for the bucket's name) and nothing else of ours.
package snapshot
