package bus_test

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
)

// Start an embedded server, provision the topology, publish a task and
// consume it from the agent's durable consumer.
func Example() {
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

	topo := bus.Topology{} // prefix "jetagent"
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		fmt.Println(err)
		return
	}
	env, _ := envelope.New("me", "echo", envelope.TaskRequest, "hello")
	pub := bus.NewPublisher(conn.JetStream())
	ack, err := pub.PublishEnvelope(ctx, topo.TaskSubject("echo", envelope.TaskRequest), env)
	if err != nil {
		fmt.Println(err)
		return
	}
	again, _ := pub.PublishEnvelope(ctx, topo.TaskSubject("echo", envelope.TaskRequest), env)
	fmt.Println("stored at", ack.Sequence, "re-send is a duplicate:", again.Duplicate)

	sub, err := bus.NewSubscriber(ctx, conn.JetStream(), topo.TasksStream(), bus.ConsumerConfig{
		Durable:        "echo",
		FilterSubjects: []string{topo.AgentTasks("echo")},
	}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	got := make(chan *bus.Delivery, 1)
	if err := sub.Start(func(d *bus.Delivery) { got <- d }); err != nil {
		fmt.Println(err)
		return
	}
	d := <-got
	fmt.Println(d.Subject, "delivery", d.NumDelivered, "seq", d.StreamSeq)
	_ = d.AckSync(ctx)
	_ = sub.Stop(ctx)
	// Output:
	// stored at 1 re-send is a duplicate: true
	// jetagent.tasks.echo.task.request delivery 1 seq 1
}

// A second embedded server on a data directory in use is refused, with
// the owner's URL to join instead.
func ExampleDataDirLockedError() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "jetagent-example-")
	defer os.RemoveAll(dir)
	owner, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer owner.Shutdown(ctx)

	_, err = bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	var locked *bus.DataDirLockedError
	if errors.As(err, &locked) {
		fmt.Println(errors.Is(err, bus.ErrDataDirLocked), locked.Owner.URL == owner.ClientURL())
	}
	// Output: true true
}
