package dlq_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/internal/lifecycle/lifecycletest"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go/jetstream"
)

func newSweeper(t *testing.T, topo bus.Topology) (*dlq.Sweeper, *bus.Conn) {
	t.Helper()
	_, conn := natstest.Provisioned(t, topo)
	sw, err := dlq.NewSweeper(testkit.Context(t), conn.JetStream(), topo, "echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sw.Stop(context.Background()) })
	return sw, conn
}

func TestSweeperKeepsTheLifecycleContract(t *testing.T) {
	lifecycletest.Run(t, func(t *testing.T) lifecycle.Service {
		sw, _ := newSweeper(t, bus.Topology{Memory: true})
		return sw
	})
}

// When its advisories consumer goes (deleted, or with its stream), the
// sweeper ends on its own: Done closes, Err wraps ErrSweeperEnded and
// the server's word; Stop still returns nil and keeps the Err.
func TestSweeperEndsWhenItsConsumerIsGone(t *testing.T) {
	topo := bus.Topology{Memory: true}
	cases := []struct {
		name string
		kill func(ctx context.Context, js jetstream.JetStream) error
	}{
		{"consumer deleted", func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, topo.AdvisoriesStream(), "echo_sweeper")
		}},
		{"advisories stream deleted", func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, topo.AdvisoriesStream())
		}},
	}
	for _, tc := range cases {
		for _, before := range []bool{false, true} {
			name := tc.name
			if before {
				name += " before the first pull" // the pull request finds no consumer: no status, no heartbeat
			}
			t.Run(name, func(t *testing.T) {
				sweeperEnds(t, topo, tc.kill, before)
			})
		}
	}
}

func sweeperEnds(t *testing.T, topo bus.Topology, kill func(ctx context.Context, js jetstream.JetStream) error, before bool) {
	t.Helper()
	sw, conn := newSweeper(t, topo)
	if before {
		if err := kill(testkit.Context(t), conn.JetStream()); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	if !before {
		if err := kill(testkit.Context(t), conn.JetStream()); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-sw.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done still open 10s after the consumer went")
	}
	err := sw.Err()
	if !errors.Is(err, dlq.ErrSweeperEnded) || !errors.Is(err, jetstream.ErrConsumerDeleted) {
		t.Fatalf("Err = %v, want ErrSweeperEnded and jetstream.ErrConsumerDeleted", err)
	}
	if serr := sw.Stop(testkit.Context(t)); serr != nil {
		t.Errorf("Stop after the end = %v", serr)
	}
	if sw.Err() != err {
		t.Errorf("Err after Stop = %v, want %v", sw.Err(), err)
	}
}
