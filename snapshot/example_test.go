package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go/jetstream"
)

// A checkpoint is saved on the revision last seen: the first with 0, the
// next with what the previous Save returned. A second replica that still
// holds an old revision loses with ErrConflict.
func ExampleMemory() {
	ctx := context.Background()
	store := snapshot.NewMemory(0)

	s := &snapshot.Snapshot{Agent: "summarizer", TaskID: "task-42", Step: 1, Status: snapshot.Working, State: []byte{0x90}}
	rev1, _ := store.Save(ctx, s, 0)
	s.Step = 2
	rev2, _ := store.Save(ctx, s, rev1)
	fmt.Println("revisions:", rev1, rev2)

	// A replica that loaded the task before step 2 tries to save step 2 too.
	stale := &snapshot.Snapshot{Agent: "summarizer", TaskID: "task-42", Step: 2, Status: snapshot.Working}
	_, err := store.Save(ctx, stale, rev1)
	fmt.Println("stale save conflicts:", errors.Is(err, snapshot.ErrConflict))

	latest, _ := store.Load(ctx, "summarizer", "task-42")
	fmt.Println("resume after step", latest.Step, "at revision", latest.Revision)

	hist, _ := store.History(ctx, "summarizer", "task-42", 10)
	for _, h := range hist {
		fmt.Println("history: step", h.Step, "revision", h.Revision)
	}

	_ = store.Delete(ctx, "summarizer", "task-42") // the task completed
	_, err = store.Load(ctx, "summarizer", "task-42")
	fmt.Println("after delete:", errors.Is(err, snapshot.ErrNotFound))
	// Output:
	// revisions: 1 2
	// stale save conflicts: true
	// resume after step 2 at revision 2
	// history: step 2 revision 2
	// history: step 1 revision 1
	// after delete: true
}

func ExampleMemory_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	store := snapshot.NewMemory(0)
	events, _ := store.Watch(ctx, "summarizer")

	rev, _ := store.Save(ctx, &snapshot.Snapshot{Agent: "summarizer", TaskID: "t1", Step: 1, Status: snapshot.Working}, 0)
	_, _ = store.Save(ctx, &snapshot.Snapshot{Agent: "other", TaskID: "t1", Status: snapshot.Working}, 0)
	_, _ = store.Save(ctx, &snapshot.Snapshot{Agent: "summarizer", TaskID: "t1", Step: 2, Status: snapshot.Completed}, rev)
	_ = store.Delete(ctx, "summarizer", "t1")

	for range 3 {
		ev := <-events
		if ev.Snapshot == nil {
			fmt.Println(ev.TaskID, "deleted")
			continue
		}
		fmt.Println(ev.TaskID, "step", ev.Snapshot.Step, ev.Snapshot.Status)
	}
	cancel()
	for range events { // closes once ctx ends
	}
	// Output:
	// t1 step 1 working
	// t1 step 2 completed
	// t1 deleted
}

// exampleConn starts an embedded server in a temporary directory and
// connects to it; stop shuts both down.
func exampleConn(ctx context.Context) (conn *bus.Conn, stop func(), err error) {
	dir, err := os.MkdirTemp("", "snapshot-example")
	if err != nil {
		return nil, nil, err
	}
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	conn, err = srv.Connect(ctx)
	if err != nil {
		_ = srv.Shutdown(ctx)
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return conn, func() {
		conn.Close()
		_ = srv.Shutdown(ctx)
		os.RemoveAll(dir)
	}, nil
}

// NewKV keeps each agent's snapshots in the agent's own bucket (created by
// bus.ProvisionAgent), opened when first used. This example runs an
// embedded server; an agent would use its bus connection.
func ExampleNewKV() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, stop, err := exampleConn(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	topo := bus.Topology{Memory: true}
	store, err := snapshot.NewKV(conn.JetStream(), topo)
	if err != nil {
		fmt.Println(err)
		return
	}
	_, err = store.Load(ctx, "summarizer", "report 2026/Q1")
	fmt.Println("before provisioning, bucket missing:", errors.Is(err, snapshot.ErrNoBucket))
	if err := bus.ProvisionAgent(ctx, conn.JetStream(), topo, "summarizer"); err != nil {
		fmt.Println(err)
		return
	}

	s := &snapshot.Snapshot{Agent: "summarizer", TaskID: "report 2026/Q1", Step: 3, Status: snapshot.Working}
	rev, _ := store.Save(ctx, s, 0)
	_, err = store.Save(ctx, s, 0)
	fmt.Println("second create conflicts:", errors.Is(err, snapshot.ErrConflict))
	got, _ := store.Load(ctx, "summarizer", "report 2026/Q1")
	fmt.Println(got.TaskID, "step", got.Step, "revision matches:", got.Revision == rev)

	// The task completed: no snapshot is left behind, then the purge
	// markers are cleared.
	_ = store.Delete(ctx, "summarizer", "report 2026/Q1")
	_, err = store.Load(ctx, "summarizer", "report 2026/Q1")
	fmt.Println("after delete:", errors.Is(err, snapshot.ErrNotFound))
	fmt.Println("purge markers:", store.PurgeDeleteMarkers(ctx, "summarizer", 0))
	// Output:
	// before provisioning, bucket missing: true
	// second create conflicts: true
	// report 2026/Q1 step 3 revision matches: true
	// after delete: true
	// purge markers: <nil>
}

// NewKVFromBucket uses a bucket the caller configured, here with a
// history of 2 revisions.
func ExampleNewKVFromBucket() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, stop, err := exampleConn(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	bucket, err := conn.JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: "my_snapshots", History: 2, Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	store := snapshot.NewKVFromBucket(bucket)
	var rev uint64
	for step := 1; step <= 3; step++ {
		rev, _ = store.Save(ctx, &snapshot.Snapshot{Agent: "etl", TaskID: "batch-7", Step: step, Status: snapshot.Working}, rev)
	}
	hist, _ := store.History(ctx, "etl", "batch-7", 10)
	for _, h := range hist {
		fmt.Println("step", h.Step)
	}
	list, _ := store.List(ctx, "etl")
	fmt.Println("tasks of etl:", len(list))
	// Output:
	// step 3
	// step 2
	// tasks of etl: 1
}

func ExampleStatus_CanTransition() {
	fmt.Println(snapshot.Working.CanTransition(snapshot.InputRequired))
	fmt.Println(snapshot.InputRequired.CanTransition(snapshot.Working))
	fmt.Println(snapshot.Submitted.CanTransition(snapshot.Completed))
	fmt.Println(snapshot.Completed.CanTransition(snapshot.Working), snapshot.Completed.Terminal())
	// Output:
	// true
	// true
	// false
	// false true
}

func ExampleTransition() {
	fmt.Println(snapshot.Transition("", snapshot.Working)) // no snapshot yet: submitted
	err := snapshot.Transition(snapshot.Cancelled, snapshot.Working)
	fmt.Println(errors.Is(err, snapshot.ErrIllegalTransition), err)
	// Output:
	// <nil>
	// true snapshot: illegal status transition: cancelled -> working
}

func ExampleKey() {
	for _, id := range []string{"job-17", "report 2026/Q1", "a.b"} {
		key, _ := snapshot.Key("summarizer", id)
		agent, taskID, _ := snapshot.ParseKey(key)
		fmt.Printf("%s <- %s/%s\n", key, agent, taskID)
	}
	_, err := snapshot.Key("bad.agent", "job-17")
	fmt.Println(errors.Is(err, snapshot.ErrInvalid))
	// Output:
	// summarizer.job-17 <- summarizer/job-17
	// summarizer.=cmVwb3J0IDIwMjYvUTE <- summarizer/report 2026/Q1
	// summarizer.=YS5i <- summarizer/a.b
	// true
}
