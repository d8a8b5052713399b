package resilience_test

import (
	"testing"

	"github.com/jetagent/jetagent/resilience"
)

// BenchmarkBreakerAllowDone is the breaker's cost per delivery on the
// runtime's hot path: one Allow and its done, closed breaker.
func BenchmarkBreakerAllowDone(b *testing.B) {
	br := resilience.NewBreaker("s", resilience.BreakerSettings{})
	b.ReportAllocs()
	for b.Loop() {
		done, err := br.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done(nil)
	}
}

// BenchmarkRegistryGet is the per-subject lookup (lock-free once created).
func BenchmarkRegistryGet(b *testing.B) {
	r := resilience.NewBreakerRegistry(resilience.BreakerSettings{})
	r.Get("jetagent.tasks.echo.task.request")
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Get("jetagent.tasks.echo.task.request")
	}
}

func BenchmarkBackoffDelay(b *testing.B) {
	var bo resilience.Backoff
	b.ReportAllocs()
	for b.Loop() {
		_ = bo.Delay(5)
	}
}
