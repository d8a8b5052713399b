// Package disposition decides what happens to a delivery. [Decide] is the
// one place: a pure function from what a consumer knows about a delivery
// ([Facts]: what it found, the handler's error, the attempt, whether it is
// stopping) to what it does with it ([Decision]). The runtime
// (package runtime) and the watermill middleware (runtime/watermillmw)
// both call it; the code around it only carries the decision out
// (publishes the reply, acks, naks, copies the dead letter).
//
// The whole table, in the order Decide applies it:
//
//	not run, its ack timeout passed unseen    -> Release (another delivery owns it)
//	not run (stopping, or refused a place)    -> GiveBack
//	breaker open, stopping                    -> GiveBack
//	breaker open, no room to hold it          -> Park
//	breaker open                              -> Hold
//	refused envelope, exhausted, verdict      -> DeadLetter (Facts.Reason)
//	deadline passed while it waited           -> DeadLetter expired
//	its execution record says it ran          -> AnswerDuplicate
//	handler succeeded, its reply never went   -> DeadLetter reply_failed
//	the DLQ refused the dead letter           -> Retry (after the backoff)
//	ran: success                              -> Ack
//	ran: interrupted by the consumer stopping -> GiveBack (Release if stale)
//	ran: ErrCancelled                         -> AckCancelled
//	ran: ErrSuperseded                        -> Release
//	ran: ErrTaskTaken                         -> Wait
//	ran: permanent or malformed               -> DeadLetter permanent
//	ran: the last attempt failed              -> DeadLetter max_attempts
//	ran: retry-after(d)                       -> Retry after d
//	ran: transient, timeout, panic, other     -> Retry after the backoff
//	a finding this table does not know       -> Retry (never dropped)
//
// The package imports only resilience (error kinds) and dlq (reasons); it
// has no state and does no I/O.
package disposition

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/resilience"
)

// Errors a handler returns (or wraps) that decide a disposition of their
// own. Package runtime exports the first two under the same names.
var (
	// ErrCancelled: the task was cancelled (a task.cancel arrived) and
	// stopped: it is acknowledged, its sender told, never run again.
	ErrCancelled = errors.New("runtime: task cancelled")
	// ErrTaskTaken: another message runs this task now; this one waits
	// for that run to end, spending no attempt.
	ErrTaskTaken = errors.New("runtime: task taken by another delivery")
	// ErrSuperseded: a newer delivery of this very message runs the task
	// (this one's ack timeout passed): this one is left to it, unsettled.
	ErrSuperseded = errors.New("runtime: a newer delivery of this message runs the task")
)

// Finding is what a consumer found out about a delivery.
type Finding uint8

// Findings. The zero value is Ran: the handler ran, Facts.Err is its result.
const (
	Ran               Finding = iota // the handler ran; Facts.Err is its error (nil: success)
	NotRun                           // not started: the consumer is stopping, or the delivery was refused a place
	BreakerOpen                      // the subject's breaker refused it (Facts.HoldFull: no room to hold it)
	Refused                          // the envelope was refused before any handler (Facts.Reason says why)
	Exhausted                        // its attempts were used up before it ran again (Facts.Reason)
	Verdict                          // it failed for good before, and the DLQ refused its dead letter (Facts.Reason)
	Expired                          // its deadline passed while it waited
	AlreadyRan                       // its execution record says it ran
	ReplyFailed                      // the handler succeeded; its reply could not be published
	DeadLetterRefused                // the DLQ did not store its dead letter
	numFindings
)

var findingNames = [...]string{"ran", "not_run", "breaker_open", "refused", "exhausted", "verdict", "expired",
	"already_ran", "reply_failed", "dead_letter_refused"}

// String returns the finding's name ("ran", "breaker_open", ...).
func (f Finding) String() string {
	if int(f) < len(findingNames) {
		return findingNames[f]
	}
	return fmt.Sprintf("Finding(%d)", int(f))
}

// Action is what the consumer does with the delivery.
type Action uint8

// Actions. The zero value is no action: Decide never returns it.
const (
	_               Action = iota
	Ack                    // publish the reply (if any), then ack
	AckCancelled           // publish a task.update "cancelled" reply, then ack
	AnswerDuplicate        // publish the stored reply again, then ack; the handler does not run
	DeadLetter             // copy the delivery to the DLQ with Decision.Reason, then term it
	Retry                  // nak after Decision.Delay (zero: the backoff of the attempt): an attempt spent
	Wait                   // nak after the backoff, no attempt spent: another message runs the task
	GiveBack               // nak at once, no attempt spent: redelivered now, to this replica or another
	Release                // leave it unsettled: another delivery of the message owns it
	Hold                   // keep it, heartbeated, until its breaker lets a probe through
	Park                   // move it to its subject's parked subject (the breaker stays open)
	numActions
)

var actionNames = [...]string{"none", "ack", "ack_cancelled", "answer_duplicate", "dead_letter", "retry", "wait",
	"give_back", "release", "hold", "park"}

// String returns the action's name ("ack", "dead_letter", ...).
func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Facts are what a consumer knows about a delivery when it decides.
type Facts struct {
	// Finding is what it found; Ran when the handler ran.
	Finding Finding
	// Err is the handler's error, when Finding is Ran.
	Err error
	// Reason is the dead-letter reason of a Refused, Exhausted or Verdict
	// finding.
	Reason dlq.Reason
	// Stopping: the consumer is shutting down (for a handler's error:
	// its context was cancelled because of that).
	Stopping bool
	// Stale: the delivery's ack timeout passed unseen (the process was
	// frozen or starved): the server has redelivered it.
	Stale bool
	// HoldFull: a BreakerOpen delivery finds no room to be held.
	HoldFull bool
	// Attempt is this run's attempt (1 for the first), MaxAttempts the
	// most a task gets.
	Attempt, MaxAttempts int
}

// Decision is what to do with a delivery.
type Decision struct {
	Action Action
	// Reason is the dead letter's reason, when Action is DeadLetter.
	Reason dlq.Reason
	// Kind classifies the handler's error, when the handler failed.
	Kind resilience.Kind
	// Delay is how long a Retry waits: the delay a retry-after error
	// asked for; zero means the backoff delay of the attempt.
	Delay time.Duration
	// LastAttempt: a DeadLetter max_attempts, its attempts used up.
	LastAttempt bool
}

// Decide returns what to do with a delivery, given f. It is pure (no
// I/O, no clock, no randomness); it allocates nothing unless the handler
// failed with a retry-after error.
func Decide(f Facts) Decision {
	switch f.Finding {
	case Ran:
		return ran(f)
	case NotRun:
		if f.Stale {
			return Decision{Action: Release}
		}
		return Decision{Action: GiveBack}
	case BreakerOpen:
		switch {
		case f.Stopping:
			return Decision{Action: GiveBack}
		case f.HoldFull:
			return Decision{Action: Park}
		}
		return Decision{Action: Hold}
	case Refused, Exhausted, Verdict:
		return Decision{Action: DeadLetter, Reason: f.Reason}
	case Expired:
		return Decision{Action: DeadLetter, Reason: dlq.ReasonExpired}
	case AlreadyRan:
		return Decision{Action: AnswerDuplicate}
	case ReplyFailed:
		return Decision{Action: DeadLetter, Reason: dlq.ReasonReplyFailed}
	case DeadLetterRefused:
		return Decision{Action: Retry}
	}
	// An unknown finding: never drop the delivery; redeliver it.
	return Decision{Action: Retry, Kind: resilience.KindTransient}
}

// ran decides for a delivery whose handler ran.
func ran(f Facts) Decision {
	err := f.Err
	if err == nil {
		return Decision{Action: Ack}
	}
	kind := resilience.Classify(err)
	switch {
	case f.Stopping && errors.Is(err, context.Canceled):
		if f.Stale {
			return Decision{Action: Release, Kind: kind}
		}
		return Decision{Action: GiveBack, Kind: kind}
	case errors.Is(err, ErrCancelled):
		return Decision{Action: AckCancelled, Kind: kind}
	case errors.Is(err, ErrSuperseded):
		return Decision{Action: Release, Kind: kind}
	case errors.Is(err, ErrTaskTaken):
		return Decision{Action: Wait, Kind: kind}
	case kind == resilience.KindPermanent || kind == resilience.KindMalformed:
		return Decision{Action: DeadLetter, Reason: dlq.ReasonPermanent, Kind: kind}
	case f.Attempt >= f.MaxAttempts:
		return Decision{Action: DeadLetter, Reason: dlq.ReasonMaxAttempts, Kind: kind, LastAttempt: true}
	}
	delay, _ := resilience.RetryDelay(err) // zero unless retry-after
	return Decision{Action: Retry, Kind: kind, Delay: delay}
}
