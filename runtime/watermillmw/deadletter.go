package watermillmw

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natsheader"
	"github.com/nats-io/nats.go"
)

// deadLetterTimeout bounds the wait for the dead-letter stream to store a
// copy, so a stuck server cannot wedge the handler.
const deadLetterTimeout = 10 * time.Second

// deadLetter copies msg to the dead-letter stream with its provenance and
// waits (up to 10s, or until ctx, the message's context, ends) for the
// copy to be stored: then it returns nil (the Router acks msg). When the copy cannot be stored it returns an error asking for
// redelivery after the backoff delay (the Router nacks msg): a message is
// never dropped.
func (m *Middleware) deadLetter(ctx context.Context, msg *message.Message, d delivery, reason dlq.Reason, cause error) error {
	now := time.Now().UTC()
	rec := dlq.Record{
		Data:         msg.Payload,
		Header:       m.headers(msg),
		Reason:       reason,
		Error:        cause.Error(),
		Agent:        m.cfg.Agent,
		Subject:      d.subject,
		Stream:       d.stream,
		Sequence:     d.seq,
		Deliveries:   d.n,
		FirstFailure: now,
		LastFailure:  now,
		TraceID:      traceID(msg.Metadata.Get(bus.HeaderTraceParent)),
	}
	if d.n > 1 && !d.published.IsZero() {
		rec.FirstFailure = d.published // earlier failures' times are unknown
	}
	out := rec.Msg(m.dlqSubject(d.subject))
	if d.stream == "" || d.seq == 0 {
		// Not from a watermillbus.Subscriber: no stream position to
		// derive the id from, so the UUID identifies the message.
		if msg.UUID != "" {
			out.Header.Set(bus.HeaderMsgID, "dlq-watermill-"+m.cfg.Agent+"-"+msg.UUID)
		} else {
			out.Header.Del(bus.HeaderMsgID)
		}
	}
	log := m.log.With("agent", m.cfg.Agent, "subject", d.subject, "stream_seq", d.seq,
		"message_uuid", msg.UUID, "attempt", d.n, "reason", string(reason))

	ctx, cancel := context.WithTimeout(ctx, deadLetterTimeout)
	defer cancel()
	// A duplicate acknowledgement means a copy is stored already (an
	// earlier attempt whose ack was lost): that is success too.
	if _, err := m.cfg.Publisher.PublishMsg(ctx, out); err != nil {
		m.stats.deadLetterFailures.Add(1)
		m.stats.retried.Add(1)
		delay := m.cfg.Backoff.Delay(d.attempt())
		log.Error("dead-letter publish failed; the message will be redelivered", "err", err, "cause", cause, "delay", delay)
		return m.nakAfter(msg, delay, errors.Join(cause, fmt.Errorf("watermillmw: dead letter to %s not stored: %w", out.Subject, err)))
	}
	m.stats.deadLettered.Add(1)
	log.Warn("dead-lettered", "dlq_subject", out.Subject, "cause", cause)
	return nil
}

// headers turns msg's metadata into the dead letter's copy of the
// original headers: the jetagent delivery keys are left out (the
// provenance headers record them) and the UUID goes in Watermill-Uuid, so
// that re-publishing the dead letter with bus.Publisher restores the
// message. Keys that cannot be NATS header names are left out (logged):
// the server would refuse the whole copy, forever.
func (m *Middleware) headers(msg *message.Message) nats.Header {
	h := make(nats.Header, len(msg.Metadata)+1)
	for k, v := range msg.Metadata {
		switch k {
		case watermillbus.MetadataNumDelivered, watermillbus.MetadataStreamSeq, watermillbus.MetadataStream, watermillbus.MetadataSubject,
			watermillbus.MetadataPublished, watermillbus.MetadataNakDelay, bus.HeaderMsgID, watermillbus.HeaderUUID:
			continue
		}
		if !natsheader.ValidName(k) {
			m.log.Warn("metadata key is not a NATS header name; left out of the dead letter", "key", k, "message_uuid", msg.UUID)
			continue
		}
		h[k] = []string{v}
	}
	if msg.UUID != "" {
		h[watermillbus.HeaderUUID] = []string{msg.UUID}
	}
	return h
}

// dlqSubject returns the dead-letter subject of a message published on
// subject: "<prefix>.dlq.<agent>." followed by
//
//   - the rest of a task subject of this agent ("<prefix>.tasks.<agent>.<rest>"),
//     as the native runtime does;
//   - else the whole subject (orders.created -> <prefix>.dlq.<agent>.orders.created),
//     so operators can filter dead letters by their origin with wildcards;
//   - "watermill" when the subject is unknown or is not a valid publish
//     subject (a wildcard topic, a foreign pub/sub's topic name).
func (m *Middleware) dlqSubject(subject string) string {
	tail := unknownSubject
	if isPublishSubject(subject) {
		tail = subject
		if rest, ok := strings.CutPrefix(subject, m.agentTasks); ok && rest != "" {
			tail = rest
		}
	}
	return m.cfg.Topology.DLQSubject(m.cfg.Agent, envelope.PayloadType(tail))
}

// isPublishSubject reports whether s is a subject one can publish on:
// non-empty tokens separated by '.', no wildcard token, no blanks.
func isPublishSubject(s string) bool {
	if s == "" {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c <= ' ' || c == 0x7f {
				return false
			}
		}
	}
	return true
}

// traceID returns the trace id of a W3C traceparent
// ("00-<32 hex>-<16 hex>-<2 hex>"), or "".
func traceID(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || strings.Trim(parts[1], "0123456789abcdef") != "" {
		return ""
	}
	return parts[1]
}
