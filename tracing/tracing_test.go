package tracing_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/tracing"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

var topo = bus.Topology{Memory: true}

// setup returns tracing into an in-memory exporter.
func setup(t *testing.T) (*tracing.Tracing, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := tracing.Setup(testkit.Context(t), tracing.Options{Exporter: exp, Synchronous: true, ServiceName: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return tr, exp
}

// agentAndClient starts agent "echo" running h and a client, both traced
// by tp.
func agentAndClient(t *testing.T, tp trace.TracerProvider, h runtime.Handler) *runtime.Client {
	t.Helper()
	_, conn := natstest.Provisioned(t, topo)
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo, TracerProvider: tp,
		Backoff: resilience.Backoff{Base: 5 * time.Millisecond, Max: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, h)
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	c, err := runtime.NewClient(conn, runtime.ClientConfig{Topology: topo, TracerProvider: tp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// spans waits until exp holds n spans and returns them.
func spans(t *testing.T, exp *tracetest.InMemoryExporter, n int) tracetest.SpanStubs {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(exp.GetSpans()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d spans exported, want %d", len(exp.GetSpans()), n)
		}
		time.Sleep(5 * time.Millisecond) // the handler span ends after the reply is sent
	}
	return exp.GetSpans()
}

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// A client Send and the agent's handling of it are parent and child in
// one trace: the envelope's.
func TestSendAndHandleSpansAreParentAndChild(t *testing.T) {
	tr, exp := setup(t)
	client := agentAndClient(t, tr.Provider(), runtime.Echo)
	env, err := envelope.New("tester", "echo", envelope.TaskRequest, "hi")
	if err != nil {
		t.Fatal(err)
	}
	traceID := env.TraceID
	rep, err := client.Send(testkit.Context(t), env)
	if err != nil {
		t.Fatal(err)
	}
	got := spans(t, exp, 2)
	var send, handle tracetest.SpanStub
	for _, s := range got {
		switch s.Name {
		case "jetagent.send task.request":
			send = s
		case "jetagent.handle task.request":
			handle = s
		}
	}
	if !send.SpanContext.IsValid() || !handle.SpanContext.IsValid() {
		t.Fatalf("spans %v, want a send and a handle span", names(got))
	}
	if handle.Parent.SpanID() != send.SpanContext.SpanID() || !handle.Parent.IsRemote() {
		t.Errorf("handle span's parent %s, want the send span %s (remote)", handle.Parent.SpanID(), send.SpanContext.SpanID())
	}
	if send.SpanContext.TraceID() != handle.SpanContext.TraceID() || send.SpanContext.TraceID().String() != traceID {
		t.Errorf("trace ids: send %s, handle %s, envelope %s: want one", send.SpanContext.TraceID(), handle.SpanContext.TraceID(), traceID)
	}
	if env.TraceID != traceID || rep.TraceID != traceID {
		t.Errorf("trace id changed: request %s, reply %s, want %s", env.TraceID, rep.TraceID, traceID)
	}
	if send.SpanKind != trace.SpanKindProducer || handle.SpanKind != trace.SpanKindConsumer {
		t.Errorf("span kinds %v, %v", send.SpanKind, handle.SpanKind)
	}
	for key, want := range map[string]string{
		"jetagent.agent":       "echo",
		"jetagent.subject":     topo.TaskSubject("echo", envelope.TaskRequest),
		"jetagent.envelope_id": env.ID,
		"jetagent.outcome":     "succeeded",
	} {
		if got := attr(handle, key).AsString(); got != want {
			t.Errorf("handle span %s = %q, want %q", key, got, want)
		}
	}
	if got := attr(handle, "jetagent.attempt").AsInt64(); got != 1 {
		t.Errorf("handle span attempt = %d, want 1", got)
	}
	if res := send.Resource.Set(); res.Len() == 0 {
		t.Error("no resource")
	} else if v, _ := res.Value("service.name"); v.AsString() != "test" {
		t.Errorf("service.name = %q, want test", v.AsString())
	}
}

// A Send inside a span of the caller's joins the caller's trace, and the
// envelope is re-labelled with it.
func TestSendJoinsTheCallersTrace(t *testing.T) {
	tr, exp := setup(t)
	client := agentAndClient(t, tr.Provider(), runtime.Echo)
	ctx, parent := tr.Provider().Tracer("test").Start(testkit.Context(t), "caller")
	env, err := envelope.New("tester", "echo", envelope.TaskRequest, "hi")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Send(ctx, env); err != nil {
		t.Fatal(err)
	}
	parent.End()
	want := parent.SpanContext().TraceID()
	for _, s := range spans(t, exp, 3) {
		if s.SpanContext.TraceID() != want {
			t.Errorf("span %s in trace %s, want the caller's %s", s.Name, s.SpanContext.TraceID(), want)
		}
	}
	if env.TraceID != want.String() {
		t.Errorf("envelope trace id %s, want the caller's %s", env.TraceID, want)
	}
}

// Each attempt gets its own span with its outcome; a failure is an error.
func TestEachAttemptIsASpanWithItsOutcome(t *testing.T) {
	tr, exp := setup(t)
	client := agentAndClient(t, tr.Provider(), func(_ context.Context, task *runtime.Task) (any, error) {
		if task.Attempt == 1 {
			return nil, errors.New("flaky")
		}
		return nil, nil
	})
	env, err := envelope.New("tester", "echo", envelope.TaskRequest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Send(testkit.Context(t), env); err != nil {
		t.Fatal(err)
	}
	byAttempt := map[int64]tracetest.SpanStub{}
	for _, s := range spans(t, exp, 3) {
		if s.Name == "jetagent.handle task.request" {
			byAttempt[attr(s, "jetagent.attempt").AsInt64()] = s
		}
	}
	first, second := byAttempt[1], byAttempt[2]
	if attr(first, "jetagent.outcome").AsString() != "retried" || first.Status.Code != codes.Error ||
		attr(first, "jetagent.failure_kind").AsString() != "transient" {
		t.Errorf("first attempt: outcome %q, status %v, kind %q; want retried, error, transient",
			attr(first, "jetagent.outcome").AsString(), first.Status.Code, attr(first, "jetagent.failure_kind").AsString())
	}
	if attr(second, "jetagent.outcome").AsString() != "succeeded" || second.Status.Code == codes.Error {
		t.Errorf("second attempt: outcome %q, status %v", attr(second, "jetagent.outcome").AsString(), second.Status.Code)
	}
	if first.Parent.SpanID() != second.Parent.SpanID() {
		t.Error("the attempts have different parents; both continue the Send's span")
	}
}

func TestSetupFollowsTheEnvironment(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SDK_DISABLED",
		"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"} {
		t.Setenv(k, "")
	}
	ctx := testkit.Context(t)
	tr, err := tracing.Setup(ctx, tracing.Options{})
	if err != nil || tr.Enabled() || tr.Provider() != nil {
		t.Fatalf("no endpoint: Setup = %v, enabled %v, provider %v; want tracing off", err, tr.Enabled(), tr.Provider())
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	tr, err = tracing.Setup(ctx, tracing.Options{})
	if err != nil || !tr.Enabled() || tr.Provider() == nil {
		t.Fatalf("with OTEL_EXPORTER_OTLP_ENDPOINT: Setup = %v, enabled %v; want tracing on", err, tr.Enabled())
	}
	if err := tr.Shutdown(ctx); err != nil { // nothing buffered: nothing sent
		t.Fatal(err)
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}

	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	if tr, err := tracing.Setup(ctx, tracing.Options{}); err != nil || tr.Enabled() {
		t.Errorf("OTEL_TRACES_EXPORTER=none: Setup = %v, enabled %v", err, tr.Enabled())
	}
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if tr, err := tracing.Setup(ctx, tracing.Options{}); err != nil || tr.Enabled() {
		t.Errorf("OTEL_SDK_DISABLED=true: Setup = %v, enabled %v", err, tr.Enabled())
	}
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	if _, err := tracing.Setup(ctx, tracing.Options{}); !errors.Is(err, tracing.ErrUnsupported) {
		t.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=grpc: Setup = %v, want ErrUnsupported", err)
	}
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "")
	if _, err := tracing.Setup(ctx, tracing.Options{Endpoint: "127.0.0.1:4318"}); err == nil {
		t.Error("an endpoint without a scheme was accepted")
	}
	tr, err = tracing.Setup(ctx, tracing.Options{Endpoint: "http://127.0.0.1:4318"})
	if err != nil || !tr.Enabled() {
		t.Fatalf("explicit endpoint: Setup = %v, enabled %v", err, tr.Enabled())
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func names(ss tracetest.SpanStubs) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.Name)
	}
	return out
}
