package beacon_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/runtime/beacon"
	"github.com/nats-io/nats.go"
)

// An agent reports its breakers; a console reads the reports.
func ExampleBeacon() {
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
	topo := bus.Topology{Memory: true}
	_ = bus.Provision(ctx, conn.JetStream(), topo)

	// The reader's side: every agent's reports.
	reports := make(chan *beacon.Report, 64)
	sub, _ := conn.NATS().Subscribe(beacon.Subjects(topo), func(m *nats.Msg) {
		if r, err := beacon.Decode(m.Data); err == nil {
			reports <- r
		}
	})
	defer sub.Unsubscribe()

	// The agent's side: New, Observer, runtime, Start.
	b := beacon.New(conn, topo, "echo", beacon.Options{Interval: 50 * time.Millisecond})
	rt, _ := runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo, Observer: b.Observer(nil)})
	rt.Handle(envelope.TaskRequest, runtime.Echo)
	_ = rt.Start(ctx)
	b.Start(rt)
	env, _ := envelope.New("example", "echo", envelope.TaskRequest, "hi")
	_, _ = bus.NewPublisher(conn.JetStream()).PublishEnvelope(ctx, topo.TaskSubject("echo", envelope.TaskRequest), env)

	for r := range reports {
		if len(r.Breakers) > 0 { // the subject's breaker exists once a task came
			fmt.Println(r.Agent, r.Breakers[0].Subject, r.Breakers[0].State)
			break
		}
	}
	b.Stop()
	for r := range reports {
		if r.Stopping {
			fmt.Println("last report:", r.Agent, "stopping")
			break
		}
	}
	_ = rt.Stop(ctx)
	// Output:
	// echo jetagent.tasks.echo.task.request closed
	// last report: echo stopping
}
