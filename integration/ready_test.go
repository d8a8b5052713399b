package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// TestWaitForConsumerReturnsOnceTheAgentPulls checks the harness's idea of
// "the agent is ready", which the freeze tests build on: a task published
// the moment waitForConsumer returns reaches the agent even if it is
// frozen at once, so its pull request already waits at the server. The
// runtime creates its consumer a few round trips (sweeper, execution
// index) before it first pulls; a wait for the consumer alone returned in
// that gap, and TestChaosAgentDiesHoldingMessages froze an agent that had
// never asked for a task (CI, 2026-12-04).
func TestWaitForConsumerReturnsOnceTheAgentPulls(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	dir := t.TempDir()
	const starts = 12
	for i := range starts {
		name := fmt.Sprint("ready-", i)
		a := ledgerAgent(t, srv.URL(), filepath.Join(dir, name), "--name", name)
		waitForConsumer(ctx, t, js, topo.TasksStream(), name, a)
		cons, err := js.Consumer(ctx, topo.TasksStream(), name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.NumWaiting == 0 {
			t.Fatalf("start %d of %d: waitForConsumer returned before agent %s had a pull request waiting", i+1, starts, name)
		}
		if err := a.stop(15 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
}
