// Command fallback shows the fallback pattern, the seed tutorial's
// pattern 3: resilience.Fallback to a cached value around any call, and
// the client falling back to a backup agent when the primary does not
// answer (the multi-agent orchestration of the tutorial).
//
//	go run ./examples/fallback [--skip-helper] [--skip-backup-agent]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/examples/internal/sandbox"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

func main() {
	skipHelper := flag.Bool("skip-helper", false, "skip resilience.Fallback with a cached value")
	skipBackup := flag.Bool("skip-backup-agent", false, "skip the client falling back to a backup agent")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, !*skipHelper, !*skipBackup); err != nil {
		fmt.Fprintln(os.Stderr, "fallback:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, helper, backup bool) error {
	if helper {
		fmt.Fprintln(w, "== resilience.Fallback ==")
		primary := func(context.Context) (map[string]string, error) {
			return nil, errors.New("primary service down")
		}
		cached := func(context.Context) (map[string]string, error) {
			return map[string]string{"status": "fallback", "message": "using cached/default result"}, nil
		}
		v, err := resilience.Fallback(ctx, primary, cached)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "result: %v\n", v)
	}
	if backup {
		return backupAgent(ctx, w)
	}
	return nil
}

// backupAgent: the primary worker is down (no process serves it); the
// client's attempt times out and the envelope goes to the backup worker.
func backupAgent(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== falling back to a backup agent ==")
	conn, stop, err := sandbox.Start(ctx)
	if err != nil {
		return err
	}
	defer stop()
	backup, err := runtime.New(conn, runtime.Config{Agent: "worker-backup"})
	if err != nil {
		return err
	}
	backup.Handle(envelope.TaskRequest, func(_ context.Context, task *runtime.Task) (any, error) {
		var job string
		if err := task.Decode(&job); err != nil {
			return nil, resilience.Permanent(err)
		}
		return "done by backup: " + job, nil
	})
	if err := backup.Start(ctx); err != nil {
		return err
	}
	defer backup.Stop(ctx)

	client, err := runtime.NewClient(conn, runtime.ClientConfig{Retry: &runtime.RetryConfig{
		MaxRetries: 1, Backoff: resilience.Backoff{Base: 50 * time.Millisecond}, AttemptTimeout: 200 * time.Millisecond,
	}})
	if err != nil {
		return err
	}
	defer client.Close()
	req, err := envelope.New(client.Name(), "worker-primary", envelope.TaskRequest, "resize images")
	if err != nil {
		return err
	}
	rep, err := client.Send(ctx, req, runtime.WithFallback("worker-backup"))
	if err != nil {
		return err
	}
	var answer string
	if err := rep.DecodePayload(&answer); err != nil {
		return err
	}
	fmt.Fprintf(w, "reply from %s: %q (%d attempts in all)\n", rep.Sender, answer, client.Stats().Attempts)
	return nil
}
