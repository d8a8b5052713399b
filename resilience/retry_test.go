package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
)

func TestRetryWaitsTheBackoffBetweenAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var at []time.Duration
		start := time.Now()
		_, err := resilience.Retry(t.Context(), func(context.Context) (int, error) {
			at = append(at, time.Since(start))
			return 0, errBoom
		}, resilience.RetryPolicy{MaxRetries: 3, Backoff: resilience.Backoff{Base: time.Second, NoJitter: true}})
		if !errors.Is(err, errBoom) {
			t.Fatalf("err = %v", err)
		}
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second}
		if fmt.Sprint(at) != fmt.Sprint(want) {
			t.Fatalf("attempts at %v, want %v", at, want)
		}
	})
}

func TestRetrySucceedsAfterTransientFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		v, err := resilience.Retry(t.Context(), func(context.Context) (string, error) {
			calls++
			if calls < 3 {
				return "", resilience.Transient(errBoom)
			}
			return "ok", nil
		}, resilience.RetryPolicy{MaxRetries: 5})
		if err != nil || v != "ok" || calls != 3 {
			t.Fatalf("v=%q err=%v calls=%d", v, err, calls)
		}
	})
}

func TestRetryStopsAtNonRetryableErrors(t *testing.T) {
	for _, err := range []error{
		resilience.Permanent(errBoom),
		fmt.Errorf("x: %w", resilience.ErrCircuitOpen),
		fmt.Errorf("x: %w", envelope.ErrMalformed),
	} {
		calls := 0
		_, got := resilience.Retry(context.Background(), func(context.Context) (int, error) {
			calls++
			return 0, err
		}, resilience.RetryPolicy{MaxRetries: 5})
		if calls != 1 || got != err {
			t.Errorf("%v: %d calls, err %v; want 1 call and the error unchanged", err, calls, got)
		}
	}
}

func TestRetryHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		calls := 0
		_, _ = resilience.Retry(t.Context(), func(context.Context) (int, error) {
			calls++
			if calls == 1 {
				return 0, resilience.RetryAfter(42*time.Second, errBoom)
			}
			return 1, nil
		}, resilience.RetryPolicy{MaxRetries: 1})
		if got := time.Since(start); got != 42*time.Second {
			t.Fatalf("waited %v, want the 42s the error asked for", got)
		}
	})
}

func TestRetryEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		calls := 0
		_, err := resilience.Retry(ctx, func(context.Context) (int, error) {
			calls++
			return 0, errBoom
		}, resilience.RetryPolicy{MaxRetries: 10, Backoff: resilience.Backoff{Base: 2 * time.Second, NoJitter: true}})
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, errBoom) {
			t.Fatalf("err = %v, want both the deadline and the last error", err)
		}
		if calls != 2 { // at 0s and 2s; the wait for 6s is cut at 5s
			t.Fatalf("%d calls, want 2", calls)
		}
	})
}

func TestRetryZeroPolicyTriesOnce(t *testing.T) {
	calls := 0
	_, err := resilience.Retry(context.Background(), func(context.Context) (int, error) {
		calls++
		return 0, errBoom
	}, resilience.RetryPolicy{})
	if calls != 1 || err != errBoom {
		t.Fatalf("calls=%d err=%v", calls, err)
	}
}

func TestFallback(t *testing.T) {
	ctx := context.Background()
	ok := func(v string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return v, nil }
	}
	bad := func(err error) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return "", err }
	}
	if v, err := resilience.Fallback(ctx, ok("primary"), ok("fallback")); v != "primary" || err != nil {
		t.Errorf("primary ok: %q %v", v, err)
	}
	if v, err := resilience.Fallback(ctx, bad(errBoom), ok("fallback")); v != "fallback" || err != nil {
		t.Errorf("primary failed: %q %v", v, err)
	}
	errFB := errors.New("fallback down")
	if _, err := resilience.Fallback(ctx, bad(errBoom), bad(errFB)); !errors.Is(err, errBoom) || !errors.Is(err, errFB) {
		t.Errorf("both failed: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	called := false
	_, err := resilience.Fallback(cctx, bad(context.Canceled), func(context.Context) (string, error) {
		called = true
		return "", nil
	})
	if called || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: fallback called=%v err=%v", called, err)
	}
}

func TestClassify(t *testing.T) {
	cases := map[resilience.Kind]error{
		resilience.KindNone:                nil,
		resilience.KindTransient:           errBoom,
		resilience.KindPermanent:           resilience.Permanent(resilience.RetryAfter(time.Second, nil)),
		resilience.KindRetryAfter:          resilience.RetryAfter(time.Second, errBoom),
		resilience.KindCircuitOpen:         fmt.Errorf("b: %w", resilience.ErrCircuitOpen),
		resilience.KindTimeout:             fmt.Errorf("t: %w", resilience.ErrTimeout),
		resilience.KindConnection:          fmt.Errorf("c: %w", resilience.ErrConnection),
		resilience.KindCorrelationMismatch: fmt.Errorf("m: %w", resilience.ErrCorrelationMismatch),
		resilience.KindMalformed:           fmt.Errorf("m: %w", envelope.ErrMalformed),
	}
	for want, err := range cases {
		if got := resilience.Classify(err); got != want {
			t.Errorf("Classify(%v) = %v, want %v", err, got, want)
		}
	}
	if d, ok := resilience.RetryDelay(fmt.Errorf("w: %w", resilience.RetryAfter(3*time.Second, nil))); !ok || d != 3*time.Second {
		t.Errorf("RetryDelay = %v %v", d, ok)
	}
	if !errors.Is(resilience.Permanent(errBoom), errBoom) {
		t.Error("Permanent hides its cause")
	}
}
