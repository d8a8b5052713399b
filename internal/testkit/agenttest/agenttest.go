// Package agenttest starts runtimes for tests: agent "echo" on an
// in-memory topology, failures redelivered after a few milliseconds,
// stopped when the test ends. It is imported only by _test.go files.
package agenttest

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// Topology is the topology Start gives a runtime whose Config names none:
// in-memory streams, default prefix. natstest.Provisioned(t, Topology)
// provisions it.
var Topology = bus.Topology{Memory: true}

// FastRetry redelivers failures after 5 to 20 ms.
var FastRetry = resilience.Backoff{Base: 5 * time.Millisecond, Max: 20 * time.Millisecond}

// stopTimeout bounds the Stop at the test's end.
const stopTimeout = 10 * time.Second

// Start starts a runtime on conn with h on task.request: agent "echo"
// unless cfg.Agent names one, Topology unless cfg sets one, FastRetry
// unless cfg.Backoff is set. Each of before runs on the runtime before it
// starts (to add handlers, or watch it). The runtime is stopped, within
// 10 s, when t ends; a failed Stop fails t.
func Start(t testing.TB, conn *bus.Conn, cfg runtime.Config, h runtime.Handler, before ...func(*runtime.Runtime) error) *runtime.Runtime {
	t.Helper()
	if cfg.Agent == "" {
		cfg.Agent = "echo"
	}
	if cfg.Topology == (bus.Topology{}) {
		cfg.Topology = Topology
	}
	if cfg.Backoff == (resilience.Backoff{}) {
		cfg.Backoff = FastRetry
	}
	rt, err := runtime.New(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, h)
	for _, f := range before {
		if err := f(rt); err != nil {
			t.Fatal(err)
		}
	}
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if err := rt.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return rt
}
