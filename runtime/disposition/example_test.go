package disposition_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime/disposition"
)

// Decide tells a consumer what to do with a delivery once its handler
// ran: here a retry-after error on the second of five attempts, then a
// transient error on the last.
func ExampleDecide() {
	busy := resilience.RetryAfter(2*time.Second, errors.New("429 Too Many Requests"))
	d := disposition.Decide(disposition.Facts{Err: busy, Attempt: 2, MaxAttempts: 5})
	fmt.Println(d.Action, d.Delay)

	d = disposition.Decide(disposition.Facts{Err: errors.New("connection reset"), Attempt: 5, MaxAttempts: 5})
	fmt.Println(d.Action, d.Reason)

	d = disposition.Decide(disposition.Facts{Finding: disposition.BreakerOpen, HoldFull: true})
	fmt.Println(d.Action)
	// Output:
	// retry 2s
	// dead_letter max_attempts
	// park
}
