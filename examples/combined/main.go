// Command combined shows the seed tutorial's combined patterns: retry and
// circuit breaker through the client, retry inside a fallback, and a
// circuit breaker with a fallback.
//
//	go run ./examples/combined [--skip-retry-breaker] [--skip-retry-fallback] [--skip-breaker-fallback]
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
	skipRB := flag.Bool("skip-retry-breaker", false, "skip retry + circuit breaker through the client")
	skipRF := flag.Bool("skip-retry-fallback", false, "skip retry inside a fallback")
	skipBF := flag.Bool("skip-breaker-fallback", false, "skip circuit breaker + fallback")
	flag.Parse()
	if err := run(context.Background(), os.Stdout, !*skipRB, !*skipRF, !*skipBF); err != nil {
		fmt.Fprintln(os.Stderr, "combined:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, retryBreaker, retryFallback, breakerFallback bool) error {
	if retryBreaker || breakerFallback {
		conn, stop, err := sandbox.Start(ctx)
		if err != nil {
			return err
		}
		defer stop()
		// One client, both policies: 3 retries, a breaker that opens after 2
		// consecutive failures. Nobody serves agent "inventory".
		client, err := runtime.NewClient(conn, runtime.ClientConfig{Retry: &runtime.RetryConfig{
			MaxRetries:     3,
			Backoff:        resilience.Backoff{Base: 20 * time.Millisecond},
			AttemptTimeout: 150 * time.Millisecond,
			Breaker:        &resilience.BreakerSettings{Threshold: 2, OpenTimeout: time.Minute},
		}})
		if err != nil {
			return err
		}
		defer client.Close()
		send := func() error {
			req, err := envelope.New(client.Name(), "inventory", envelope.TaskRequest, "sku-17")
			if err != nil {
				return err
			}
			_, err = client.Send(ctx, req)
			return err
		}
		if retryBreaker {
			fmt.Fprintln(w, "== retry + circuit breaker (client) ==")
			err := send()
			fmt.Fprintf(w, "send: %v after %d attempts: 2 timeouts opened the breaker, the 3rd retry was refused\n",
				resilience.Classify(err), client.Stats().Attempts)
		}
		if breakerFallback {
			fmt.Fprintln(w, "== circuit breaker + fallback ==")
			if !retryBreaker {
				_ = send() // open the breaker first
			}
			stock, err := resilience.Fallback(ctx,
				func(context.Context) (string, error) {
					if err := send(); err != nil {
						return "", err
					}
					return "live stock", nil
				},
				func(context.Context) (string, error) { return "cached stock (2 minutes old)", nil })
			fmt.Fprintf(w, "answer: %s (%v)\n", stock, err)
		}
	}
	if retryFallback {
		fmt.Fprintln(w, "== retry inside a fallback ==")
		calls := 0
		primary := func(ctx context.Context) (string, error) {
			return resilience.Retry(ctx, func(context.Context) (string, error) {
				calls++
				return "", errors.New("primary agent unreachable")
			}, resilience.RetryPolicy{MaxRetries: 2, Backoff: resilience.Backoff{Base: 10 * time.Millisecond}})
		}
		fallback := func(context.Context) (string, error) { return "default answer", nil }
		v, err := resilience.Fallback(ctx, primary, fallback)
		fmt.Fprintf(w, "answer: %s (%v) after %d primary calls\n", v, err, calls)
	}
	return nil
}
