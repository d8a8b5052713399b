// Package lifecycle is the contract every long-running part of an agent
// process keeps: a runtime, the sweeper of a runtime, the operations
// endpoint. Each part is a [Service]: Start it, Stop it, and watch Done
// to learn that it ended, with Err saying why when it ended on its own.
//
// A process runs its parts as one group (internal/agentcli does it with
// github.com/oklog/run): it waits until the first part ends or it is told
// to stop, then stops every part in its order, and exits non-zero when a
// part ended on its own. A part that dies therefore ends the process, for
// its supervisor to restart, instead of leaving it up and half working.
//
// [End] implements the Done and Err half of the contract; the package
// lifecycletest checks an implementation against the whole of it.
package lifecycle
