package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/snapshot"
)

// TestTaskSurvivesSIGKILLBetweenSteps kills a real agent process with
// SIGKILL in the middle of four 10-step tasks (after step 3 of each),
// starts another process, and checks that every task completes with each
// step's side effect written exactly once, and no snapshot left behind.
func TestTaskSurvivesSIGKILLBetweenSteps(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := bus.Topology{}
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	store, err := snapshot.NewKV(conn.JetStream(), topo)
	if err != nil {
		t.Fatal(err)
	}
	effects := filepath.Join(t.TempDir(), "effects")
	bin := buildHostBinary(t, "./integration/testdata/stepagent")

	first := startAgentProcessBin(t, bin, "--nats", srv.URL(), "--effects", effects, "--pause-after", "3")
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Retry: &runtime.RetryConfig{AttemptTimeout: time.Minute}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const tasks = 4 // the agent's default concurrency: each pauses holding a worker
	replies := make(chan error, tasks)
	ids := make([]string, tasks)
	for i := range ids {
		ids[i] = fmt.Sprintf("report/%d with spaces", i) // ids are encoded safely as keys
		env, err := envelope.New("test", "stepper", envelope.TaskRequest, nil)
		if err != nil {
			t.Fatal(err)
		}
		env.TaskID = ids[i]
		go func() {
			rep, err := client.Send(ctx, env)
			if err == nil {
				var steps int
				if derr := rep.DecodePayload(&steps); derr != nil || steps != 10 {
					err = fmt.Errorf("reply %d, %v", steps, derr)
				}
			}
			replies <- err
		}()
	}
	// Every task checkpointed step 3 and paused: kill the process.
	for _, id := range ids {
		waitSnapshot(ctx, t, store, id, 3)
	}
	killed := time.Now()
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	startAgentProcessBin(t, bin, "--nats", srv.URL(), "--effects", effects)
	for range tasks {
		if err := <-replies; err != nil {
			t.Fatalf("task: %v", err)
		}
	}
	t.Logf("all %d tasks completed %v after the SIGKILL", tasks, time.Since(killed).Round(time.Millisecond))

	data, err := os.ReadFile(effects)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		count[line]++
	}
	for _, id := range ids {
		for step := 1; step <= 10; step++ {
			if n := count[fmt.Sprintf("%s %d", id, step)]; n != 1 {
				t.Errorf("task %q step %d ran %d times", id, step, n)
			}
		}
		// The reply goes out before the task is recorded, acked and its
		// snapshot dropped: poll, bounded, for the drop.
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) { // polling the bucket, not synchronising
			if _, err = store.Load(ctx, "stepper", id); errors.Is(err, snapshot.ErrNotFound) {
				break
			}
		}
		if !errors.Is(err, snapshot.ErrNotFound) {
			t.Errorf("task %q left a snapshot behind 10s after its reply (%v)", id, err)
		}
	}
}

// waitSnapshot polls the store until the task's last step is step.
func waitSnapshot(ctx context.Context, t *testing.T, store snapshot.Store, id string, step int) {
	t.Helper()
	for {
		s, err := store.Load(ctx, "stepper", id)
		if err == nil && s.Step == step {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("task %q never reached step %d (last: %+v, %v)", id, step, s, err)
		case <-time.After(20 * time.Millisecond): // polling the server
		}
	}
}
