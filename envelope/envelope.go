package envelope

import "time"

// WireVersion is the value New and NewReply write into Envelope.Version.
const WireVersion = "1"

// ContentType is the value of the NATS Content-Type header on messages whose
// body is a marshalled Envelope.
const ContentType = "application/vnd.jetagent.envelope+msgpack"

// DefaultMaxSize is the largest encoded envelope, in bytes, that Parse accepts
// when Limits.MaxSize is zero.
const DefaultMaxSize = 1 << 20

// DefaultMaxClockSkew is how far, in either direction, an envelope's timestamp
// may be from its receive time when Limits.MaxClockSkew is zero.
const DefaultMaxClockSkew = 5 * time.Minute

// MaxPayloadDepth is how deeply arrays and maps may nest inside the payload
// (and inside the value of any unknown key). Deeper is ErrMalformed: nesting costs
// stack in every decoder that later walks the payload, in every language.
const MaxPayloadDepth = 128

// MaxUnknownKeys is how many keys this version does not know an envelope
// may carry (skipped, for forward compatibility), and MaxExtensions how
// many entries its extensions map may hold. More is ErrMalformed: these
// bound what a reader spends on a hostile body to a small multiple of its
// size, whatever it is made of.
const (
	MaxUnknownKeys = 64
	MaxExtensions  = 64
)

// Envelope is one message between agents. On the wire it is a msgpack map
// whose keys are given next to each field (see docs/wire.md).
type Envelope struct {
	// ID identifies the envelope ("id", required); NewID makes one. It is also
	// the NATS Nats-Msg-Id header, so a re-sent copy is dropped by JetStream.
	ID string
	// Version is the wire version the sender wrote ("version", required).
	Version string
	// Sender is the agent or client that sent the envelope ("sender", required).
	Sender string
	// Recipient is the agent the envelope is for ("recipient", required).
	Recipient string
	// PayloadType says what Payload is ("payload_type", required).
	PayloadType PayloadType
	// Payload is the raw msgpack encoding of exactly one value ("payload"),
	// embedded as that value on the wire. Nil means no payload.
	// Use EncodePayload and DecodePayload to convert.
	Payload []byte
	// CorrelationID is the id of the envelope this one answers ("correlation_id").
	CorrelationID string
	// TraceID is the W3C trace-id (32 lowercase hex) of the trace the envelope
	// belongs to ("trace_id").
	TraceID string
	// Timestamp is when the sender created the envelope ("timestamp", required).
	Timestamp time.Time
	// ReplyTo is the subject replies go to ("reply_to").
	ReplyTo string
	// TaskID is the task the envelope belongs to ("task_id").
	TaskID string
	// Deadline is when the work stops being useful ("deadline"); zero means none.
	Deadline time.Time
	// IdempotencyKey lets a handler recognise repeated work ("idempotency_key").
	IdempotencyKey string
	// Extensions carries free-form string metadata ("extensions").
	Extensions map[string]string
}

// New returns an envelope from sender to recipient with a fresh ID (NewID),
// Version WireVersion, Timestamp now in UTC, a fresh TraceID (NewTraceID) and
// payload encoded with EncodePayload (a nil payload leaves Payload nil).
//
// New does not validate its arguments; Validate does. The only error is
// EncodePayload's.
func New(sender, recipient string, typ PayloadType, payload any) (*Envelope, error) {
	p, err := EncodePayload(payload)
	if err != nil {
		return nil, err
	}
	return &Envelope{
		ID:          NewID(),
		Version:     WireVersion,
		Sender:      sender,
		Recipient:   recipient,
		PayloadType: typ,
		Payload:     p,
		TraceID:     NewTraceID(),
		Timestamp:   time.Now().UTC(),
	}, nil
}

// NewReply returns the answer to e: sent from e.Recipient back to e.Sender,
// with CorrelationID e.ID, the same TraceID and TaskID, Timestamp now in UTC,
// and an ID derived from e.ID (DeriveID(e.ID, "reply")), so that the replies
// to two deliveries of the same request share one id. Publishing the reply to
// e.ReplyTo is the caller's job.
//
// The only error is EncodePayload's.
func (e *Envelope) NewReply(typ PayloadType, payload any) (*Envelope, error) {
	p, err := EncodePayload(payload)
	if err != nil {
		return nil, err
	}
	return &Envelope{
		ID:            DeriveID(e.ID, "reply"),
		Version:       WireVersion,
		Sender:        e.Recipient,
		Recipient:     e.Sender,
		PayloadType:   typ,
		Payload:       p,
		CorrelationID: e.ID,
		TraceID:       e.TraceID,
		Timestamp:     time.Now().UTC(),
		TaskID:        e.TaskID,
	}, nil
}
