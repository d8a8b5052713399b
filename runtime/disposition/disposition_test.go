package disposition

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
)

// outcomes are the handler errors the table is checked against: one of
// every class Decide tells apart, wrapped the way handlers wrap them.
var outcomes = []struct {
	name string
	err  error
}{
	{"success", nil},
	{"transient", errors.New("boom")},
	{"transient, wrapped", fmt.Errorf("call: %w", resilience.Transient(errors.New("503")))},
	{"permanent", resilience.Permanent(errors.New("bad input"))},
	{"malformed", fmt.Errorf("decode: %w", envelope.ErrMalformed)},
	{"retry-after 3s", resilience.RetryAfter(3*time.Second, errors.New("429"))},
	{"timeout", fmt.Errorf("handler: %w", context.DeadlineExceeded)},
	{"circuit open", fmt.Errorf("downstream: %w", resilience.ErrCircuitOpen)},
	{"canceled", fmt.Errorf("step: %w", context.Canceled)},
	{"cancelled task", fmt.Errorf("step 3: %w", ErrCancelled)},
	{"taken", fmt.Errorf("checkpoint: %w", ErrTaskTaken)},
	{"superseded", errors.Join(ErrTaskTaken, ErrSuperseded)},
	{"permanent and canceled", errors.Join(resilience.ErrPermanent, context.Canceled)},
}

// rule is one row of the disposition table as the package doc states it.
// The rows are checked in order; the first that applies is the one.
type rule struct {
	row  string
	when func(f Facts) bool
	want func(f Facts) Decision
}

func is(err error, target error) bool { return errors.Is(err, target) }

func kind(f Facts) resilience.Kind { return resilience.Classify(f.Err) }

var table = []rule{
	{"not run, stale -> Release", func(f Facts) bool { return f.Finding == NotRun && f.Stale },
		func(Facts) Decision { return Decision{Action: Release} }},
	{"not run -> GiveBack", func(f Facts) bool { return f.Finding == NotRun },
		func(Facts) Decision { return Decision{Action: GiveBack} }},
	{"breaker open, stopping -> GiveBack", func(f Facts) bool { return f.Finding == BreakerOpen && f.Stopping },
		func(Facts) Decision { return Decision{Action: GiveBack} }},
	{"breaker open, full -> Park", func(f Facts) bool { return f.Finding == BreakerOpen && f.HoldFull },
		func(Facts) Decision { return Decision{Action: Park} }},
	{"breaker open -> Hold", func(f Facts) bool { return f.Finding == BreakerOpen },
		func(Facts) Decision { return Decision{Action: Hold} }},
	{"refused, exhausted, verdict -> DeadLetter(reason)", func(f Facts) bool {
		return f.Finding == Refused || f.Finding == Exhausted || f.Finding == Verdict
	}, func(f Facts) Decision { return Decision{Action: DeadLetter, Reason: f.Reason} }},
	{"expired -> DeadLetter expired", func(f Facts) bool { return f.Finding == Expired },
		func(Facts) Decision { return Decision{Action: DeadLetter, Reason: dlq.ReasonExpired} }},
	{"already ran -> AnswerDuplicate", func(f Facts) bool { return f.Finding == AlreadyRan },
		func(Facts) Decision { return Decision{Action: AnswerDuplicate} }},
	{"reply failed -> DeadLetter reply_failed", func(f Facts) bool { return f.Finding == ReplyFailed },
		func(Facts) Decision { return Decision{Action: DeadLetter, Reason: dlq.ReasonReplyFailed} }},
	{"DLQ refused -> Retry", func(f Facts) bool { return f.Finding == DeadLetterRefused },
		func(Facts) Decision { return Decision{Action: Retry} }},
	{"unknown finding -> Retry", func(f Facts) bool { return f.Finding >= numFindings },
		func(Facts) Decision { return Decision{Action: Retry, Kind: resilience.KindTransient} }},
	{"success -> Ack", func(f Facts) bool { return f.Err == nil },
		func(Facts) Decision { return Decision{Action: Ack} }},
	{"stopping, canceled, stale -> Release", func(f Facts) bool { return f.Stopping && is(f.Err, context.Canceled) && f.Stale },
		func(f Facts) Decision { return Decision{Action: Release, Kind: kind(f)} }},
	{"stopping, canceled -> GiveBack", func(f Facts) bool { return f.Stopping && is(f.Err, context.Canceled) },
		func(f Facts) Decision { return Decision{Action: GiveBack, Kind: kind(f)} }},
	{"cancelled -> AckCancelled", func(f Facts) bool { return is(f.Err, ErrCancelled) },
		func(f Facts) Decision { return Decision{Action: AckCancelled, Kind: kind(f)} }},
	{"superseded -> Release", func(f Facts) bool { return is(f.Err, ErrSuperseded) },
		func(f Facts) Decision { return Decision{Action: Release, Kind: kind(f)} }},
	{"taken -> Wait", func(f Facts) bool { return is(f.Err, ErrTaskTaken) },
		func(f Facts) Decision { return Decision{Action: Wait, Kind: kind(f)} }},
	{"permanent or malformed -> DeadLetter permanent", func(f Facts) bool {
		return is(f.Err, resilience.ErrPermanent) || is(f.Err, envelope.ErrMalformed)
	}, func(f Facts) Decision {
		return Decision{Action: DeadLetter, Reason: dlq.ReasonPermanent, Kind: kind(f)}
	}},
	{"last attempt -> DeadLetter max_attempts", func(f Facts) bool { return f.Attempt >= f.MaxAttempts },
		func(f Facts) Decision {
			return Decision{Action: DeadLetter, Reason: dlq.ReasonMaxAttempts, Kind: kind(f), LastAttempt: true}
		}},
	{"retry-after(d) -> Retry after d", func(f Facts) bool { return is(f.Err, resilience.ErrRetryAfter) },
		func(f Facts) Decision {
			return Decision{Action: Retry, Kind: resilience.KindRetryAfter, Delay: 3 * time.Second}
		}},
	{"other failure -> Retry after the backoff", func(Facts) bool { return true },
		func(f Facts) Decision { return Decision{Action: Retry, Kind: kind(f)} }},
}

// every calls fn with every combination of facts the table tells apart.
func every(fn func(name string, f Facts)) {
	attempts := [][2]int{{1, 5}, {4, 5}, {5, 5}, {7, 5}, {1, 1}}
	for finding := range numFindings + 1 { // and one unknown
		for _, o := range outcomes {
			for _, reason := range []dlq.Reason{"", dlq.ReasonMalformed, dlq.ReasonMaxDeliveries} {
				for _, stopping := range []bool{false, true} {
					for _, stale := range []bool{false, true} {
						for _, full := range []bool{false, true} {
							for _, a := range attempts {
								f := Facts{Finding: finding, Err: o.err, Reason: reason, Stopping: stopping, Stale: stale,
									HoldFull: full, Attempt: a[0], MaxAttempts: a[1]}
								fn(fmt.Sprintf("%s/%s/reason=%q/stopping=%v/stale=%v/full=%v/attempt=%d/%d",
									finding, o.name, reason, stopping, stale, full, a[0], a[1]), f)
							}
						}
					}
				}
			}
		}
	}
}

// TestDecideFollowsTheTable checks Decide against the table, row by row,
// over every combination of facts, and that every row is reached.
func TestDecideFollowsTheTable(t *testing.T) {
	used := make([]int, len(table))
	n := 0
	every(func(name string, f Facts) {
		n++
		for i, r := range table {
			if !r.when(f) {
				continue
			}
			used[i]++
			if got, want := Decide(f), r.want(f); got != want {
				t.Errorf("%s: row %q: Decide = %+v, want %+v", name, r.row, got, want)
			}
			return
		}
		t.Fatalf("%s: no row applies", name)
	})
	for i, r := range table {
		if used[i] == 0 {
			t.Errorf("row %q is never reached: the table has a dead row", r.row)
		}
	}
	t.Logf("%d combinations of facts, %d rows", n, len(table))
}

// TestDecideNeverDropsADelivery checks what must hold whatever the table
// says: every delivery gets an action; a dead letter names its reason
// (when the finding gave one); a success is acked; a failure the handler
// may recover from is dead-lettered only on its last attempt.
func TestDecideNeverDropsADelivery(t *testing.T) {
	every(func(name string, f Facts) {
		d := Decide(f)
		if d.Action == 0 || d.Action >= numActions {
			t.Fatalf("%s: Decide = %+v: no action", name, d)
		}
		if d.Action == DeadLetter && d.Reason == "" && f.Reason != "" {
			t.Errorf("%s: a dead letter without a reason", name)
		}
		if f.Finding != Ran {
			return
		}
		retryable := resilience.Classify(f.Err).Retryable()
		switch {
		case f.Err == nil && d.Action != Ack:
			t.Errorf("%s: a success is %v, want ack", name, d.Action)
		case retryable && !f.Stopping && d.Action == DeadLetter && f.Attempt < f.MaxAttempts:
			t.Errorf("%s: a retryable failure dead-lettered before its last attempt", name)
		case errors.Is(f.Err, resilience.ErrPermanent) && !errors.Is(f.Err, context.Canceled) && d.Action == Retry:
			t.Errorf("%s: a permanent failure retried", name)
		case d.Delay != 0 && !errors.Is(f.Err, resilience.ErrRetryAfter):
			t.Errorf("%s: a delay of %v without retry-after", name, d.Delay)
		}
	})
}

func TestDecideOnSuccessAllocatesNothing(t *testing.T) {
	f := Facts{Attempt: 1, MaxAttempts: 5}
	if n := testing.AllocsPerRun(1000, func() { _ = Decide(f) }); n != 0 {
		t.Fatalf("Decide allocates %v times on success", n)
	}
}

func TestNamesAreStable(t *testing.T) {
	for a := Action(0); a <= numActions; a++ {
		if a.String() == "" {
			t.Errorf("action %d has no name", a)
		}
	}
	if got := DeadLetter.String(); got != "dead_letter" {
		t.Errorf("DeadLetter.String() = %q", got)
	}
	if got := BreakerOpen.String(); got != "breaker_open" {
		t.Errorf("BreakerOpen.String() = %q", got)
	}
	if got := Finding(200).String(); got != "Finding(200)" {
		t.Errorf("Finding(200).String() = %q", got)
	}
}
