package handlers

import (
	"context"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/runtime"
	"go.opentelemetry.io/otel/propagation"
)

// traceParent returns the W3C traceparent to hand to the program or the
// service: the handler span's, when the runtime traces (so their spans
// become its children), else the task's own, else "".
func traceParent(ctx context.Context, t *runtime.Task) string {
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	if tp := carrier.Get("traceparent"); tp != "" {
		return tp
	}
	return t.Header.Get(bus.HeaderTraceParent)
}
