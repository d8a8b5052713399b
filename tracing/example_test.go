package tracing_test

import (
	"context"
	"fmt"

	"github.com/jetagent/jetagent/tracing"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// Setup with an explicit exporter (here in memory; in production leave it
// nil and set OTEL_EXPORTER_OTLP_ENDPOINT), then hand Provider to
// runtime.Config.TracerProvider and runtime.ClientConfig.TracerProvider.
func ExampleSetup() {
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.Setup(ctx, tracing.Options{Exporter: exp, Synchronous: true, ServiceName: "example"})
	if err != nil {
		panic(err)
	}
	defer func() { _ = tr.Shutdown(ctx) }()

	_, span := tr.Provider().Tracer("example").Start(ctx, "work")
	span.End()
	for _, s := range exp.GetSpans() {
		name, _ := s.Resource.Set().Value("service.name")
		fmt.Println(s.Name, "from", name.AsString())
	}
	// Output: work from example
}
