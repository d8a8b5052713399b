package resilience

import (
	"math/rand/v2"
	"time"
)

// Defaults of [Backoff], after the seed protocol's RetryConfig.
const (
	DefaultBaseDelay = time.Second
	DefaultMaxDelay  = 60 * time.Second
)

// Backoff is an exponential backoff policy:
//
//	delay(n) = min(Base * 2^(n-1), Max)
//
// for attempt n >= 1, then, unless NoJitter is set, drawn uniformly from
// [delay(n)/2, delay(n)] so that many clients failing together do not
// retry together. It keeps no state: the same policy serves every caller.
// The zero value is the default policy (base 1s, max 60s, jitter on).
type Backoff struct {
	// Base is the delay before the first retry. Zero: 1s.
	Base time.Duration
	// Max caps the delay. Zero: 60s.
	Max time.Duration
	// NoJitter turns jitter off, so Delay is deterministic.
	NoJitter bool
}

// Ceiling returns delay(n) without jitter: the upper end of the band Delay
// draws from. Attempts below 1 count as 1.
func (b Backoff) Ceiling(n int) time.Duration {
	base, maxd := b.Base, b.Max
	if base <= 0 {
		base = DefaultBaseDelay
	}
	if maxd <= 0 {
		maxd = DefaultMaxDelay
	}
	if n < 1 {
		n = 1
	}
	d := base
	for i := 1; i < n; i++ {
		if d >= maxd/2 {
			return maxd
		}
		d *= 2
	}
	return min(d, maxd)
}

// Delay returns the delay before retry attempt n (n >= 1 is the first
// retry): Ceiling(n), or with jitter a value in [Ceiling(n)/2, Ceiling(n)].
func (b Backoff) Delay(n int) time.Duration {
	c := b.Ceiling(n)
	if b.NoJitter || c < 2 {
		return c
	}
	half := c / 2
	return half + rand.N(c-half+1)
}
