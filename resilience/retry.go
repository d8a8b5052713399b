package resilience

import (
	"context"
	"fmt"
	"time"
)

// RetryPolicy says how Retry retries. The zero value tries once and never
// retries; set MaxRetries.
type RetryPolicy struct {
	// MaxRetries is how many times a failed attempt is retried (so at most
	// MaxRetries+1 attempts). Zero: no retries.
	MaxRetries int

	// Backoff gives the delay before retry n (n = 1 for the first retry).
	// Zero: base 1s, max 60s, jitter on. An error wrapping RetryAfter
	// waits the delay it names instead.
	Backoff Backoff

	// Retryable decides whether a failure is retried. Nil: its Kind is
	// retryable (transient, retry-after, timeout, connection): permanent,
	// malformed, circuit-open and correlation-mismatch failures return at
	// once.
	Retryable func(error) bool

	// OnRetry, when set, is called before each wait with the number of the
	// attempt that failed, the delay before the next one and the error.
	OnRetry func(attempt int, delay time.Duration, err error)
}

// Retry calls op until it succeeds, fails with an error that is not
// retryable, has been retried p.MaxRetries times, or ctx ends; it waits
// the policy's backoff between attempts (on a timer, honouring ctx).
//
// It returns op's result, or the last error: unchanged when it was not
// retryable, wrapped with the attempt count when retries ran out, joined
// with ctx's error when ctx ended during a wait.
func Retry[T any](ctx context.Context, op func(context.Context) (T, error), p RetryPolicy) (T, error) {
	var zero T
	retryable := p.Retryable
	if retryable == nil {
		retryable = func(err error) bool { return Classify(err).Retryable() }
	}
	for attempt := 1; ; attempt++ {
		v, err := op(ctx)
		if err == nil {
			return v, nil
		}
		if !retryable(err) {
			return zero, err
		}
		if attempt > p.MaxRetries {
			if attempt == 1 {
				return zero, err
			}
			return zero, fmt.Errorf("after %d attempts: %w", attempt, err)
		}
		delay, ok := RetryDelay(err)
		if !ok {
			delay = p.Backoff.Delay(attempt)
		}
		if p.OnRetry != nil {
			p.OnRetry(attempt, delay, err)
		}
		if werr := sleep(ctx, delay); werr != nil {
			return zero, fmt.Errorf("after %d attempts: %w (last error: %w)", attempt, werr, err)
		}
	}
}

// sleep waits d or until ctx ends, returning ctx's error in that case.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Fallback calls primary and, if it fails, fallback: the seed tutorial's
// with_fallback. A primary failure caused by ctx ending is returned as is,
// without calling fallback (the caller gave up). When fallback fails too,
// the error joins both failures.
func Fallback[T any](ctx context.Context, primary, fallback func(context.Context) (T, error)) (T, error) {
	v, perr := primary(ctx)
	if perr == nil {
		return v, nil
	}
	if ctx.Err() != nil {
		return v, perr
	}
	fv, ferr := fallback(ctx)
	if ferr == nil {
		return fv, nil
	}
	var zero T
	return zero, fmt.Errorf("primary failed: %w; fallback failed: %w", perr, ferr)
}
