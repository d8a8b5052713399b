package runtime

import (
	"context"
	"encoding/hex"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// tracerName is the instrumentation scope of the runtime's and the
// client's spans.
const tracerName = "github.com/jetagent/jetagent/runtime"

// Span attribute keys.
const (
	attrAgent      = attribute.Key("jetagent.agent")
	attrSubject    = attribute.Key("jetagent.subject")
	attrEnvelopeID = attribute.Key("jetagent.envelope_id")
	attrAttempt    = attribute.Key("jetagent.attempt")
	attrOutcome    = attribute.Key("jetagent.outcome")
	attrReason     = attribute.Key("jetagent.dead_letter_reason")
	attrFailure    = attribute.Key("jetagent.failure_kind")
	attrRecipient  = attribute.Key("jetagent.recipient")
	attrSystem     = attribute.Key("messaging.system")
)

// traceContext is the W3C trace-context propagator (traceparent,
// tracestate headers).
var traceContext propagation.TraceContext

// tracerOf returns the tracer of tp, or nil (no spans) when tp is nil.
func tracerOf(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

// headerCarrier lets the propagator read and write NATS headers under the
// exact (lower-case) keys bus.EnvelopeMsg uses.
type headerCarrier nats.Header

func (h headerCarrier) Get(key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = []string{value} }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// envelopeSpanContext is the span context of the traceparent that
// bus.EnvelopeMsg derives for env (its trace id, a span id from its id),
// or an invalid one when env.TraceID is not a W3C trace id. It stands for
// the sender when a message carries no traceparent, and for the envelope
// when a client sends it outside any span, so that spans always join the
// envelope's trace.
func envelopeSpanContext(env *envelope.Envelope) trace.SpanContext {
	var cfg trace.SpanContextConfig
	if len(env.TraceID) != 32 || len(env.ID) < 16 {
		return trace.SpanContext{}
	}
	if _, err := hex.Decode(cfg.TraceID[:], []byte(env.TraceID)); err != nil {
		return trace.SpanContext{}
	}
	// As bus.traceParent: the low nibble of each of the id's last 16
	// characters is one hex digit of the span id.
	tail := env.ID[len(env.ID)-16:]
	for i := range 8 {
		cfg.SpanID[i] = tail[2*i]&0x0f<<4 | tail[2*i+1]&0x0f
	}
	if !cfg.SpanID.IsValid() {
		cfg.SpanID[7] = 1
	}
	cfg.TraceFlags = trace.FlagsSampled
	cfg.Remote = true
	return trace.NewSpanContext(cfg)
}

// startHandleSpan starts the span of one handler call, a child of the
// delivery's traceparent (or of the envelope's trace), and returns the
// handler's parent context carrying it.
func (r *Runtime) startHandleSpan(d *bus.Delivery, t *Task) (context.Context, trace.Span) {
	parent := traceContext.Extract(r.handlerCtx, headerCarrier(d.Header))
	if !trace.SpanContextFromContext(parent).IsValid() {
		if sc := envelopeSpanContext(t.Envelope); sc.IsValid() {
			parent = trace.ContextWithRemoteSpanContext(parent, sc)
		}
	}
	return r.tracer.Start(parent, "jetagent.handle "+string(t.Envelope.PayloadType),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attrSystem.String("nats"),
			attrAgent.String(r.cfg.Agent),
			attrSubject.String(d.Subject),
			attrEnvelopeID.String(t.Envelope.ID),
			attrAttempt.Int64(int64(d.NumDelivered)),
		))
}

// endHandleSpan records the delivery's outcome on span and ends it.
func endHandleSpan(span trace.Span, o Outcome, err error) {
	span.SetAttributes(attrOutcome.String(o.Disposition.String()))
	if o.Disposition == DeadLettered {
		span.SetAttributes(attrReason.String(string(o.Reason)))
	}
	if o.Failure != resilience.KindNone {
		span.SetAttributes(attrFailure.String(o.Failure.String()))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// startSendSpan starts the span of one Send, a child of the span in ctx,
// or else of the envelope's own trace. env.TraceID is set to the span's
// trace id, so that the envelope, its reply, the agent's spans and logs
// all name one trace.
func (c *Client) startSendSpan(ctx context.Context, env *envelope.Envelope) (context.Context, trace.Span) {
	parent := ctx
	if !trace.SpanContextFromContext(ctx).IsValid() {
		if sc := envelopeSpanContext(env); sc.IsValid() {
			parent = trace.ContextWithRemoteSpanContext(ctx, sc)
		}
	}
	ctx, span := c.tracer.Start(parent, "jetagent.send "+string(env.PayloadType),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attrSystem.String("nats"),
			attrRecipient.String(env.Recipient),
			attrEnvelopeID.String(env.ID),
		))
	if sc := span.SpanContext(); sc.IsValid() {
		env.TraceID = sc.TraceID().String()
	}
	return ctx, span
}

// endSendSpan records Send's result on span and ends it.
func endSendSpan(span trace.Span, err error) {
	if err != nil {
		span.SetAttributes(attrFailure.String(resilience.Classify(err).String()))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// publishEnvelope publishes env to target; with tracing on, its
// traceparent header names the span in ctx (the Send's), so the agent's
// handler span continues it.
func (c *Client) publishEnvelope(ctx context.Context, target string, env *envelope.Envelope) (bus.PubAck, error) {
	if c.tracer == nil {
		return c.pub.PublishEnvelope(ctx, target, env)
	}
	msg, err := bus.EnvelopeMsg(target, env)
	if err != nil {
		return bus.PubAck{}, err
	}
	traceContext.Inject(ctx, headerCarrier(msg.Header))
	return c.pub.PublishMsg(ctx, msg)
}
