package integration

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// TestDrainOnSIGTERMLosesNothingAndRunsNothingTwice stops a busy agent
// process with SIGTERM: it stops pulling, finishes the tasks in hand,
// hands the rest back and exits 0; a second agent takes the rest. Every
// task is answered and processed exactly once.
func TestDrainOnSIGTERMLosesNothingAndRunsNothingTwice(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	ledger := filepath.Join(t.TempDir(), "ledger")
	args := []string{"--latency", "200ms", "--concurrency", "4", "--ack-wait", "30s"}
	a := ledgerAgent(t, srv.URL(), ledger, args...)
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)
	const n = 60
	replyTo := topo.ReplySubject("drain")
	msgs, ids := taskMsgs(t, "ledger", replyTo, n, nil)
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "some tasks done", func() bool { return len(ledgerCounts(t, ledger)) >= 8 })
	stopped := time.Now()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.done:
		if err != nil {
			t.Fatalf("agent exit after SIGTERM: %v (want 0)", err)
		}
	case <-ctx.Done():
		t.Fatal("agent did not exit after SIGTERM")
	}
	drained := time.Since(stopped)
	doneByFirst := len(ledgerCounts(t, ledger))
	// The handed-back tasks were recorded as such: they spent no attempt,
	// and the second agent runs them at full concurrency.
	ledgerAgent(t, srv.URL(), ledger, args...)
	readReplies(ctx, t, js, topo, replyTo, n)
	counts := ledgerCounts(t, ledger)
	for _, id := range ids {
		if counts[id] != 1 {
			t.Errorf("task %s processed %d times", id, counts[id])
		}
	}
	t.Logf("SIGTERM: the agent exited 0 after %v with %d of %d tasks done; the second agent did the %d others, each task once",
		drained.Round(time.Millisecond), doneByFirst, n, n-doneByFirst)
	if drained > 5*time.Second {
		t.Errorf("drain took %v: the queued tasks should be handed back, not worked through", drained)
	}
}
