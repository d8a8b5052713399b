package resilience_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/resilience"
)

// Retry a flaky operation with exponential backoff, the seed tutorial's
// retry_with_backoff.
func ExampleRetry() {
	calls := 0
	flaky := func(context.Context) (string, error) {
		calls++
		if calls < 3 {
			return "", errors.New("connection reset") // transient by default
		}
		return "data", nil
	}
	v, err := resilience.Retry(context.Background(), flaky, resilience.RetryPolicy{
		MaxRetries: 3,
		Backoff:    resilience.Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond},
	})
	fmt.Println(v, err, calls)
	// Output: data <nil> 3
}

// A breaker stops calling a failing target, then lets one probe through.
func ExampleBreaker() {
	b := resilience.NewBreaker("payments", resilience.BreakerSettings{Threshold: 2, OpenTimeout: time.Minute})
	down := errors.New("503 service unavailable")
	for range 3 {
		err := b.Execute(func() error { return down })
		fmt.Println(err, "| state:", b.State())
	}
	// Output:
	// 503 service unavailable | state: closed
	// 503 service unavailable | state: open
	// breaker payments: circuit open | state: open
}

// Fall back to a cached value when the primary fails.
func ExampleFallback() {
	primary := func(context.Context) (string, error) { return "", errors.New("primary agent down") }
	cached := func(context.Context) (string, error) { return "cached answer", nil }
	v, err := resilience.Fallback(context.Background(), primary, cached)
	fmt.Println(v, err)
	// Output: cached answer <nil>
}

// Mark a failure permanent so it is not retried, and branch on kinds.
func ExampleClassify() {
	err := resilience.Permanent(errors.New("invalid order id"))
	fmt.Println(resilience.Classify(err), resilience.Classify(err).Retryable())
	fmt.Println(errors.Is(err, resilience.ErrPermanent))
	// Output:
	// permanent false
	// true
}

// One breaker per subject, created on first use; a rule gives some
// subjects their own settings.
func ExampleBreakerRegistry() {
	reg := resilience.NewBreakerRegistry(resilience.BreakerSettings{Threshold: 5},
		resilience.BreakerRule{Pattern: "jetagent.tasks.payments.>", Settings: resilience.BreakerSettings{Threshold: 1}})
	fail := func(subject string) {
		done, err := reg.Get(subject).Allow()
		if err == nil {
			done(errors.New("503"))
		}
	}
	fail("jetagent.tasks.payments.task.request")
	fail("jetagent.tasks.search.task.request")
	fmt.Println(reg.Get("jetagent.tasks.payments.task.request").State(), reg.Get("jetagent.tasks.search.task.request").State())
	// Output: open closed
}
