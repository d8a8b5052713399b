package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/jetagent/jetagent/snapshot/snapshottest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestKVConformance runs the suite on one embedded server, each subtest
// on its own provisioned topology (its own buckets).
func TestKVConformance(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	var n atomic.Int64
	snapshottest.Run(t, func(t *testing.T) snapshot.Store {
		// Markers (and so TTLs) of a second, for the suite's TTL test.
		store, _ := newKV(t, conn.JetStream(), bus.Topology{Memory: true, Prefix: fmt.Sprintf("c%d", n.Add(1)), SnapshotMarkerTTL: time.Second})
		return store
	})
}

// newKV provisions topo and the buckets of the suite's agents, and opens
// the snapshot store and agent "a"'s raw bucket.
func newKV(t testing.TB, js jetstream.JetStream, topo bus.Topology) (*snapshot.KV, jetstream.KeyValue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, topo); err != nil {
		t.Fatalf("provision: %v", err)
	}
	for _, agent := range snapshottest.Agents {
		if err := bus.ProvisionAgent(ctx, js, topo, agent); err != nil {
			t.Fatalf("provision %s: %v", agent, err)
		}
	}
	store, err := snapshot.NewKV(js, topo)
	if err != nil {
		t.Fatalf("NewKV: %v", err)
	}
	raw, err := js.KeyValue(ctx, topo.SnapshotBucket("a"))
	if err != nil {
		t.Fatal(err)
	}
	return store, raw
}

func provisioned(t *testing.T, topo bus.Topology) (*snapshot.KV, jetstream.KeyValue, jetstream.JetStream) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	store, raw := newKV(t, conn.JetStream(), topo)
	return store, raw, conn.JetStream()
}

// A store opens an agent's bucket when first used: NewKV needs none, and
// an agent without a bucket gets ErrNoBucket then, naming what to run.
func TestNewKVOpensBucketsLazily(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	topo := bus.Topology{Memory: true}
	store, err := snapshot.NewKV(conn.JetStream(), topo)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Load(t.Context(), "a", "t")
	if !errors.Is(err, snapshot.ErrNoBucket) || !errors.Is(err, jetstream.ErrBucketNotFound) || !strings.Contains(err.Error(), "bus.ProvisionAgent") {
		t.Fatalf("Load without the agent's bucket: %v", err)
	}
	if err := bus.ProvisionAgent(t.Context(), conn.JetStream(), topo, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Load(t.Context(), "a", "t"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("Load once provisioned: %v", err)
	}
	if _, err = snapshot.NewKV(conn.JetStream(), bus.Topology{Prefix: "bad.prefix"}); !errors.Is(err, bus.ErrInvalidName) {
		t.Fatalf("NewKV with a bad prefix: %v", err)
	}
}

// Each agent's snapshots live in its own bucket: a rollup in one (which
// anyone allowed to write one key of it can send) leaves the others'.
func TestKVAgentsHaveBucketsOfTheirOwn(t *testing.T) {
	t.Parallel()
	store, _, js := provisioned(t, bus.Topology{Memory: true})
	ctx := t.Context()
	for _, agent := range []string{"a", "b"} {
		if _, err := store.Save(ctx, &snapshot.Snapshot{Agent: agent, TaskID: "t", Step: 3, Status: snapshot.Working}, 0); err != nil {
			t.Fatal(err)
		}
	}
	topo := bus.Topology{Memory: true}
	m := nats.NewMsg("$KV." + topo.SnapshotBucket("a") + ".a.x")
	m.Header.Set("Nats-Rollup", "all")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Load(ctx, "a", "t"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Fatalf("a's own rollup: %v", err)
	}
	if got, err := store.Load(ctx, "b", "t"); err != nil || got.Step != 3 {
		t.Fatalf("b's snapshot after a's rollup: %+v, %v", got, err)
	}
}

func TestNewKVFromBucket(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	raw, err := conn.JetStream().CreateKeyValue(t.Context(), jetstream.KeyValueConfig{Bucket: "own", History: 2, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	store := snapshot.NewKVFromBucket(raw)
	var rev uint64
	for step := 1; step <= 4; step++ {
		if rev, err = store.Save(t.Context(), &snapshot.Snapshot{Agent: "a", TaskID: "t", Step: step, Status: snapshot.Working}, rev); err != nil {
			t.Fatal(err)
		}
	}
	hist, err := store.History(t.Context(), "a", "t", 10)
	if err != nil || len(hist) != 2 || hist[0].Step != 4 || hist[1].Step != 3 {
		t.Fatalf("History on a bucket of depth 2: %d snapshots, %v", len(hist), err)
	}
}

// TestKVCorruptValue: a value that does not decode is ErrCorrupt for
// Load, History and List, and skipped by Watch.
func TestKVCorruptValue(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, raw, _ := provisioned(t, bus.Topology{Memory: true})
	key, _ := snapshot.Key("a", "bad")
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := store.Watch(wctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, garbage := range [][]byte{nil, []byte("not msgpack"), {0xc1}, {0x81, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xa4, 'd', 'o', 'n', 'e'}, {0xdf, 0xff, 0xff, 0xff, 0xff}} {
		if _, err := raw.Put(ctx, key, garbage); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Load(ctx, "a", "bad"); !errors.Is(err, snapshot.ErrCorrupt) {
			t.Fatalf("Load of %q: %v", garbage, err)
		}
	}
	if _, err := store.History(ctx, "a", "bad", 3); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("History: %v", err)
	}
	if _, err := store.List(ctx, "a"); !errors.Is(err, snapshot.ErrCorrupt) {
		t.Fatalf("List: %v", err)
	}
	if _, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "good", Status: snapshot.Working}, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-ch:
		if ev.TaskID != "good" {
			t.Fatalf("first event for %q, want the corrupt ones skipped", ev.TaskID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event")
	}
	// The corrupt task can still be deleted and started over.
	if err := store.Delete(ctx, "a", "bad"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "bad", Status: snapshot.Working}, 0); err != nil {
		t.Fatal(err)
	}
}

// TestKVForeignKeys: keys Key would not produce are not tasks.
func TestKVForeignKeys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, raw, _ := provisioned(t, bus.Topology{Memory: true})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := store.Watch(wctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"a.b.c", "a.=YWJj", "a.=QR", "a.=!", "a.=="} {
		if _, err := raw.Put(ctx, key, []byte("x")); err != nil && !errors.Is(err, jetstream.ErrInvalidKey) {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	if _, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "abc", Status: snapshot.Working}, 0); err != nil {
		t.Fatal(err)
	}
	list, err := store.List(ctx, "a")
	if err != nil || len(list) != 1 || list[0].TaskID != "abc" {
		t.Fatalf("List: %d snapshots, %v; want only abc", len(list), err)
	}
	if ev := <-ch; ev.TaskID != "abc" {
		t.Fatalf("first event for %q, want abc", ev.TaskID)
	}
}

// TestKVPurgeSemantics pins what JetStream does around a purge, which
// Save and Delete rely on.
func TestKVPurgeSemantics(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, raw, _ := provisioned(t, bus.Topology{Memory: true})
	key, _ := snapshot.Key("a", "t")
	rev, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "t", Status: snapshot.Working}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(ctx, "a", "t"); err != nil {
		t.Fatal(err)
	}
	// Raw Update with the old revision: revision mismatch (the purge
	// marker is now the key's last message).
	if _, err := raw.Update(ctx, key, []byte("x"), rev); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("raw Update(old revision) after purge: %v", err)
	}
	// Raw Update with 0 fails too: the marker counts as a message...
	if _, err := raw.Update(ctx, key, []byte("x"), 0); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("raw Update(0) after purge: %v", err)
	}
	// ...and raw Update with the marker's own revision succeeds.
	marker := rev + 1
	st, err := raw.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Values() != 1 {
		t.Fatalf("bucket holds %d messages after a purge, want the marker only", st.Values())
	}
	rev2, err := raw.Update(ctx, key, []byte("x"), marker)
	if err != nil {
		t.Fatalf("raw Update(marker revision %d): %v", marker, err)
	}
	// Get of the raw value is ErrCorrupt for the store; delete again and
	// Save with 0 goes through Create's marker path.
	if err := store.Delete(ctx, "a", "t"); err != nil {
		t.Fatal(err)
	}
	rev3, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "t", Status: snapshot.Working}, 0)
	if err != nil || rev3 <= rev2 {
		t.Fatalf("Save(0) after purge: revision %d (previous %d), %v", rev3, rev2, err)
	}
	// Delete of a task with no snapshot still writes a marker.
	before, _ := raw.Status(ctx)
	if err := store.Delete(ctx, "a", "never"); err != nil {
		t.Fatal(err)
	}
	after, _ := raw.Status(ctx)
	if after.Values() != before.Values()+1 {
		t.Fatalf("Delete of a missing task: %d messages, before %d", after.Values(), before.Values())
	}
}

func TestKVPurgeDeleteMarkers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, raw, _ := provisioned(t, bus.Topology{Memory: true})
	for _, id := range []string{"t1", "t2", "keep"} {
		if _, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: id, Status: snapshot.Working}, 0); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"t1", "t2", "never"} {
		if err := store.Delete(ctx, "a", id); err != nil {
			t.Fatal(err)
		}
	}
	st, _ := raw.Status(ctx)
	if st.Values() != 4 {
		t.Fatalf("%d messages before purging markers, want 4 (3 markers, 1 value)", st.Values())
	}
	if err := store.PurgeDeleteMarkers(ctx, "a", time.Hour); err != nil {
		t.Fatal(err)
	}
	if st, _ = raw.Status(ctx); st.Values() != 4 {
		t.Fatalf("%d messages after purging markers older than an hour, want 4", st.Values())
	}
	if err := store.PurgeDeleteMarkers(ctx, "a", 0); err != nil {
		t.Fatal(err)
	}
	if st, _ = raw.Status(ctx); st.Values() != 1 {
		t.Fatalf("%d messages after purging all markers, want 1", st.Values())
	}
	if _, err := store.Load(ctx, "a", "keep"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "t1", Status: snapshot.Working}, 0); err != nil {
		t.Fatalf("Save(0) after the marker is gone: %v", err)
	}
}

// TestKVHistoryDepth: the bucket's history bounds History.
func TestKVHistoryDepth(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	store, _, _ := provisioned(t, bus.Topology{Memory: true, SnapshotHistory: 2})
	var rev uint64
	var err error
	for step := 1; step <= 5; step++ {
		if rev, err = store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "t", Step: step, Status: snapshot.Working}, rev); err != nil {
			t.Fatal(err)
		}
	}
	hist, err := store.History(ctx, "a", "t", 10)
	if err != nil || len(hist) != 2 || hist[0].Step != 5 || hist[1].Step != 4 {
		t.Fatalf("History: %d snapshots, %v", len(hist), err)
	}
}

// TestKVWatchEndsWithConnection: the channel also closes when the
// connection closes, and its goroutine ends (goleak checks).
func TestKVWatchEndsWithConnection(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{})
	conn, err := srv.Connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	store, _ := newKV(t, conn.JetStream(), bus.Topology{Memory: true})
	ch, err := store.Watch(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("event after close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch channel still open after the connection closed")
	}
}

// TestKVNoDeadline: List and History with a context without deadline
// leave no goroutine behind (nats.go waits on the watcher's context).
func TestKVNoDeadline(t *testing.T) {
	t.Parallel()
	store, _, _ := provisioned(t, bus.Topology{Memory: true})
	ctx := context.Background()
	if _, err := store.Save(ctx, &snapshot.Snapshot{Agent: "a", TaskID: "t", Status: snapshot.Working}, 0); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := store.List(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if _, err := store.History(ctx, "a", "t", 5); err != nil {
			t.Fatal(err)
		}
	}
}
