package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
)

func TestConsumerConfigValidation(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, bus.Topology{Memory: true})
	base := bus.ConsumerConfig{Durable: "echo", FilterSubjects: []string{"jetagent.tasks.echo.>"}}
	cases := map[string]func(*bus.ConsumerConfig){
		"below 1s":             func(c *bus.ConsumerConfig) { c.AckWait = 10 * time.Millisecond },
		"more than MaxDeliver": func(c *bus.ConsumerConfig) { c.MaxDeliver = 2; c.BackOff = []time.Duration{1, 2, 3} },
		"below Prefetch":       func(c *bus.ConsumerConfig) { c.Prefetch = 500; c.MaxAckPending = 100 },
		"filter subject":       func(c *bus.ConsumerConfig) { c.FilterSubjects = nil },
		"invalid name":         func(c *bus.ConsumerConfig) { c.Durable = "a.b" },
		"must be positive":     func(c *bus.ConsumerConfig) { c.BackOff = []time.Duration{time.Second, 0} },
	}
	for want, mutate := range cases {
		cfg := base
		mutate(&cfg)
		_, err := bus.NewSubscriber(testkit.Context(t), conn.JetStream(), "JETAGENT_TASKS", cfg, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v", want, err)
		}
	}
}

// collect starts sub and returns a channel of its deliveries.
func collect(t *testing.T, sub *bus.Subscriber) <-chan *bus.Delivery {
	t.Helper()
	ch := make(chan *bus.Delivery, 100)
	if err := sub.Start(func(d *bus.Delivery) { ch <- d }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Stop(context.Background()) })
	return ch
}

func next(t *testing.T, ch <-chan *bus.Delivery) *bus.Delivery {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return nil
	}
}

func TestSubscriberDeliveryMetadataAndSettlement(t *testing.T) {
	t.Parallel()
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	ctx := testkit.Context(t)
	pub := bus.NewPublisher(conn.JetStream())
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	for i := range 2 {
		if _, err := pub.PublishEnvelope(ctx, subject, newEnvelope(t, i)); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := bus.NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), bus.ConsumerConfig{
		Durable: "echo", FilterSubjects: []string{topo.AgentTasks("echo")}, Prefetch: 10,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := sub.Config(); got.AckWait != bus.DefaultAckWait || got.MaxDeliver != bus.DefaultMaxDeliver || got.MaxAckPending != bus.DefaultMaxAckPending {
		t.Errorf("defaults not applied: %+v", got)
	}
	ch := collect(t, sub)

	first := next(t, ch)
	if first.NumDelivered != 1 || first.StreamSeq != 1 || first.Subject != subject ||
		first.Stream != topo.TasksStream() || first.Consumer != "echo" || first.Published.IsZero() {
		t.Fatalf("first delivery metadata = %+v", first)
	}
	second := next(t, ch)
	if second.StreamSeq != 2 {
		t.Fatalf("second delivery seq = %d", second.StreamSeq)
	}
	// Nak: the same message comes back, delivered twice now.
	if err := first.Nak(); err != nil {
		t.Fatal(err)
	}
	again := next(t, ch)
	if again.StreamSeq != 1 || again.NumDelivered != 2 {
		t.Fatalf("redelivery = seq %d delivered %d, want seq 1 delivered 2", again.StreamSeq, again.NumDelivered)
	}
	// Term is not confirmed; AckSync after it is, and the server handles
	// one connection's acks in order, so once AckSync returns both are done.
	if err := second.Term("test"); err != nil {
		t.Fatal(err)
	}
	if err := again.InProgress(); err != nil {
		t.Fatal(err)
	}
	if err := again.AckSync(ctx); err != nil {
		t.Fatal(err)
	}
	// Both settled: the work queue is empty.
	st, _ := conn.JetStream().Stream(ctx, topo.TasksStream())
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("tasks stream still holds %d messages", info.State.Msgs)
	}
	if s := sub.Stats(); s.Delivered != 3 {
		t.Errorf("stats = %+v, want 3 deliveries", s)
	}
}
