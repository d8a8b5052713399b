// Command breaker shows the circuit breaker, the seed tutorial's pattern
// 2: a standalone breaker around any call (closed, open, half-open with
// one probe), and the client's per-target breaker failing fast with
// ErrCircuitOpen while an agent does not answer.
//
//	go run ./examples/breaker [--skip-standalone] [--skip-client]
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
	skipStandalone := flag.Bool("skip-standalone", false, "skip the standalone breaker")
	skipClient := flag.Bool("skip-client", false, "skip the client's per-target breaker")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, !*skipStandalone, !*skipClient); err != nil {
		fmt.Fprintln(os.Stderr, "breaker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, standalone, client bool) error {
	if standalone {
		if err := standaloneBreaker(w); err != nil {
			return err
		}
	}
	if client {
		return clientBreaker(ctx, w)
	}
	return nil
}

func standaloneBreaker(w io.Writer) error {
	fmt.Fprintln(w, "== a standalone breaker ==")
	const openFor = 200 * time.Millisecond
	b := resilience.NewBreaker("payments-api", resilience.BreakerSettings{
		Threshold:   3,
		OpenTimeout: openFor,
		OnStateChange: func(name string, from, to resilience.State) {
			fmt.Fprintf(w, "breaker %s: %v -> %v\n", name, from, to)
		},
	})
	healthy := false
	call := func() error {
		if !healthy {
			return errors.New("503 service unavailable")
		}
		return nil
	}
	for i := 1; i <= 4; i++ {
		err := b.Execute(call)
		fmt.Fprintf(w, "call %d: %v\n", i, err)
	}
	healthy = true
	time.Sleep(openFor) // the open timeout passes
	fmt.Fprintf(w, "after %v: state %v\n", openFor, b.State())
	fmt.Fprintf(w, "probe: %v, state %v\n", b.Execute(call), b.State())
	return nil
}

// clientBreaker: nobody serves agent "billing"; after 2 timed-out sends
// the client's breaker for that target opens and the next send fails at
// once, with no attempt made.
func clientBreaker(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== the client's breaker for one target ==")
	conn, stop, err := sandbox.Start(ctx)
	if err != nil {
		return err
	}
	defer stop()
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Retry: &runtime.RetryConfig{
		AttemptTimeout: 100 * time.Millisecond,
		Breaker:        &resilience.BreakerSettings{Threshold: 2, OpenTimeout: time.Minute},
	}})
	if err != nil {
		return err
	}
	defer client.Close()
	for i := 1; i <= 3; i++ {
		req, err := envelope.New(client.Name(), "billing", envelope.TaskRequest, "invoice 17")
		if err != nil {
			return err
		}
		start := time.Now()
		_, err = client.Send(ctx, req)
		kind := resilience.Classify(err)
		fast := ""
		if kind == resilience.KindCircuitOpen && time.Since(start) < 50*time.Millisecond {
			fast = ", at once"
		}
		fmt.Fprintf(w, "send %d: %v%s (attempts so far: %d)\n", i, kind, fast, client.Stats().Attempts)
	}
	return nil
}
