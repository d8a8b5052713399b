package runtime_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/internal/lifecycle/lifecycletest"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go/jetstream"
)

func TestRuntimeKeepsTheLifecycleContract(t *testing.T) {
	lifecycletest.Run(t, func(t *testing.T) lifecycle.Service {
		_, conn := natstest.Provisioned(t, topo)
		rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo})
		if err != nil {
			t.Fatal(err)
		}
		rt.Handle(envelope.TaskRequest, runtime.Echo)
		t.Cleanup(func() { _ = rt.Stop(context.Background()) })
		return rt
	})
}

// When the agent's consumer goes (deleted, or with its stream), the
// runtime ends on its own: Done closes with an Err that wraps
// ErrPullEnded and bus.ErrConsumerGone, Ready says so, Stop still
// returns nil and keeps the Err; Run returns it.
func TestRuntimeEndsWhenItsPullEnds(t *testing.T) {
	cases := []struct {
		name string
		run  bool // through Run rather than Start and Stop
		kill func(ctx context.Context, js jetstream.JetStream) error
	}{
		{"consumer deleted", false, func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, topo.TasksStream(), "echo")
		}},
		{"tasks stream deleted", false, func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, topo.TasksStream())
		}},
		{"consumer deleted under Run", true, func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, topo.TasksStream(), "echo")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, conn := natstest.Provisioned(t, topo)
			var rt *runtime.Runtime
			ran := make(chan error, 1)
			if tc.run {
				var err error
				if rt, err = runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo}); err != nil {
					t.Fatal(err)
				}
				rt.Handle(envelope.TaskRequest, runtime.Echo)
				go func() { ran <- rt.Run(context.Background()) }()
				testkit.WaitFor(t, "the runtime to be ready", func() bool { return rt.Ready(testkit.Context(t)) == nil })
			} else {
				rt = agenttest.Start(t, conn, runtime.Config{}, runtime.Echo)
			}
			if err := tc.kill(testkit.Context(t), conn.JetStream()); err != nil {
				t.Fatal(err)
			}
			select {
			case <-rt.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Done still open 10s after the consumer went")
			}
			err := rt.Err()
			if !errors.Is(err, runtime.ErrPullEnded) || !errors.Is(err, bus.ErrConsumerGone) {
				t.Fatalf("Err = %v, want ErrPullEnded and bus.ErrConsumerGone", err)
			}
			if rerr := rt.Ready(testkit.Context(t)); !tc.run && !errors.Is(rerr, runtime.ErrPullEnded) {
				t.Errorf("Ready = %v, want ErrPullEnded", rerr) // (Run stops it at once)
			}
			if tc.run {
				select {
				case rerr := <-ran:
					if !errors.Is(rerr, runtime.ErrPullEnded) {
						t.Errorf("Run = %v, want ErrPullEnded", rerr)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Run did not return 10s after the pull ended")
				}
			}
			if serr := rt.Stop(testkit.Context(t)); serr != nil {
				t.Errorf("Stop after the pull ended = %v", serr)
			}
			if rt.Err() != err {
				t.Errorf("Err after Stop = %v, want %v", rt.Err(), err)
			}
		})
	}
}
