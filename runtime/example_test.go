package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
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

// A long task checkpoints each step: a redelivery (after a crash, on any
// replica) skips the steps already done.
func ExampleTask_Step() {
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
	_ = bus.Provision(ctx, conn.JetStream(), bus.Topology{})

	rt, _ := runtime.New(conn, runtime.Config{Agent: "report", Backoff: resilience.Backoff{Base: time.Millisecond}})
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, t *runtime.Task) (any, error) {
		for i := 1; i <= 3; i++ {
			if err := t.Step(ctx, i, func(context.Context) (any, error) {
				fmt.Printf("attempt %d runs step %d\n", t.Attempt, i)
				return nil, nil
			}); err != nil {
				return nil, err
			}
			if i == 2 && t.Attempt == 1 {
				return nil, errors.New("worker lost") // redelivered: steps 1-2 are done
			}
		}
		return "done", nil
	})
	_ = rt.Start(ctx)
	defer rt.Stop(ctx)
	client, _ := runtime.NewClient(conn, runtime.ClientConfig{})
	defer client.Close()
	req, _ := envelope.New(client.Name(), "report", envelope.TaskRequest, nil)
	if _, err := client.Send(ctx, req); err != nil {
		fmt.Println(err)
	}
	// Output:
	// attempt 1 runs step 1
	// attempt 1 runs step 2
	// attempt 2 runs step 3
}

// A runtime whose consumer is deleted under it ends on its own: Done is
// closed and Err says why, for the process to end (and its supervisor to
// restart it) rather than stay up taking nothing.
func ExampleRuntime_Done() {
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
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo"})
	if err != nil {
		fmt.Println(err)
		return
	}
	rt.Handle(envelope.TaskRequest, runtime.Echo)
	if err := rt.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer rt.Stop(ctx)

	if err := conn.JetStream().DeleteConsumer(ctx, topo.TasksStream(), "echo"); err != nil {
		fmt.Println(err)
		return
	}
	select {
	case <-rt.Done():
	case <-time.After(10 * time.Second):
		fmt.Println("still running")
		return
	}
	fmt.Println("pull ended:", errors.Is(rt.Err(), runtime.ErrPullEnded))
	fmt.Println("consumer gone:", errors.Is(rt.Err(), bus.ErrConsumerGone))
	fmt.Println("stop:", rt.Stop(ctx))
	// Output:
	// pull ended: true
	// consumer gone: true
	// stop: <nil>
}
