// Package resilience holds jetagent's failure-handling building blocks,
// usable on any function, not only on the bus. They follow the patterns of
// the seed tutorial (retry with exponential backoff and jitter, circuit
// breaker, fallback) with idiomatic Go names:
//
//   - [Backoff] is a pure function of the attempt number: no state;
//   - [Retry] retries an operation with a [RetryPolicy], stopping at once on
//     errors that retrying cannot fix;
//   - [Fallback] calls a fallback when the primary fails;
//   - [Breaker] is a circuit breaker (closed, open, half-open with exactly
//     one probe under a lease), and [BreakerRegistry] keeps one per subject;
//   - [Classify] sorts errors into kinds callers branch on, marked with
//     [Permanent], [RetryAfter] and the Err* sentinels; an ordinary error is
//     transient.
//
// Composed, they are used in this order: the breaker first (an open circuit
// fails fast, with no attempt), then the operation under Retry, then
// Fallback around both.
//
// resilience imports nothing of jetagent but internal/errkind (the one
// ErrMalformed it shares with package envelope).
package resilience
