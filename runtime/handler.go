package runtime

import (
	"context"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
)

// Handler does the work of one task. The value it returns becomes the
// payload of the reply (a task.response, unless it is a [Reply]); a nil
// value sends a reply without payload. An error asks for redelivery after a
// backoff delay. ctx ends at the handler deadline or when the runtime stops.
//
// A Handler may be called again for the same envelope (redelivery after a
// crash or a lost acknowledgement): make its side effects idempotent, e.g.
// keyed by the envelope's ID or IdempotencyKey.
type Handler func(ctx context.Context, task *Task) (any, error)

// Reply lets a handler choose the payload type of its reply.
type Reply struct {
	Type    envelope.PayloadType
	Payload any
}

// Task is one delivery of an envelope to a handler, with the checkpoint
// methods of a long task (see task.go).
type Task struct {
	// Envelope is the decoded, validated request.
	Envelope *envelope.Envelope
	// Attempt is the task's attempt number, starting at 1: its earlier
	// runs that failed, or ended without a trace (the process died or the
	// handler hung), plus one. Deliveries handed back unrun (at shutdown,
	// while its breaker was open, after a freeze) do not count.
	Attempt int
	// Subject is where the task was published.
	Subject string
	// StreamSeq identifies the message in the tasks stream.
	StreamSeq uint64
	// Published is when the server stored the task.
	Published time.Time
	// Header holds the message's NATS headers (trace context, and
	// dlq.HeaderReplayOf on a task replayed from the DLQ). Read only.
	Header nats.Header

	progress // checkpoint state, loaded on first use

	job job // the delivery and its accounting, for settle
}

// Decode decodes the task's payload into v (see envelope.DecodePayload).
func (t *Task) Decode(v any) error { return t.Envelope.DecodePayload(v) }
