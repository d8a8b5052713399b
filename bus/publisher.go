package bus

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names jetagent sets on every envelope message.
const (
	HeaderMsgID       = jetstream.MsgIDHeader // "Nats-Msg-Id"
	HeaderContentType = "Content-Type"
	HeaderTraceParent = "traceparent"
)

// PubAck is the server's acknowledgement of a stored message.
type PubAck struct {
	Stream   string
	Sequence uint64
	// Duplicate is true when the server already had a message with this
	// Nats-Msg-Id inside its duplicate window and dropped this copy.
	Duplicate bool
}

// Publisher publishes envelopes and raw messages to JetStream and waits for
// the server to store them. It is safe for concurrent use. (Package
// bus/watermillbus publishes watermill messages through one.)
type Publisher struct {
	js     jetstream.JetStream
	closed atomic.Bool
}

// NewPublisher returns a Publisher on js.
func NewPublisher(js jetstream.JetStream) *Publisher {
	return &Publisher{js: js}
}

// EnvelopeMsg encodes env into a NATS message for subject with the
// Nats-Msg-Id, Content-Type and (when env.TraceID is a W3C trace id)
// traceparent headers. It returns the encoding error, if any.
func EnvelopeMsg(subject string, env *envelope.Envelope) (*nats.Msg, error) {
	data, err := envelope.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("bus: encode envelope %s: %w", env.ID, err)
	}
	// One backing array for the header values: one allocation, not three.
	vals := [3]string{env.ID, envelope.ContentType, traceParent(env)}
	h := make(nats.Header, 3)
	h[HeaderMsgID] = vals[0:1:1]
	h[HeaderContentType] = vals[1:2:2]
	if vals[2] != "" {
		h[HeaderTraceParent] = vals[2:3:3]
	}
	return &nats.Msg{Subject: subject, Data: data, Header: h}, nil
}

// traceParent derives a W3C traceparent from the envelope's trace id and a
// span id taken from its ULID entropy, or "" when the trace id is not a
// 32-hex W3C trace id.
func traceParent(env *envelope.Envelope) string {
	if len(env.TraceID) != 32 || !isLowerHex(env.TraceID) || len(env.ID) < 16 {
		return ""
	}
	const hex = "0123456789abcdef"
	var span [16]byte
	tail := env.ID[len(env.ID)-16:]
	zero := true
	for i := 0; i < 16; i++ {
		span[i] = hex[tail[i]&0x0f]
		zero = zero && span[i] == '0'
	}
	if zero { // an all-zero parent id is invalid
		span[15] = '1'
	}
	return "00-" + env.TraceID + "-" + string(span[:]) + "-01"
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// PublishEnvelope publishes env on subject and waits for the server's
// acknowledgement (or ctx). A re-send of the same envelope id inside the
// duplicate window is acknowledged with Duplicate set and not stored twice,
// so retrying after an error is safe.
//
// Errors wrap the encoding error, jetstream.ErrNoStreamResponse when no
// stream captures subject, ctx's error, or ErrClosed.
func (p *Publisher) PublishEnvelope(ctx context.Context, subject string, env *envelope.Envelope) (PubAck, error) {
	m, err := EnvelopeMsg(subject, env)
	if err != nil {
		return PubAck{}, err
	}
	return p.PublishMsg(ctx, m)
}

// PublishMsg publishes m (its Nats-Msg-Id header, if any, deduplicates) and
// waits for the acknowledgement. Errors as for PublishEnvelope.
func (p *Publisher) PublishMsg(ctx context.Context, m *nats.Msg) (PubAck, error) {
	if p.closed.Load() {
		return PubAck{}, ErrClosed
	}
	ack, err := p.js.PublishMsg(ctx, m)
	if err != nil {
		return PubAck{}, fmt.Errorf("bus: publish %s: %w", m.Subject, err)
	}
	return PubAck{Stream: ack.Stream, Sequence: ack.Sequence, Duplicate: ack.Duplicate}, nil
}

// batchWindow bounds the unacknowledged messages PublishBatch keeps in
// flight, well under the connection's async limit.
const batchWindow = 2048

// PublishBatch publishes msgs asynchronously, keeping at most 2048 in
// flight, and waits for every acknowledgement. The i-th PubAck belongs to
// msgs[i]. The error joins every failed message's error (each naming its
// index); acks of messages that succeeded are filled in even when others
// failed, so a caller can re-send the failures (re-sending everything is
// safe too: message ids deduplicate). When ctx ends, the messages not yet
// acknowledged fail with ctx's error; they may still be stored. So may a
// message whose acknowledgement did not come within 15 s (it fails with
// jetstream.ErrAsyncPublishTimeout: a lost acknowledgement, not a refusal).
func (p *Publisher) PublishBatch(ctx context.Context, msgs []*nats.Msg) ([]PubAck, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	var errs []error
	acks := p.publishAll(ctx, len(msgs), func(i int) (*nats.Msg, error) { return msgs[i], nil }, nil,
		func(i int, err error) {
			errs = append(errs, fmt.Errorf("bus: publish message %d to %s: %w", i, msgs[i].Subject, err))
		})
	return acks, errors.Join(errs...)
}

// PublishEnvelopes publishes envs to subject as PublishBatch does, encoding
// each envelope just before it is sent, so that encoding overlaps with the
// server storing the ones before it: for many envelopes this is faster than
// encoding them all with EnvelopeMsg and calling PublishBatch. An envelope
// that does not encode fails alone (its error wraps the encoder's, see
// envelope.Marshal); the others are still sent.
func (p *Publisher) PublishEnvelopes(ctx context.Context, subject string, envs []*envelope.Envelope) ([]PubAck, error) {
	if p.closed.Load() {
		return nil, ErrClosed
	}
	var errs []error
	acks := p.publishAll(ctx, len(envs), func(i int) (*nats.Msg, error) { return EnvelopeMsg(subject, envs[i]) }, nil,
		func(i int, err error) {
			errs = append(errs, fmt.Errorf("bus: publish envelope %d to %s: %w", i, subject, err))
		})
	return acks, errors.Join(errs...)
}

// PublishEach publishes msgs as PublishBatch does, and reports each
// message's outcome on its own: errs[i] is nil when msgs[i] was stored
// (acks[i] is then its acknowledgement), else its error, not wrapped, for
// the caller to name the message its own way. msgCtx, when not nil, gives
// message i a context of its own besides ctx: a message whose context is
// done is not sent, or no longer waited for. After Close every message
// fails with ErrClosed.
func (p *Publisher) PublishEach(ctx context.Context, msgs []*nats.Msg, msgCtx func(i int) context.Context) (acks []PubAck, errs []error) {
	errs = make([]error, len(msgs))
	if p.closed.Load() {
		for i := range errs {
			errs[i] = ErrClosed
		}
		return make([]PubAck, len(msgs)), errs
	}
	acks = p.publishAll(ctx, len(msgs), func(i int) (*nats.Msg, error) { return msgs[i], nil }, msgCtx,
		func(i int, err error) { errs[i] = err })
	return acks, errs
}

// publishAll sends the n messages msg builds asynchronously, at most
// batchWindow in flight, and waits for every acknowledgement until ctx
// ends. msgCtx, when not nil, gives message i a context of its own: a
// message whose context is done is not sent, or no longer waited for. fail
// is called, from this goroutine, once for each message that failed (msg
// returning an error included); the acks of the others are returned.
func (p *Publisher) publishAll(ctx context.Context, n int, msg func(i int) (*nats.Msg, error), msgCtx func(i int) context.Context, fail func(i int, err error)) []PubAck {
	acks := make([]PubAck, n)
	futures := make([]jetstream.PubAckFuture, n)
	own := func(i int) context.Context {
		if msgCtx == nil {
			return ctx
		}
		return msgCtx(i)
	}
	next := 0 // first future not awaited yet
	await := func(upTo int) {
		for ; next < upTo; next++ {
			if f := futures[next]; f != nil {
				a, err := awaitAck(ctx, own(next), f)
				if err != nil {
					fail(next, err)
					continue
				}
				acks[next] = PubAck{Stream: a.Stream, Sequence: a.Sequence, Duplicate: a.Duplicate}
			}
		}
	}
	for i := range n {
		if i-next >= batchWindow {
			await(i - batchWindow + 1)
		}
		if err := own(i).Err(); err != nil {
			fail(i, err)
			continue
		}
		m, err := msg(i)
		if err != nil {
			fail(i, err)
			continue
		}
		f, err := p.js.PublishMsgAsync(m)
		if err != nil {
			fail(i, err)
			continue
		}
		futures[i] = f
	}
	await(n)
	return acks
}

// awaitAck waits for f's outcome, preferring an outcome already there over
// a deadline that passed meanwhile.
func awaitAck(ctx, msgCtx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case a := <-f.Ok():
		return a, nil
	case err := <-f.Err():
		return nil, err
	default:
	}
	select {
	case a := <-f.Ok():
		return a, nil
	case err := <-f.Err():
		return nil, err
	case <-msgCtx.Done():
		return nil, fmt.Errorf("no acknowledgement: %w", msgCtx.Err())
	case <-ctx.Done():
		return nil, fmt.Errorf("no acknowledgement: %w", ctx.Err())
	}
}

// Close marks the publisher closed: later publishes return ErrClosed. It
// does not close the connection. It always returns nil.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}
