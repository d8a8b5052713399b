package runtime_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go/jetstream"
)

// fillDLQ replaces the DLQ with one that holds a single filler message
// and refuses any other, and returns a func that lifts the cap.
func fillDLQ(t *testing.T, js jetstream.JetStream) (free func()) {
	t.Helper()
	ctx := testkit.Context(t)
	if err := js.DeleteStream(ctx, topo.DLQStream()); err != nil {
		t.Fatal(err)
	}
	cfg := jetstream.StreamConfig{
		Name: topo.DLQStream(), Subjects: []string{"jetagent.dlq.>"}, Storage: jetstream.MemoryStorage,
		MaxMsgs: 1, Discard: jetstream.DiscardNew,
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "jetagent.dlq.filler.x", []byte("full")); err != nil {
		t.Fatal(err)
	}
	return func() {
		cfg.MaxMsgs = -1
		if _, err := js.UpdateStream(testkit.Context(t), cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// deadLetters waits until the DLQ holds want records besides the filler
// and returns them.
func deadLetters(t *testing.T, conn *bus.Conn, want int) []*dlq.Record {
	t.Helper()
	ctx := testkit.Context(t)
	s, err := conn.JetStream().Stream(ctx, topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the dead letters", func() bool {
		info, err := s.Info(ctx)
		return err == nil && int(info.State.Msgs) >= want+1
	})
	var recs []*dlq.Record
	for seq := uint64(2); len(recs) < want; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := dlq.Parse(m.Data, m.Header)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs
}

// Issue 13 item 7: while the DLQ refused dead letters, a permanent
// failure was handed back and its handler ran again on every delivery,
// up to MaxDeliver, and was then filed as max_deliveries ("crashed or
// hung"). The dead-letter publish is what must be retried, not the
// handler.
func TestAFullDLQDoesNotRunAPermanentFailureAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		maxDeliver int
		// exhaust: the DLQ stays full beyond the deliveries after which
		// the runtime files a task without running it (twice MaxDeliver
		// and two).
		exhaust bool
	}{
		{name: "freed before MaxDeliver", maxDeliver: 50},
		{name: "full past MaxDeliver", maxDeliver: 2, exhaust: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, conn := natstest.Provisioned(t, topo)
			js := conn.JetStream()
			free := fillDLQ(t, js)
			var runs atomic.Int32
			cfg := runtime.Config{}
			cfg.Consumer.MaxDeliver = tc.maxDeliver
			rt := agenttest.Start(t, conn, cfg, func(context.Context, *runtime.Task) (any, error) {
				runs.Add(1)
				return nil, resilience.Permanent(errors.New("bad input"))
			})
			env := request(t, "x")
			if _, err := js.Publish(testkit.Context(t), topo.TaskSubject("echo", envelope.TaskRequest), mustMarshal(t, env)); err != nil {
				t.Fatal(err)
			}
			if tc.exhaust {
				testkit.WaitFor(t, "deliveries beyond the limit", func() bool {
					c, err := js.Consumer(testkit.Context(t), topo.TasksStream(), "echo")
					if err != nil {
						return false
					}
					info, err := c.Info(testkit.Context(t))
					return err == nil && info.Delivered.Consumer >= uint64(2*tc.maxDeliver+4)
				})
			} else {
				testkit.WaitFor(t, "the DLQ refusing twice", func() bool { return rt.Stats().Retried >= 2 })
			}
			free()
			recs := deadLetters(t, conn, 1)
			if recs[0].Reason != dlq.ReasonPermanent {
				t.Errorf("dead-lettered as %s (%s), want %s", recs[0].Reason, recs[0].Error, dlq.ReasonPermanent)
			}
			if n := runs.Load(); n != 1 {
				t.Errorf("the permanent failure's handler ran %d times while the DLQ was full, want 1", n)
			}
		})
	}
}

func mustMarshal(t *testing.T, env *envelope.Envelope) []byte {
	t.Helper()
	data, err := envelope.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
