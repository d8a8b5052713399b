package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/snapshot"
)

// sideEffects counts how many times each step of each task ran.
type sideEffects struct {
	mu  sync.Mutex
	ran map[string]int
}

func (s *sideEffects) add(task string, step int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ran == nil {
		s.ran = map[string]int{}
	}
	s.ran[fmt.Sprint(task, "/", step)]++
}

func (s *sideEffects) count(task string, step int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ran[fmt.Sprint(task, "/", step)]
}

// stepsHandler runs steps 1..n, adding state; before returning from
// step `failAfter` on the first attempt it fails transiently (a crash
// between steps, as far as the task's progress goes).
func stepsHandler(effects *sideEffects, n, failAfter int) runtime.Handler {
	return func(ctx context.Context, t *runtime.Task) (any, error) {
		for i := 1; i <= n; i++ {
			err := t.Step(ctx, i, func(context.Context) (any, error) {
				effects.add(t.TaskID(), i)
				return map[string]int{"done": i}, nil
			})
			if err != nil {
				return nil, err
			}
			if i == failAfter && t.Attempt == 1 {
				return nil, errors.New("worker lost after step")
			}
		}
		var st map[string]int
		if _, err := t.State(ctx, &st); err != nil {
			return nil, err
		}
		return st["done"], nil
	}
}

func TestTaskResumesAfterTheLastCheckpoint(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var effects sideEffects
	rt := agenttest.Start(t, conn, runtime.Config{}, stepsHandler(&effects, 10, 3))
	req := request(t, nil)
	rep, err := newClient(t, conn).Send(testkit.Context(t), req)
	if err != nil {
		t.Fatal(err)
	}
	var last int
	if err := rep.DecodePayload(&last); err != nil || last != 10 {
		t.Fatalf("reply %d, %v", last, err)
	}
	for i := 1; i <= 10; i++ {
		if n := effects.count(req.ID, i); n != 1 {
			t.Errorf("step %d ran %d times", i, n)
		}
	}
	testkit.WaitFor(t, "settlement", func() bool { return rt.Stats().Succeeded == 1 })
	if st := rt.Stats(); st.Retried != 1 {
		t.Errorf("stats = %+v", st)
	}
	store, _ := snapshot.NewKV(conn.JetStream(), topo)
	testkit.WaitFor(t, "the snapshot to go", func() bool {
		_, err := store.Load(testkit.Context(t), "echo", req.ID)
		return errors.Is(err, snapshot.ErrNotFound)
	})
}

// Two messages carrying one task id reach two workers at once: only one
// runs each step; the other stops at its first refused claim.
func TestTwoDeliveriesRacingOnOneTaskRunEachStepOnce(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var effects sideEffects
	gate := make(chan struct{})
	var arrived sync.WaitGroup
	arrived.Add(2)
	rt := agenttest.Start(t, conn, runtime.Config{Concurrency: 2}, func(ctx context.Context, task *runtime.Task) (any, error) {
		arrived.Done()
		<-gate // both deliveries start together
		for i := 1; i <= 10; i++ {
			if err := task.Step(ctx, i, func(context.Context) (any, error) {
				effects.add(task.TaskID(), i)
				time.Sleep(2 * time.Millisecond) // a little work, so the racer overlaps
				return nil, nil
			}); err != nil {
				return nil, err
			}
		}
		return "done", nil
	})
	a, b := request(t, "a"), request(t, "b")
	b.TaskID, a.TaskID = "order-17", "order-17"
	pub := bus.NewPublisher(conn.JetStream())
	for _, e := range []*envelope.Envelope{a, b} {
		if _, err := pub.PublishEnvelope(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), e); err != nil {
			t.Fatal(err)
		}
	}
	arrived.Wait()
	close(gate)
	testkit.WaitFor(t, "both settled", func() bool { st := rt.Stats(); return st.Succeeded+st.Duplicates == 2 })
	for i := 1; i <= 10; i++ {
		if n := effects.count("order-17", i); n != 1 {
			t.Errorf("step %d ran %d times", i, n)
		}
	}
	if st := rt.Stats(); st.Succeeded != 1 || st.Duplicates != 1 {
		t.Fatalf("stats = %+v, want one success and one duplicate", st)
	}
}

func TestCancelStopsARunningTaskAtItsNextStep(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	var effects sideEffects
	reached := make(chan int, 20)
	proceed := make(chan struct{})
	rt := agenttest.Start(t, conn, runtime.Config{Concurrency: 2}, func(ctx context.Context, task *runtime.Task) (any, error) {
		for i := 1; i <= 10; i++ {
			if err := task.Step(ctx, i, func(context.Context) (any, error) {
				effects.add(task.TaskID(), i)
				return nil, nil
			}); err != nil {
				return nil, err
			}
			reached <- i
			if i == 2 {
				<-proceed
			}
		}
		return "finished", nil
	})
	client := newClient(t, conn)
	req := request(t, nil)
	req.TaskID = "long-1"
	replied := make(chan *envelope.Envelope, 1)
	go func() {
		rep, err := client.Send(testkit.Context(t), req)
		if err != nil {
			t.Error(err)
		}
		replied <- rep
	}()
	for <-reached != 2 {
	}
	cancel, _ := envelope.New("tester", "echo", envelope.TaskCancel, nil)
	cancel.TaskID = "long-1"
	ack, err := client.Send(testkit.Context(t), cancel)
	if err != nil {
		t.Fatal(err)
	}
	var st runtime.TaskState
	if err := ack.DecodePayload(&st); err != nil || st.Status != snapshot.Cancelled || st.Step != 2 {
		t.Fatalf("cancel answer %+v, %v", st, err)
	}
	close(proceed)
	rep := <-replied
	if err := rep.DecodePayload(&st); err != nil || rep.PayloadType != envelope.TaskUpdate || st.Status != snapshot.Cancelled {
		t.Fatalf("task reply %s %+v, %v", rep.PayloadType, st, err)
	}
	if effects.count("long-1", 3) != 0 {
		t.Error("step 3 ran after the cancel")
	}
	testkit.WaitFor(t, "the cancelled task to be settled", func() bool { return rt.Stats().Cancelled == 1 })
	q, _ := envelope.New("tester", "echo", envelope.StateQuery, nil)
	q.TaskID = "long-1"
	ans, err := client.Send(testkit.Context(t), q)
	if err != nil {
		t.Fatal(err)
	}
	if err := ans.DecodePayload(&st); err != nil || st.Found {
		t.Fatalf("state after cancel: %+v (the snapshot should be gone)", st)
	}
}

// The seed's failover: a backup agent takes over a task from where the
// primary stopped, through state.query and state.restore.
func TestStateRestoreHandsATaskToABackupAgent(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	store, err := snapshot.NewKV(conn.JetStream(), topo)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.ProvisionAgent(testkit.Context(t), conn.JetStream(), topo, "primary"); err != nil {
		t.Fatal(err)
	}
	// The primary got to step 6 and died.
	if _, err := store.Save(testkit.Context(t), &snapshot.Snapshot{Agent: "primary", TaskID: "job-9", Step: 6,
		Status: snapshot.Working, Updated: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}
	var effects sideEffects
	agenttest.Start(t, conn, runtime.Config{Agent: "backup"}, stepsHandler(&effects, 10, 0))
	client := newClient(t, conn)
	ask := func(typ envelope.PayloadType, to string, payload any) *envelope.Envelope {
		t.Helper()
		e, _ := envelope.New("tester", to, typ, payload)
		e.TaskID = "job-9"
		rep, err := client.Send(testkit.Context(t), e)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		return rep
	}
	var st runtime.TaskState
	_ = ask(envelope.StateQuery, "backup", nil).DecodePayload(&st)
	if st.Found {
		t.Fatalf("backup knows the task before the restore: %+v", st)
	}
	_ = ask(envelope.StateRestore, "backup", runtime.RestoreRequest{From: "primary"}).DecodePayload(&st)
	if !st.Found || st.Step != 6 {
		t.Fatalf("restore answer %+v", st)
	}
	var last int
	_ = ask(envelope.TaskRequest, "backup", nil).DecodePayload(&last)
	if last != 10 {
		t.Fatalf("backup finished at %d", last)
	}
	for i := 1; i <= 10; i++ {
		want := 0
		if i > 6 {
			want = 1
		}
		if n := effects.count("job-9", i); n != want {
			t.Errorf("step %d ran %d times on the backup, want %d", i, n, want)
		}
	}
}
