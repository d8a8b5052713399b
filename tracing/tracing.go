package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// DefaultServiceName is the service.name of a process that sets neither
// Options.ServiceName nor OTEL_SERVICE_NAME.
const DefaultServiceName = "jetagent"

// ErrUnsupported is returned by Setup for an exporter or protocol the
// environment asks for that this package does not provide.
var ErrUnsupported = errors.New("tracing: unsupported")

// Options configure [Setup]. The zero value follows the environment, and
// leaves tracing off when no OTLP endpoint is set there.
type Options struct {
	// Endpoint is the OTLP/HTTP collector URL, such as
	// "http://127.0.0.1:4318" (spans go to its /v1/traces unless the URL
	// has a path; "https" for TLS). Zero: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
	// or OTEL_EXPORTER_OTLP_ENDPOINT; when neither is set (and Exporter is
	// nil), tracing is off.
	Endpoint string

	// ServiceName is the resource's service.name. Zero: OTEL_SERVICE_NAME,
	// or "jetagent".
	ServiceName string

	// Exporter receives the spans instead of an OTLP exporter (for tests:
	// tracetest.NewInMemoryExporter). It turns tracing on.
	Exporter sdktrace.SpanExporter

	// Synchronous exports each span when it ends instead of in batches
	// (for tests; it slows every traced call down).
	Synchronous bool
}

// Tracing is the tracer provider Setup built, or nothing when tracing is
// off. Its methods are safe on a nil *Tracing.
type Tracing struct {
	tp       *sdktrace.TracerProvider
	shutdown sync.Once
	err      error
}

// Setup builds tracing from opts and the environment. It returns a
// Tracing whose Provider is nil when no exporter is configured, or when
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none. It returns an
// error wrapping ErrUnsupported when the environment asks for another
// exporter than otlp or another protocol than http/protobuf, and a
// wrapped error for a bad endpoint URL or exporter.
func Setup(ctx context.Context, opts Options) (*Tracing, error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return &Tracing{}, nil
	}
	exp := opts.Exporter
	if exp == nil {
		switch e := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); e {
		case "", "otlp":
		case "none":
			return &Tracing{}, nil
		default:
			return nil, fmt.Errorf("%w: OTEL_TRACES_EXPORTER=%s (only otlp or none)", ErrUnsupported, e)
		}
		var err error
		if exp, err = otlpExporter(ctx, opts.Endpoint); err != nil || exp == nil {
			return &Tracing{}, err
		}
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", DefaultServiceName)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
	)
	if err == nil && opts.ServiceName != "" {
		res, err = resource.Merge(res, resource.NewSchemaless(attribute.String("service.name", opts.ServiceName)))
	}
	if err != nil {
		_ = exp.Shutdown(ctx)
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	var export sdktrace.TracerProviderOption
	if opts.Synchronous {
		export = sdktrace.WithSyncer(exp)
	} else {
		export = sdktrace.WithBatcher(exp) // starts the batching goroutine: only when used
	}
	// The sampler follows OTEL_TRACES_SAMPLER; by default parent-based,
	// always on for roots.
	return &Tracing{tp: sdktrace.NewTracerProvider(export, sdktrace.WithResource(res))}, nil
}

// otlpExporter returns the OTLP/HTTP exporter for endpoint or the
// environment's, or nil when none is configured.
func otlpExporter(ctx context.Context, endpoint string) (sdktrace.SpanExporter, error) {
	if endpoint == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		return nil, nil
	}
	proto := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if proto == "" {
		proto = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if proto != "" && proto != "http/protobuf" {
		return nil, fmt.Errorf("%w: OTLP protocol %q (only http/protobuf)", ErrUnsupported, proto)
	}
	var opts []otlptracehttp.Option
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("tracing: endpoint %q: want http(s)://host:port[/path]", endpoint)
		}
		if u.Path == "" || u.Path == "/" {
			u.Path = "/v1/traces"
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return exp, nil
}

// Provider returns the tracer provider for runtime.Config.TracerProvider
// and runtime.ClientConfig.TracerProvider, or nil when tracing is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil || t.tp == nil {
		return nil // an untyped nil: a nil *sdktrace.TracerProvider would not compare equal to nil
	}
	return t.tp
}

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t != nil && t.tp != nil }

// Shutdown flushes the spans still buffered and stops the exporter,
// waiting until done or ctx ends (then it returns ctx's error, wrapped).
// Safe to call more than once, and when tracing is off.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.tp == nil {
		return nil
	}
	t.shutdown.Do(func() {
		if err := t.tp.Shutdown(ctx); err != nil {
			t.err = fmt.Errorf("tracing: shutdown: %w", err)
		}
	})
	return t.err
}
