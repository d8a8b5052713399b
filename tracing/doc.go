// Package tracing sets up OpenTelemetry tracing for jetagent processes.
//
// Setup reads the standard OpenTelemetry environment
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, ...) or
// explicit Options and, when an exporter is configured, returns a tracer
// provider that exports spans over OTLP/HTTP. Pass its Provider to
// runtime.Config.TracerProvider (a span per handler call) and to
// runtime.ClientConfig.TracerProvider (a span per Send, whose traceparent
// the agent's span continues). With no exporter configured Provider is
// nil, and the runtime pays one nil check per delivery.
//
// Order: Setup before building runtimes and clients; Shutdown after
// stopping them (it flushes the spans still buffered).
package tracing
