package resilience_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/jetagent/jetagent/resilience"
)

func TestBackoffCeilingDoublesUpToMax(t *testing.T) {
	b := resilience.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	want := []time.Duration{100, 100, 200, 400, 800, 1000, 1000} // ms, for n = 0..6
	for n, w := range want {
		if got := b.Ceiling(n); got != w*time.Millisecond {
			t.Errorf("Ceiling(%d) = %v, want %v", n, got, w*time.Millisecond)
		}
	}
	if got := b.Ceiling(1 << 30); got != time.Second {
		t.Errorf("Ceiling(huge) = %v, want the max (no overflow)", got)
	}
}

func TestBackoffDefaults(t *testing.T) {
	var b resilience.Backoff
	if b.Ceiling(1) != time.Second || b.Ceiling(100) != time.Minute {
		t.Fatalf("zero Backoff: Ceiling(1)=%v Ceiling(100)=%v, want 1s and 60s", b.Ceiling(1), b.Ceiling(100))
	}
}

func TestBackoffJitterStaysInBand(t *testing.T) {
	b := resilience.Backoff{Base: 8 * time.Millisecond, Max: time.Second}
	for n := 1; n <= 10; n++ {
		c := b.Ceiling(n)
		seen := map[time.Duration]bool{}
		for range 200 {
			d := b.Delay(n)
			if d < c/2 || d > c {
				t.Fatalf("Delay(%d) = %v outside [%v, %v]", n, d, c/2, c)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("Delay(%d) took only %d distinct values in 200 draws: no jitter", n, len(seen))
		}
	}
	b.NoJitter = true
	if b.Delay(3) != b.Ceiling(3) {
		t.Error("NoJitter: Delay differs from Ceiling")
	}
}

func ExampleBackoff() {
	b := resilience.Backoff{Base: time.Second, Max: 10 * time.Second, NoJitter: true}
	for n := 1; n <= 5; n++ {
		fmt.Println(n, b.Delay(n))
	}
	// Output:
	// 1 1s
	// 2 2s
	// 3 4s
	// 4 8s
	// 5 10s
}
