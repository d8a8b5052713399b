package watermillmw_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime/watermillmw"
	"github.com/nats-io/nats.go/jetstream"
)

// A watermill Router on the jetagent bus with the middleware: a transient
// failure is redelivered after the backoff delay and then succeeds; a
// permanent one is dead-lettered with its provenance.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "watermillmw-example-")
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
	js := conn.JetStream()

	// The jetagent topology holds the dead-letter stream; the watermill
	// topics live in a stream of their own.
	topo := bus.Topology{Memory: true}
	if err := bus.Provision(ctx, js, topo); err != nil {
		fmt.Println(err)
		return
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		fmt.Println(err)
		return
	}

	pub := bus.NewPublisher(js) // for the dead letters, and the orders below
	mw, err := watermillmw.New(watermillmw.Config{
		Agent:       "billing",
		Publisher:   pub,
		Topology:    topo,
		MaxAttempts: 3, // below the consumer's MaxDeliver
		Backoff:     resilience.Backoff{Base: 20 * time.Millisecond},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	sub, err := watermillbus.NewSubscriber(conn, watermillbus.Config{
		Stream:        "ORDERS",
		ConsumerGroup: "billing",
		Consumer:      bus.ConsumerConfig{MaxDeliver: 5, Prefetch: 1},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NopLogger{})
	if err != nil {
		fmt.Println(err)
		return
	}
	router.AddMiddleware(mw.Middleware) // first: the outermost
	handled := make(chan string, 1)
	router.AddConsumerHandler("billing", "orders.>", sub, func(msg *message.Message) error {
		delivery := msg.Metadata.Get(watermillbus.MetadataNumDelivered)
		if string(msg.Payload) != "tea" {
			return resilience.Permanent(fmt.Errorf("unknown product %q", msg.Payload))
		}
		if delivery == "1" {
			return errors.New("payment service unavailable") // transient
		}
		handled <- "tea paid on delivery " + delivery
		return nil
	})
	stopped := make(chan error, 1)
	go func() { stopped <- router.Run(ctx) }()
	defer func() {
		_ = router.Close() // closes the subscriber too
		<-stopped
	}()
	<-router.Running()

	if err := watermillbus.NewPublisher(pub).Publish("orders.created",
		message.NewMessage("order-1", []byte("tea")),
		message.NewMessage("order-2", []byte("caviar")),
	); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-handled)

	// Read the dead letter back.
	dead, err := js.OrderedConsumer(ctx, topo.DLQStream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := dead.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	rec, err := dlq.Parse(m.Data(), m.Headers())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("dead letter on", m.Subject())
	fmt.Printf("%s %s from %s after %d delivery: %s\n", rec.Reason, rec.Header.Get(watermillbus.HeaderUUID), rec.Subject, rec.Deliveries, rec.Error)
	// Output:
	// tea paid on delivery 2
	// dead letter on jetagent.dlq.billing.orders.created
	// permanent order-2 from orders.created after 1 delivery: permanent failure: unknown product "caviar"
}
