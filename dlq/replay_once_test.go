package dlq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go/jetstream"
)

// shortWindow is a topology whose tasks stream forgets message ids after
// 200ms: what a server restart does to a work queue, or a rerun after the
// duplicate window.
var shortWindow = bus.Topology{Memory: true, DuplicateWindow: 200 * time.Millisecond}

// storedReplays counts the replay tasks stored in the tasks stream (no
// consumer reads them), by the entry they replay.
func storedReplays(t *testing.T, js jetstream.JetStream) map[string]int {
	t.Helper()
	ctx := testkit.Context(t)
	st, err := js.Stream(ctx, shortWindow.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		got[m.Header.Get(dlq.HeaderReplayOf)]++
	}
	return got
}

// withDeadLetters provisions shortWindow on a server of its own and
// stores n permanent dead letters of agent echo.
func withDeadLetters(t *testing.T, n int) (*bus.Conn, *dlq.Store) {
	t.Helper()
	_, conn := natstest.Provisioned(t, shortWindow)
	store := dlq.NewStore(conn.JetStream(), shortWindow)
	for i := range n {
		deadLetter(t, store, "echo", uint64(i+1), dlq.ReasonPermanent)
	}
	return conn, store
}

func total(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// pastWindow waits until the duplicate window has passed since from.
func pastWindow(from time.Time) {
	time.Sleep(time.Until(from.Add(2 * shortWindow.DuplicateWindow))) // the server's window is a span of time, not an event
}

// Issue 14 item 4: marks were written only once 512 tasks were in flight
// or at the very end, so a replay interrupted by its timeout (or its rate
// limiter, or Ctrl-C) said "replayed 0" with tasks published, and a rerun
// after the duplicate window published them again.
func TestAnInterruptedReplayCountsWhatItPublishedAndARerunDoesNotRepeatIt(t *testing.T) {
	t.Parallel()
	const n = 20
	conn, store := withDeadLetters(t, n)
	entries := list(t, store, dlq.Filter{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res, err := store.Replay(ctx, entries, dlq.ReplayOptions{Rate: 5})
	stopped := time.Now()
	if err == nil {
		t.Fatalf("a replay of %d entries at 5/s within 2s finished: %+v", n, res)
	}
	got := storedReplays(t, conn.JetStream())
	if total(got) == 0 || total(got) < res.Replayed || total(got) > res.Replayed+res.InDoubt {
		t.Fatalf("the interrupted replay stored %d tasks and reported %+v (%v)", total(got), res, err)
	}
	pastWindow(stopped)
	res2, err := store.Replay(testkit.Context(t), list(t, store, dlq.Filter{}), dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got = storedReplays(t, conn.JetStream())
	for entry, k := range got {
		if k != 1 {
			t.Errorf("entry %s: its task stored %d times", entry, k)
		}
	}
	if len(got) != n || res.Replayed+res2.Replayed != n {
		t.Fatalf("%d of %d entries replayed; the two runs said %+v and %+v", len(got), n, res, res2)
	}
}

// Issue 14 item 4: of two overlapping replays, the second published again
// what the first had published and not yet marked (stored twice once the
// window had passed), and the first then reported "already replayed" for
// entries it did publish.
func TestOverlappingReplaysPublishEachEntryOnce(t *testing.T) {
	t.Parallel()
	const n = 6
	conn, store := withDeadLetters(t, n)
	entries := list(t, store, dlq.Filter{})
	slow := make(chan dlq.ReplayResult, 1)
	go func() {
		res, err := store.Replay(testkit.Context(t), entries, dlq.ReplayOptions{Rate: 4})
		if err != nil {
			t.Error(err)
		}
		slow <- res
	}()
	// The slow replay's first task is stored; the window passes; a fast
	// replay of the same entries runs.
	deadline := time.Now().Add(20 * time.Second)
	for total(storedReplays(t, conn.JetStream())) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the slow replay stored nothing")
		}
		time.Sleep(5 * time.Millisecond) // polling the server's state
	}
	pastWindow(time.Now())
	fast, err := store.Replay(testkit.Context(t), list(t, store, dlq.Filter{}), dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	res := <-slow
	got := storedReplays(t, conn.JetStream())
	for entry, k := range got {
		if k != 1 {
			t.Errorf("entry %s: its task stored %d times", entry, k)
		}
	}
	if len(got) != n || res.Replayed+fast.Replayed != n || res.Replayed+res.Skipped != n || fast.Replayed+fast.Skipped != n {
		t.Fatalf("%d of %d entries stored; the slow replay said %+v, the fast one %+v", len(got), n, res, fast)
	}
}

// An async publish whose acknowledgement never comes (a network blip
// loses it; nats.go keeps such a future open for ever unless told
// otherwise) stalled a replay without a deadline, as `replay` runs by
// default: it never returned. The connection now bounds every async
// acknowledgement, and a task whose acknowledgement did not come may have
// been stored, so it is in doubt: its reservation stays, and a rerun does
// not publish it again.
func TestAReplayWhoseAcknowledgementsNeverComeEndsInDoubt(t *testing.T) {
	t.Parallel()
	const n = 3
	conn, store := withDeadLetters(t, n)
	// A plain subscriber and no stream: the publishes reach a listener
	// (no "no responders") that never answers.
	sub, err := conn.NATS().SubscribeSync("silent.tasks")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx, cancel := context.WithCancel(context.Background()) // no deadline, like `replay` without --timeout
	defer cancel()
	type result struct {
		res dlq.ReplayResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := store.Replay(ctx, list(t, store, dlq.Filter{}), dlq.ReplayOptions{To: "silent.tasks"})
		done <- result{res, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(45 * time.Second):
		cancel()
		<-done
		t.Fatal("the replay had not returned 45s after publishing into silence")
	}
	if r.err == nil || r.res.InDoubt != n || r.res.Replayed != 0 || r.res.Failed != 0 {
		t.Fatalf("replay into silence: %+v, %v; want %d in doubt", r.res, r.err, n)
	}
	again, err := store.Replay(testkit.Context(t), list(t, store, dlq.Filter{}), dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Skipped != n || again.Replayed != 0 {
		t.Fatalf("a rerun after the tasks in doubt: %+v; want all %d skipped (they may have been stored)", again, n)
	}
}
