// Command retry shows retry with exponential backoff, the seed tutorial's
// pattern 1, three ways: the client re-sending a task nobody answered yet
// (the seed's ASAPClient retry), an agent whose dependency fails
// transiently (the bus redelivers its task with growing delays until it
// succeeds), and resilience.Retry around any flaky function.
//
//	go run ./examples/retry [--skip-client] [--skip-agent] [--skip-standalone]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/examples/internal/sandbox"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

func main() {
	skipClient := flag.Bool("skip-client", false, "skip the client re-sending a task")
	skipAgent := flag.Bool("skip-agent", false, "skip the agent whose task is redelivered with backoff")
	skipStandalone := flag.Bool("skip-standalone", false, "skip resilience.Retry around a plain function")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, !*skipClient, !*skipAgent, !*skipStandalone); err != nil {
		fmt.Fprintln(os.Stderr, "retry:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, client, agent, standalone bool) error {
	if client {
		if err := clientRetry(ctx, w); err != nil {
			return err
		}
	}
	if agent {
		if err := agentRetry(ctx, w); err != nil {
			return err
		}
	}
	if standalone {
		return standaloneRetry(ctx, w)
	}
	return nil
}

// clientRetry: the agent is not up yet. The client's first attempt gets no
// reply within AttemptTimeout; it re-sends the same envelope after the
// backoff delay (the same id: the server keeps one copy of the task), and
// the second attempt gets the reply once the agent has started.
func clientRetry(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== the client re-sends (RetryConfig) ==")
	conn, stop, err := sandbox.Start(ctx)
	if err != nil {
		return err
	}
	defer stop()
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Retry: &runtime.RetryConfig{
		MaxRetries:     3,
		Backoff:        resilience.Backoff{Base: 100 * time.Millisecond, Max: time.Second},
		AttemptTimeout: 300 * time.Millisecond,
	}})
	if err != nil {
		return err
	}
	defer client.Close()
	req, err := envelope.New(client.Name(), "late", envelope.TaskRequest, "ping")
	if err != nil {
		return err
	}
	type result struct {
		rep *envelope.Envelope
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := client.Send(ctx, req)
		done <- result{rep, err}
	}()
	for client.Stats().Attempts < 2 { // the first attempt timed out: start the agent now
		time.Sleep(10 * time.Millisecond)
	}
	rt, err := runtime.New(conn, runtime.Config{Agent: "late"})
	if err != nil {
		return err
	}
	rt.Handle(envelope.TaskRequest, runtime.Echo)
	if err := rt.Start(ctx); err != nil {
		return err
	}
	res := <-done
	if err := rt.Stop(ctx); err != nil { // settles the task: its counts are final
		return err
	}
	if res.err != nil {
		return res.err
	}
	var answer string
	if err := res.rep.DecodePayload(&answer); err != nil {
		return err
	}
	fmt.Fprintf(w, "reply %q after %d attempts; the agent ran the task %d time (re-sends share its id)\n",
		answer, client.Stats().Attempts, rt.Stats().Succeeded)
	return nil
}

// agentRetry: the handler fails twice with a transient error (the 503
// analog); the runtime hands the task back with NakWithDelay(backoff(n))
// and the server redelivers it; the third attempt succeeds.
func agentRetry(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== an agent retried by the bus ==")
	conn, stop, err := sandbox.Start(ctx)
	if err != nil {
		return err
	}
	defer stop()
	rt, err := runtime.New(conn, runtime.Config{
		Agent:   "flaky",
		Backoff: resilience.Backoff{Base: 100 * time.Millisecond, Max: time.Second, NoJitter: true},
	})
	if err != nil {
		return err
	}
	rt.Handle(envelope.TaskRequest, func(_ context.Context, task *runtime.Task) (any, error) {
		if task.Attempt < 3 {
			fmt.Fprintf(w, "attempt %d: 503 service unavailable (transient)\n", task.Attempt)
			return nil, errors.New("503 service unavailable")
		}
		fmt.Fprintf(w, "attempt %d: ok\n", task.Attempt)
		return "report ready", nil
	})
	if err := rt.Start(ctx); err != nil {
		return err
	}
	defer rt.Stop(ctx)

	client, err := runtime.NewClient(conn, runtime.ClientConfig{})
	if err != nil {
		return err
	}
	defer client.Close()
	req, err := envelope.New(client.Name(), "flaky", envelope.TaskRequest, "build the report")
	if err != nil {
		return err
	}
	rep, err := client.Send(ctx, req)
	if err != nil {
		return err
	}
	var answer string
	if err := rep.DecodePayload(&answer); err != nil {
		return err
	}
	fmt.Fprintf(w, "reply: %q after %d redeliveries\n", answer, rt.Stats().Retried)
	return nil
}

// standaloneRetry: resilience.Retry on any function, with the seed's
// retry_with_backoff parameters (shortened), stopping at once on a
// permanent error.
func standaloneRetry(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== resilience.Retry around a function ==")
	var calls atomic.Int32
	flaky := func(context.Context) (string, error) {
		if calls.Add(1) < 3 {
			return "", errors.New("connection reset by peer")
		}
		return "42 rows", nil
	}
	policy := resilience.RetryPolicy{
		MaxRetries: 3,
		Backoff:    resilience.Backoff{Base: 50 * time.Millisecond, Max: 500 * time.Millisecond},
		OnRetry: func(attempt int, delay time.Duration, err error) {
			fmt.Fprintf(w, "attempt %d failed (%v); retrying\n", attempt, err)
		},
	}
	v, err := resilience.Retry(ctx, flaky, policy)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "result: %s after %d calls\n", v, calls.Load())

	calls.Store(0)
	_, err = resilience.Retry(ctx, func(context.Context) (string, error) {
		calls.Add(1)
		return "", resilience.Permanent(errors.New("table does not exist"))
	}, policy)
	fmt.Fprintf(w, "permanent error: %v after %d call (not retried)\n", err, calls.Load())
	return nil
}
