package bus_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go/jetstream"
)

func TestProvisionCreatesEverythingOnce(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	js := conn.JetStream()
	ctx := testkit.Context(t)

	// Idempotent: again, and from several goroutines at once.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- bus.Provision(ctx, js, topo) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("re-provision: %v", err)
		}
	}

	want := map[string]jetstream.RetentionPolicy{
		"JETAGENT_TASKS":   jetstream.WorkQueuePolicy,
		"JETAGENT_REPLIES": jetstream.LimitsPolicy,
		"JETAGENT_DLQ":     jetstream.LimitsPolicy,
	}
	for name, ret := range want {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if got := s.CachedInfo().Config.Retention; got != ret {
			t.Errorf("%s retention = %v, want %v", name, got, ret)
		}
	}
	dlq, _ := js.Stream(ctx, "JETAGENT_DLQ")
	if c := dlq.CachedInfo().Config; c.Discard != jetstream.DiscardNew || c.MaxAge != 0 || c.MaxBytes != -1 {
		t.Errorf("DLQ must keep everything and refuse when full: discard=%v max_age=%v max_bytes=%d", c.Discard, c.MaxAge, c.MaxBytes)
	}
	if _, err := js.KeyValue(ctx, "JETAGENT_DLQ_REPLAYS"); err != nil {
		t.Errorf("replays bucket: %v", err)
	}
	// No bucket shared by agents for their own state: ProvisionAgent makes
	// each agent's.
	if _, err := js.KeyValue(ctx, "JETAGENT_SNAPSHOTS"); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Errorf("a snapshot bucket shared by agents: %v", err)
	}
}

func TestProvisionRefusesConflictingStream(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{})
	conn := natstest.Connect(t, srv)
	js := conn.JetStream()
	ctx := testkit.Context(t)
	// Someone created the tasks stream by hand with limits retention.
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "JETAGENT_TASKS", Subjects: []string{"jetagent.tasks.>"}, Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	err = bus.Provision(ctx, js, bus.Topology{Memory: true})
	if !errors.Is(err, bus.ErrConfigConflict) {
		t.Fatalf("Provision = %v, want ErrConfigConflict", err)
	}
	for _, want := range []string{"JETAGENT_TASKS", "retention is Limits, want WorkQueue"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Nothing was changed.
	s, _ := js.Stream(ctx, "JETAGENT_TASKS")
	if s.CachedInfo().Config.Retention != jetstream.LimitsPolicy {
		t.Error("Provision changed the existing stream")
	}
}

func TestProvisionRefusesConflictingBucket(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, bus.Topology{Memory: true})
	if err := bus.ProvisionAgent(testkit.Context(t), conn.JetStream(), bus.Topology{Memory: true}, "A"); err != nil {
		t.Fatal(err)
	}
	err := bus.ProvisionAgent(testkit.Context(t), conn.JetStream(), bus.Topology{Memory: true, SnapshotHistory: 10}, "A")
	if !errors.Is(err, bus.ErrConfigConflict) || !strings.Contains(err.Error(), "JETAGENT_SNAPSHOTS_A: history is 5, want 10") {
		t.Fatalf("ProvisionAgent = %v, want ErrConfigConflict about history", err)
	}
}

func TestTopologyNames(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Prefix: "acme-prod"}
	if got := topo.TasksStream(); got != "ACME_PROD_TASKS" {
		t.Errorf("TasksStream = %q", got)
	}
	if got := topo.TaskSubject("echo", "task.request"); got != "acme-prod.tasks.echo.task.request" {
		t.Errorf("TaskSubject = %q", got)
	}
	if got := topo.DLQSubject("echo", "task.request"); got != "acme-prod.dlq.echo.task.request" {
		t.Errorf("DLQSubject = %q", got)
	}
	for _, bad := range []string{"", "a.b", "a b", "a*", ">", strings.Repeat("x", 65)} {
		if err := bus.ValidateName(bad); !errors.Is(err, bus.ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", bad, err)
		}
	}
	if err := (bus.Topology{Prefix: "a.b"}).Validate(); !errors.Is(err, bus.ErrInvalidName) {
		t.Errorf("Validate(prefix a.b) = %v", err)
	}
}

func TestProvisionAgentGivesEachAgentItsOwnBuckets(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	js := conn.JetStream()
	ctx := testkit.Context(t)
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for _, agent := range []string{"A", "B", "A", "B", "A", "B"} {
		wg.Go(func() { errs <- bus.ProvisionAgent(ctx, js, topo, agent) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("ProvisionAgent: %v", err)
		}
	}
	for _, agent := range []string{"A", "B"} {
		snaps, err := js.KeyValue(ctx, topo.SnapshotBucket(agent))
		if err != nil {
			t.Fatalf("snapshot bucket of %s: %v", agent, err)
		}
		sst, err := snaps.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if sst.Bucket() != "JETAGENT_SNAPSHOTS_"+agent || sst.History() != bus.DefaultSnapshotHistory || sst.LimitMarkerTTL() != bus.DefaultSnapshotMarkerTTL {
			t.Errorf("bucket %s: history %d, marker ttl %v", sst.Bucket(), sst.History(), sst.LimitMarkerTTL())
		}
		kv, err := js.KeyValue(ctx, topo.RecordsBucket(agent))
		if err != nil {
			t.Fatalf("records bucket of %s: %v", agent, err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Bucket() != "JETAGENT_RECORDS_"+agent || st.History() != 1 || st.LimitMarkerTTL() != bus.RecordMarkerTTL {
			t.Errorf("bucket %s: history %d, marker ttl %v", st.Bucket(), st.History(), st.LimitMarkerTTL())
		}
		// Records carry their own TTL.
		if _, err := kv.Create(ctx, "x", []byte("1"), jetstream.KeyTTL(time.Second)); err != nil {
			t.Errorf("create with a TTL in %s: %v", st.Bucket(), err)
		}
	}
	if err := bus.ProvisionAgent(ctx, js, topo, "a.b"); !errors.Is(err, bus.ErrInvalidName) {
		t.Errorf("ProvisionAgent(a.b) = %v, want ErrInvalidName", err)
	}
	err := bus.ProvisionAgent(ctx, js, bus.Topology{Memory: false}, "A")
	if !errors.Is(err, bus.ErrConfigConflict) || !strings.Contains(err.Error(), "JETAGENT_SNAPSHOTS_A") {
		t.Errorf("ProvisionAgent with other storage = %v, want ErrConfigConflict naming the bucket", err)
	}
}
