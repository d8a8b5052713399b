package bus_test

import (
	"context"
	"fmt"
	"os"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
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

// Publish messages that each bound their own wait, and learn each one's
// outcome: here the second gives up before it is sent, and the others are
// stored.
func ExamplePublisher_PublishEach() {
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

	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	msgs := make([]*nats.Msg, 3)
	for i := range msgs {
		env, _ := envelope.New("me", "echo", envelope.TaskRequest, map[string]int{"n": i})
		msgs[i], _ = bus.EnvelopeMsg(subject, env)
	}
	givenUp, cancel := context.WithCancel(ctx)
	cancel()
	own := []context.Context{ctx, givenUp, ctx}
	acks, errs := bus.NewPublisher(conn.JetStream()).PublishEach(ctx, msgs, func(i int) context.Context { return own[i] })
	for i := range msgs {
		fmt.Println(i, acks[i].Sequence, errs[i])
	}
	// Output:
	// 0 1 <nil>
	// 1 0 context canceled
	// 2 2 <nil>
}
