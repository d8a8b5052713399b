package resilience

import (
	"errors"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/internal/errkind"
)

// Kinds of failure callers branch on with errors.Is. An error that wraps
// none of them is transient: worth retrying after a backoff delay.
var (
	// ErrTransient marks a failure worth retrying. Ordinary errors are
	// treated as transient too; wrap with Transient only to be explicit.
	ErrTransient = errors.New("transient failure")

	// ErrPermanent marks a failure that retrying cannot fix (bad input, a
	// refused request). Wrap with Permanent.
	ErrPermanent = errors.New("permanent failure")

	// ErrRetryAfter marks a failure that may be retried after a delay the
	// failing side named (a 503 or 429 with Retry-After). Wrap with
	// RetryAfter; read the delay with errors.As into *RetryAfterError.
	ErrRetryAfter = errors.New("retry after delay")

	// ErrCircuitOpen is returned without trying when the circuit breaker
	// of the target is open (or its one half-open probe is in flight).
	ErrCircuitOpen = errors.New("circuit open")

	// ErrTimeout means no answer came in time.
	ErrTimeout = errors.New("timeout")

	// ErrConnection means the server or the target could not be reached.
	ErrConnection = errors.New("connection failure")

	// ErrCorrelationMismatch means an answer arrived whose correlation id
	// is not the request's; it is never returned as the answer.
	ErrCorrelationMismatch = errors.New("correlation id mismatch")
)

// Kind is the class of a failure, as Classify reports it.
type Kind int

// Kinds, in the order Classify tests them.
const (
	KindNone Kind = iota // no error
	KindPermanent
	KindMalformed // wraps envelope.ErrMalformed: a message or payload that does not decode
	KindRetryAfter
	KindCircuitOpen
	KindCorrelationMismatch
	KindTimeout
	KindConnection
	KindTransient
)

var kindNames = [...]string{"none", "permanent", "malformed", "retry_after", "circuit_open", "correlation_mismatch", "timeout", "connection", "transient"}

// String returns the kind's stable name (used in logs and metrics).
func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Classify returns the kind of err: nil is KindNone; an error wrapping one
// of the sentinels above is that kind (permanent and malformed first, since
// they must never be retried); anything else is KindTransient.
func Classify(err error) Kind {
	switch {
	case err == nil:
		return KindNone
	case errors.Is(err, ErrPermanent):
		return KindPermanent
	case errors.Is(err, errkind.ErrMalformed): // envelope.ErrMalformed
		return KindMalformed
	case errors.Is(err, ErrRetryAfter):
		return KindRetryAfter
	case errors.Is(err, ErrCircuitOpen):
		return KindCircuitOpen
	case errors.Is(err, ErrCorrelationMismatch):
		return KindCorrelationMismatch
	case errors.Is(err, ErrTimeout):
		return KindTimeout
	case errors.Is(err, ErrConnection):
		return KindConnection
	default:
		return KindTransient
	}
}

// Retryable reports whether a failure of kind k may succeed if tried again.
func (k Kind) Retryable() bool {
	switch k {
	case KindTransient, KindRetryAfter, KindTimeout, KindConnection:
		return true
	default:
		return false
	}
}

// kindError wraps an error with a kind sentinel.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string {
	if e.err == nil {
		return e.kind.Error()
	}
	return e.kind.Error() + ": " + e.err.Error()
}

func (e *kindError) Unwrap() []error {
	if e.err == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.err}
}

// Permanent marks err as permanent: it is not retried, and a task failing
// with it is dead-lettered at once. errors.Is(Permanent(err), err) holds.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: ErrPermanent, err: err}
}

// Transient marks err as transient (the default for any error; this only
// makes it explicit). Transient(nil) is nil.
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &kindError{kind: ErrTransient, err: err}
}

// RetryAfterError carries the delay the failing side asked for.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

// Error describes the failure and the delay.
func (e *RetryAfterError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("retry after %v", e.Delay)
	}
	return fmt.Sprintf("retry after %v: %v", e.Delay, e.Err)
}

// Unwrap returns ErrRetryAfter and the cause, so errors.Is matches both.
func (e *RetryAfterError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrRetryAfter}
	}
	return []error{ErrRetryAfter, e.Err}
}

// RetryAfter returns an error asking to be retried after d (the runtime
// redelivers a task failing with it after d instead of the backoff delay).
// err may be nil.
func RetryAfter(d time.Duration, err error) error {
	return &RetryAfterError{Delay: d, Err: err}
}

// RetryDelay returns the delay err asks for and true when err wraps a
// *RetryAfterError.
func RetryDelay(err error) (time.Duration, bool) {
	var ra *RetryAfterError
	if errors.As(err, &ra) {
		return ra.Delay, true
	}
	return 0, false
}
