package metrics_test

import (
	"context"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/ophttp"
	"github.com/jetagent/jetagent/metrics"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/tracing"
)

// wireObservability is the wiring docs/observability.md shows (a test in
// docs/ checks the two stay the same); agent run does the same.
func wireObservability(ctx, shutdownCtx context.Context, conn *bus.Conn) error {
	tr, err := tracing.Setup(ctx, tracing.Options{}) // OTEL_* environment; off without an endpoint
	if err != nil {
		return err
	}
	defer tr.Shutdown(shutdownCtx) // after the runtimes stopped: flushes spans

	reg := metrics.NewRegistry() // a registry of its own, with Go and process metrics
	m, err := metrics.New(reg, metrics.Options{})
	if err != nil {
		return err
	}
	obs := m.Agent("echo")
	rt, err := runtime.New(conn, runtime.Config{
		Agent:          "echo",
		Observer:       obs,           // nil: no metrics, one nil check per event
		TracerProvider: tr.Provider(), // nil when tracing is off: no spans
	})
	if err != nil {
		return err
	}
	if err := obs.Watch(rt); err != nil { // scrape-time gauges: running, queued, held, backlog, DLQ depth
		return err
	}

	ops, err := ophttp.New(ophttp.Config{
		Addr:     "127.0.0.1:9464",
		Gatherer: reg,
		Checks:   []ophttp.Check{ophttp.Connection(conn), ophttp.Runtime(rt)},
	})
	if err != nil {
		return err
	}
	if err := ops.Start(ctx); err != nil { // listens before returning
		return err
	}
	defer ops.Stop(shutdownCtx) // after rt.Stop: /readyz says "stopped" while the agent drains

	client, err := runtime.NewClient(conn, runtime.ClientConfig{TracerProvider: tr.Provider()})
	if err != nil {
		return err
	}
	defer client.Close()
	return rt.Run(ctx)
}

var _ = wireObservability
