// Command poisonagent is a test agent: it echoes every task, except one
// payload that makes it kill its own process, every time it sees it.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
)

func main() {
	url := flag.String("nats", "", "server URL")
	poison := flag.String("poison", "poison", "the payload that crashes the process")
	ackWait := flag.Duration("ack-wait", time.Second, "AckWait")
	maxDeliver := flag.Int("max-deliver", 3, "MaxDeliver")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	conn, err := bus.Connect(ctx, *url)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rt, err := runtime.New(conn, runtime.Config{
		Agent:    "worker",
		Consumer: bus.ConsumerConfig{AckWait: *ackWait, MaxDeliver: *maxDeliver},
		Logger:   log,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rt.Handle(envelope.TaskRequest, func(_ context.Context, task *runtime.Task) (any, error) {
		var s string
		if err := task.Decode(&s); err != nil {
			return nil, err
		}
		if s == *poison {
			log.Error("poison: crashing", "attempt", task.Attempt)
			os.Exit(3)
		}
		return s, nil
	})
	if err := rt.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
