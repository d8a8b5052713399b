package runtime_test

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
)

// An agent that upper-cases text, and a client that sends it a task, on an
// embedded in-process server.
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
	if err := bus.Provision(ctx, conn.JetStream(), bus.Topology{}); err != nil {
		fmt.Println(err)
		return
	}

	rt, err := runtime.New(conn, runtime.Config{Agent: "upper"})
	if err != nil {
		fmt.Println(err)
		return
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, task *runtime.Task) (any, error) {
		var text string
		if err := task.Decode(&text); err != nil {
			return nil, err
		}
		return strings.ToUpper(text), nil
	})
	if err := rt.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Stop(ctx)

	client, err := runtime.NewClient(conn, runtime.ClientConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	req, _ := envelope.New(client.Name(), "upper", envelope.TaskRequest, "hello, agent")
	reply, err := client.Send(ctx, req)
	if err != nil {
		fmt.Println(err)
		return
	}
	var text string
	_ = reply.DecodePayload(&text)
	fmt.Println(reply.PayloadType, text, reply.CorrelationID == req.ID)
	// Output: task.response HELLO, AGENT true
}
