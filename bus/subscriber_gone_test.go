package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go/jetstream"
)

// When its consumer is deleted, by itself or with its stream, and
// whether a pull request waits on the server or the window is full, the
// subscriber stops pulling: Done closes, and Err wraps ErrConsumerGone.
// Stop ends it with a nil Err.
func TestSubscriberEndsWhenItsConsumerIsGone(t *testing.T) {
	topo := bus.Topology{Memory: true}
	cases := []struct {
		name   string
		window int  // the subscriber's window; full: one delivery held
		hold   bool // publish one task and hold it: the window is full, nothing waits on the server
		kill   func(ctx context.Context, js jetstream.JetStream) error
		gone   bool
	}{
		{"consumer deleted while a pull waits", 4, false, func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, topo.TasksStream(), "echo")
		}, true},
		{"stream deleted while a pull waits", 4, false, func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteStream(ctx, topo.TasksStream())
		}, true},
		{"consumer deleted with the window full", 1, true, func(ctx context.Context, js jetstream.JetStream) error {
			return js.DeleteConsumer(ctx, topo.TasksStream(), "echo")
		}, true},
		{"stopped", 4, false, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, conn := natstest.Provisioned(t, topo)
			ctx := testkit.Context(t)
			sub, err := bus.NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), bus.ConsumerConfig{
				Durable: "echo", FilterSubjects: []string{topo.AgentTasks("echo")}, Prefetch: tc.window, Window: tc.window, MaxAckPending: 16,
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ch := collect(t, sub)
			if tc.hold {
				env, err := envelope.New("tester", "echo", envelope.TaskRequest, 1)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(ctx, topo.TaskSubject("echo", envelope.TaskRequest), env); err != nil {
					t.Fatal(err)
				}
				next(t, ch) // held, never settled
			}
			if tc.kill == nil {
				if err := sub.Stop(ctx); err != nil {
					t.Fatal(err)
				}
			} else if err := tc.kill(ctx, conn.JetStream()); err != nil {
				t.Fatal(err)
			}
			select {
			case <-sub.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("Done still open 10s after the kill")
			}
			err = sub.Err()
			if tc.gone != errors.Is(err, bus.ErrConsumerGone) || (!tc.gone && err != nil) {
				t.Errorf("Err = %v, want ErrConsumerGone: %v", err, tc.gone)
			}
			if err := sub.Stop(ctx); err != nil {
				t.Errorf("Stop after the end = %v", err)
			}
		})
	}
}

func TestIsConsumerGone(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{jetstream.ErrConsumerNotFound, true},
		{fmt.Errorf("info: %w", jetstream.ErrStreamNotFound), true},
		{jetstream.ErrNoHeartbeat, false},
		{context.DeadlineExceeded, false},
	} {
		if got := bus.IsConsumerGone(c.err); got != c.want {
			t.Errorf("IsConsumerGone(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
