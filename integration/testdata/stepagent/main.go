// Command stepagent is a test agent running 10-step tasks with
// checkpoints. Each step appends "<task> <step>" to the --effects file
// (the side effect the test counts). With --pause-after N it stops after
// step N of every task, waiting to be killed.
package main

import (
	"context"
	"flag"
	"fmt"
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
	effects := flag.String("effects", "", "file the steps append to")
	steps := flag.Int("steps", 10, "steps per task")
	pauseAfter := flag.Int("pause-after", 0, "stop after this step and wait to be killed (0: never)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *url, *effects, *steps, *pauseAfter); err != nil {
		fmt.Fprintln(os.Stderr, "stepagent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, url, effects string, steps, pauseAfter int) error {
	f, err := os.OpenFile(effects, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	conn, err := bus.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, err := runtime.New(conn, runtime.Config{Agent: "stepper", Consumer: bus.ConsumerConfig{AckWait: time.Second}})
	if err != nil {
		return err
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, t *runtime.Task) (any, error) {
		for i := 1; i <= steps; i++ {
			err := t.Step(ctx, i, func(context.Context) (any, error) {
				_, err := fmt.Fprintf(f, "%s %d\n", t.TaskID(), i) // one write(2): atomic with O_APPEND
				return i, err
			})
			if err != nil {
				return nil, err
			}
			if i == pauseAfter {
				<-ctx.Done() // killed here
				return nil, ctx.Err()
			}
		}
		return steps, nil
	})
	return rt.Run(ctx)
}
