package watermillbus_test

import (
	"context"
	"fmt"
	"os"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/nats-io/nats.go/jetstream"
)

// Watermill messages published with a Publisher and consumed by a
// consumer group, on an in-process server.
func ExampleSubscriber() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "jetagent-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown(ctx)
	conn, err := srv.Connect(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()
	// Topics are subjects: the stream must capture them.
	if _, err := conn.JetStream().CreateStream(ctx, jetstream.StreamConfig{
		Name: "ORDERS", Subjects: []string{"orders.>"},
	}); err != nil {
		fmt.Println(err)
		return
	}

	pub := watermillbus.NewPublisher(bus.NewPublisher(conn.JetStream()))
	msg := message.NewMessage("order-1", []byte(`{"sku":"tea"}`))
	msg.Metadata.Set("tenant", "acme")
	if err := pub.Publish("orders.created", msg); err != nil {
		fmt.Println(err)
		return
	}

	sub, err := watermillbus.NewSubscriber(conn, watermillbus.Config{Stream: "ORDERS", ConsumerGroup: "billing"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sub.Close()
	msgs, err := sub.Subscribe(ctx, "orders.>")
	if err != nil {
		fmt.Println(err)
		return
	}
	got := <-msgs
	fmt.Println(got.UUID, string(got.Payload), got.Metadata.Get("tenant"))
	fmt.Println("subject:", got.Metadata.Get(watermillbus.MetadataSubject), "delivery:", got.Metadata.Get(watermillbus.MetadataNumDelivered))
	got.Ack()
	// Output:
	// order-1 {"sku":"tea"} acme
	// subject: orders.created delivery: 1
}
