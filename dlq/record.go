package dlq

import (
	"fmt"
	"strconv"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/nats-io/nats.go"
)

// Reason says why a message was dead-lettered. It is stable: operators
// filter on it.
type Reason string

// Reasons.
const (
	ReasonMalformed     Reason = "malformed"      // the body is not a decodable envelope
	ReasonTooLarge      Reason = "too_large"      // the body exceeds the size limit
	ReasonInvalid       Reason = "invalid"        // a field is missing or invalid
	ReasonBadTimestamp  Reason = "bad_timestamp"  // timestamp outside the clock-skew window
	ReasonExpired       Reason = "expired"        // the envelope's deadline passed
	ReasonUnknownType   Reason = "unknown_type"   // no handler for the payload type
	ReasonPermanent     Reason = "permanent"      // the handler returned a permanent error
	ReasonMaxAttempts   Reason = "max_attempts"   // transient failures exhausted the attempts
	ReasonMaxDeliveries Reason = "max_deliveries" // delivered MaxDeliver times, never settled: the agent crashed or hung on it (sweeper)
	ReasonReplyFailed   Reason = "reply_failed"   // the handler succeeded, its reply could never be published (the result is in HeaderResult)
)

// Provenance header names.
const (
	HeaderReason     = "Jetagent-Dlq-Reason"
	HeaderError      = "Jetagent-Dlq-Error"
	HeaderAgent      = "Jetagent-Dlq-Agent"
	HeaderSubject    = "Jetagent-Dlq-Subject"
	HeaderStream     = "Jetagent-Dlq-Stream"
	HeaderSequence   = "Jetagent-Dlq-Sequence"
	HeaderDeliveries = "Jetagent-Dlq-Deliveries"
	HeaderFirstFail  = "Jetagent-Dlq-First-Failure"
	HeaderLastFail   = "Jetagent-Dlq-Last-Failure"
	HeaderTraceID    = "Jetagent-Dlq-Trace-Id"
	// HeaderResult, on a reply_failed dead letter, is the reply the
	// handler's result made (the msgpack envelope, base64), when it fits
	// in 16 KiB; HeaderResultSize is its size either way.
	HeaderResult     = "Jetagent-Dlq-Result"
	HeaderResultSize = "Jetagent-Dlq-Result-Size"

	// HeaderReplayOf marks a replayed task with the DLQ entry (sequence in
	// the DLQ stream) it came from; HeaderReplayCount counts the replays
	// of that entry. The runtime does not apply the clock-skew check to a
	// replayed task (its timestamp is old by design).
	HeaderReplayOf    = "Jetagent-Replay-Of"
	HeaderReplayCount = "Jetagent-Replay-Count"
)

// provenance lists the headers a dead letter adds to the original's.
var provenance = []string{HeaderReason, HeaderError, HeaderAgent, HeaderSubject, HeaderStream,
	HeaderSequence, HeaderDeliveries, HeaderFirstFail, HeaderLastFail, HeaderTraceID}

// maxErrorLen bounds the error text kept in a header.
const maxErrorLen = 1024

// Record is a dead letter: the original message and where and why it failed.
type Record struct {
	// Data and Header are the original message's body and headers.
	Data   []byte
	Header nats.Header

	Reason Reason
	// Error is the error text (truncated to 1 KiB).
	Error string
	// Agent is the agent that gave up on the message.
	Agent string
	// Subject, Stream and Sequence locate the original message.
	Subject  string
	Stream   string
	Sequence uint64
	// Deliveries is how many times it was delivered.
	Deliveries uint64
	// FirstFailure and LastFailure bound the failures seen; FirstFailure
	// is the original's publish time when earlier failures are unknown.
	FirstFailure, LastFailure time.Time
	// TraceID is the envelope's trace id, when it could be decoded.
	TraceID string
}

// MsgID returns the dead letter's Nats-Msg-Id: one per original message,
// in the id space of the agent that dead-letters it,
// "dlq.<agent>.<stream>.<sequence>". The DLQ stream deduplicates over all
// agents, and anyone allowed to write to it can predict this id: a
// duplicate answer is therefore checked before it is believed (see
// Store.Publish).
func (r *Record) MsgID() string {
	return "dlq." + r.Agent + "." + r.Stream + "." + strconv.FormatUint(r.Sequence, 10)
}

// Msg builds the message to publish on subject: the original body, the
// original headers (its Nats-Msg-Id replaced by the record's) and the
// provenance headers.
func (r *Record) Msg(subject string) *nats.Msg {
	h := make(nats.Header, len(r.Header)+11)
	for k, v := range r.Header {
		h[k] = v
	}
	errText := r.Error
	if len(errText) > maxErrorLen {
		errText = errText[:maxErrorLen]
	}
	h.Set(bus.HeaderMsgID, r.MsgID())
	h.Set(HeaderReason, string(r.Reason))
	h.Set(HeaderError, errText)
	h.Set(HeaderAgent, r.Agent)
	h.Set(HeaderSubject, r.Subject)
	h.Set(HeaderStream, r.Stream)
	h.Set(HeaderSequence, strconv.FormatUint(r.Sequence, 10))
	h.Set(HeaderDeliveries, strconv.FormatUint(r.Deliveries, 10))
	h.Set(HeaderFirstFail, r.FirstFailure.UTC().Format(time.RFC3339Nano))
	h.Set(HeaderLastFail, r.LastFailure.UTC().Format(time.RFC3339Nano))
	if r.TraceID != "" {
		h.Set(HeaderTraceID, r.TraceID)
	}
	return &nats.Msg{Subject: subject, Data: r.Data, Header: h}
}

// Parse reads a Record back from a dead-letter message's body and headers.
// It returns ErrNotDeadLetter when the reason header is missing and a
// wrapped parse error when a numeric or time header is unreadable.
func Parse(data []byte, h nats.Header) (*Record, error) {
	reason := h.Get(HeaderReason)
	if reason == "" {
		return nil, ErrNotDeadLetter
	}
	r := &Record{
		Data:    data,
		Header:  h,
		Reason:  Reason(reason),
		Error:   h.Get(HeaderError),
		Agent:   h.Get(HeaderAgent),
		Subject: h.Get(HeaderSubject),
		Stream:  h.Get(HeaderStream),
		TraceID: h.Get(HeaderTraceID),
	}
	var err error
	if r.Sequence, err = strconv.ParseUint(h.Get(HeaderSequence), 10, 64); err != nil {
		return nil, fmt.Errorf("dlq: header %s: %w", HeaderSequence, err)
	}
	if r.Deliveries, err = strconv.ParseUint(h.Get(HeaderDeliveries), 10, 64); err != nil {
		return nil, fmt.Errorf("dlq: header %s: %w", HeaderDeliveries, err)
	}
	if r.FirstFailure, err = time.Parse(time.RFC3339Nano, h.Get(HeaderFirstFail)); err != nil {
		return nil, fmt.Errorf("dlq: header %s: %w", HeaderFirstFail, err)
	}
	if r.LastFailure, err = time.Parse(time.RFC3339Nano, h.Get(HeaderLastFail)); err != nil {
		return nil, fmt.Errorf("dlq: header %s: %w", HeaderLastFail, err)
	}
	return r, nil
}
