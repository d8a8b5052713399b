package snapshot_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/jetagent/jetagent/snapshot/snapshottest"
)

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	snapshottest.Run(t, func(*testing.T) snapshot.Store { return snapshot.NewMemory(0) })
}

func TestMemoryHistoryDepth(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ history, want int }{{0, bus.DefaultSnapshotHistory}, {-3, bus.DefaultSnapshotHistory}, {1, 1}, {2, 2}, {64, 64}} {
		t.Run(fmt.Sprint(tc.history), func(t *testing.T) {
			m := snapshot.NewMemory(tc.history)
			var rev uint64
			var err error
			for step := range tc.want + 3 {
				rev, err = m.Save(t.Context(), &snapshot.Snapshot{Agent: "a", TaskID: "t", Step: step, Status: snapshot.Working}, rev)
				if err != nil {
					t.Fatal(err)
				}
			}
			hist, err := m.History(t.Context(), "a", "t", 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) != tc.want {
				t.Fatalf("kept %d revisions, want %d", len(hist), tc.want)
			}
			if hist[0].Step != tc.want+2 || hist[len(hist)-1].Step != 3 {
				t.Fatalf("kept steps %d..%d, want the newest", hist[len(hist)-1].Step, hist[0].Step)
			}
		})
	}
}

// TestMemoryRevisionsStoreWide: one counter for all tasks, as a stream
// sequence, so a delete and re-create never reuses a revision.
func TestMemoryRevisionsStoreWide(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	m := snapshot.NewMemory(0)
	var last uint64
	for i, op := range []string{"a/1", "b/1", "a/2", "del a", "a/1"} {
		switch op {
		case "del a":
			if err := m.Delete(ctx, "x", "a"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		task, step := op[:1], int(op[2]-'0')
		var expected uint64
		if cur, err := m.Load(ctx, "x", task); err == nil {
			expected = cur.Revision
		}
		rev, err := m.Save(ctx, &snapshot.Snapshot{Agent: "x", TaskID: task, Step: step, Status: snapshot.Working}, expected)
		if err != nil {
			t.Fatalf("op %d %s: %v", i, op, err)
		}
		if rev <= last {
			t.Fatalf("op %d %s: revision %d not above %d", i, op, rev, last)
		}
		last = rev
	}
	if last != 5 {
		t.Fatalf("last revision %d, want 5 (four saves and one delete)", last)
	}
}

// TestMemorySlowWatcher: a watcher that does not read never blocks Save,
// and gets every event, in order, once it reads.
func TestMemorySlowWatcher(t *testing.T) {
	t.Parallel()
	const n = 10000
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	m := snapshot.NewMemory(0)
	ch, err := m.Watch(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	var rev uint64
	for step := 1; step <= n; step++ {
		if rev, err = m.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "t", Step: step, Status: snapshot.Working}, rev); err != nil {
			t.Fatal(err)
		}
	}
	for step := 1; step <= n; step++ {
		ev := <-ch
		if ev.Snapshot == nil || ev.Snapshot.Step != step || ev.Snapshot.Revision != uint64(step) {
			t.Fatalf("event %d: %+v", step, ev.Snapshot)
		}
	}
	cancel()
	for range ch {
	}
}

func TestMemoryCanceledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	m := snapshot.NewMemory(0)
	if _, err := m.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "t", Status: snapshot.Working}, 0); err != context.Canceled {
		t.Fatalf("Save with canceled ctx: %v", err)
	}
	if _, err := m.Load(ctx, "a", "t"); err != context.Canceled {
		t.Fatalf("Load with canceled ctx: %v", err)
	}
}
