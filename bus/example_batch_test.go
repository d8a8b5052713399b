package bus_test

import (
	"context"
	"fmt"
	"os"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
)

// Publish many envelopes at once: each is encoded just before it is sent,
// at most 2048 wait for their acknowledgement, and the acks come back in
// order. Sending the same envelopes again stores nothing twice.
func ExamplePublisher_PublishEnvelopes() {
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
	topo := bus.Topology{}
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		fmt.Println(err)
		return
	}

	envs := make([]*envelope.Envelope, 100)
	for i := range envs {
		envs[i], _ = envelope.New("me", "echo", envelope.TaskRequest, map[string]int{"n": i})
	}
	pub := bus.NewPublisher(conn.JetStream())
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	acks, err := pub.PublishEnvelopes(ctx, subject, envs)
	if err != nil {
		fmt.Println(err)
		return
	}
	again, _ := pub.PublishEnvelopes(ctx, subject, envs)
	fmt.Println("first at", acks[0].Sequence, "last at", acks[99].Sequence, "re-sent last is a duplicate:", again[99].Duplicate)
	// Output:
	// first at 1 last at 100 re-sent last is a duplicate: true
}
