package dlq_test

import (
	"context"
	"testing"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/testkit"
)

// A paced replay publishes an entry's task when its turn comes, not when
// the next entry's does. The pipeline only moved on once the rate
// limiter's wait for the next entry was over, so each task went out an
// interval late, and Ctrl-C in that wait took back an entry whose turn had
// come: "replayed 0" from a replay that had had its turn.
func TestAPacedReplayPublishesEachTaskInItsTurn(t *testing.T) {
	t.Parallel()
	conn, store := withDeadLetters(t, 2)
	entries := list(t, store, dlq.Filter{})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	type outcome struct {
		res dlq.ReplayResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := store.Replay(ctx, entries, dlq.ReplayOptions{Rate: 1.0 / 600}) // the second turn is 10 minutes away
		done <- outcome{res, err}
	}()
	testkit.WaitFor(t, "the first entry's task, whose turn is at once", func() bool {
		return total(storedReplays(t, conn.JetStream())) == 1
	})
	cancel() // Ctrl-C while the replay waits for the second turn
	o := <-done
	if o.res.Replayed != 1 || o.res.InDoubt != 0 || o.err == nil {
		t.Fatalf("interrupted in the second turn: %+v, %v; want 1 replayed and the interruption", o.res, o.err)
	}
	if got := total(storedReplays(t, conn.JetStream())); got != 1 {
		t.Fatalf("%d tasks stored, want 1", got)
	}
}
