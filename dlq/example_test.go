package dlq_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
)

// Dead-letter a task, find it, replay it once: a second replay skips it.
func ExampleStore() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "jetagent-example-")
	defer os.RemoveAll(dir)
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown(ctx)
	conn, _ := srv.Connect(ctx)
	defer conn.Close()
	topo := bus.Topology{}
	_ = bus.Provision(ctx, conn.JetStream(), topo)

	env, _ := envelope.New("shop", "orders", envelope.TaskRequest, "sku=7 qty=-1")
	msg, _ := bus.EnvelopeMsg(topo.TaskSubject("orders", envelope.TaskRequest), env)
	store := dlq.NewStore(conn.JetStream(), topo)
	now := time.Now()
	if _, err := store.Publish(ctx, &dlq.Record{
		Data: msg.Data, Header: msg.Header, Reason: dlq.ReasonPermanent, Error: "invalid quantity",
		Agent: "orders", Subject: msg.Subject, Stream: topo.TasksStream(), Sequence: 1, Deliveries: 1,
		FirstFailure: now, LastFailure: now,
	}); err != nil {
		fmt.Println(err)
		return
	}
	entries, _ := store.List(ctx, dlq.Filter{Agent: "orders", Reason: dlq.ReasonPermanent})
	fmt.Println(len(entries), entries[0].Seq, entries[0].Reason, entries[0].Error)
	res, _ := store.Replay(ctx, entries, dlq.ReplayOptions{})
	fmt.Println("replayed", res.Replayed)
	entries, _ = store.List(ctx, dlq.Filter{})
	res, _ = store.Replay(ctx, entries, dlq.ReplayOptions{})
	fmt.Println("replayed again", res.Replayed, "skipped", res.Skipped)
	// Output:
	// 1 1 permanent invalid quantity
	// replayed 1
	// replayed again 0 skipped 1
}
