package envelope

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
)

// Wire field numbers, in the order Marshal writes them.
const (
	fID = iota
	fVersion
	fSender
	fRecipient
	fPayloadType
	fPayload
	fCorrelationID
	fTraceID
	fTimestamp
	fReplyTo
	fTaskID
	fDeadline
	fIdempotencyKey
	fExtensions
	numFields
)

// fieldNames are the wire keys, indexed by field number.
var fieldNames = [numFields]string{
	"id", "version", "sender", "recipient", "payload_type", "payload",
	"correlation_id", "trace_id", "timestamp", "reply_to", "task_id",
	"deadline", "idempotency_key", "extensions",
}

// encodedKeys are the wire keys already encoded as msgpack fixstr.
var encodedKeys = func() (keys [numFields]string) {
	for i, name := range fieldNames {
		keys[i] = string(append([]byte{0xa0 | byte(len(name))}, name...))
	}
	return keys
}()

// fieldNumber returns the field number of a wire key, or -1 for a key this
// version does not know.
func fieldNumber(key []byte) int {
	switch string(key) { // does not allocate
	case "id":
		return fID
	case "version":
		return fVersion
	case "sender":
		return fSender
	case "recipient":
		return fRecipient
	case "payload_type":
		return fPayloadType
	case "payload":
		return fPayload
	case "correlation_id":
		return fCorrelationID
	case "trace_id":
		return fTraceID
	case "timestamp":
		return fTimestamp
	case "reply_to":
		return fReplyTo
	case "task_id":
		return fTaskID
	case "deadline":
		return fDeadline
	case "idempotency_key":
		return fIdempotencyKey
	case "extensions":
		return fExtensions
	}
	return -1
}

// The range of timestamps the wire carries: years 1 to 9999 in UTC, the years
// RFC 3339 (and so the JSON form) can write.
const (
	minUnixSeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxUnixSeconds = 253402300799 // 9999-12-31T23:59:59Z
)

// Marshal returns the wire encoding of e: a msgpack map with keys in the order
// of docs/wire.md, empty optional fields left out and extensions sorted by key,
// so equal envelopes always encode to equal bytes. Marshal does not validate
// (required fields are written even when empty); see Validate.
//
// Errors are *FieldError wrapping ErrInvalidField: e is nil, Payload is not
// exactly one msgpack value (or nests deeper than MaxPayloadDepth), a time is
// outside the years 1 to 9999, or a string is longer than 4 GiB - 1.
func Marshal(e *Envelope) ([]byte, error) {
	size, err := encodedSize(e)
	if err != nil {
		return nil, err
	}
	return appendEnvelope(make([]byte, 0, size), e), nil
}

// AppendMarshal appends the wire encoding of e (see Marshal) to dst and
// returns the extended slice, so hot paths can reuse one buffer. It returns
// Marshal's errors; on error dst is returned unchanged.
func AppendMarshal(dst []byte, e *Envelope) ([]byte, error) {
	size, err := encodedSize(e)
	if err != nil {
		return dst, err
	}
	return appendEnvelope(slices.Grow(dst, size), e), nil
}

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: ErrInvalidField, Detail: fmt.Sprintf(format, args...)}
}

// encodedSize checks that e can be encoded and returns the exact size of its
// encoding.
func encodedSize(e *Envelope) (int, error) {
	if e == nil {
		return 0, &FieldError{Err: ErrInvalidField, Detail: "nil *Envelope"}
	}
	size := 1 // fixmap header: at most 14 entries
	for f, s := range [...]string{
		fID: e.ID, fVersion: e.Version, fSender: e.Sender, fRecipient: e.Recipient,
		fPayloadType: string(e.PayloadType), fCorrelationID: e.CorrelationID,
		fTraceID: e.TraceID, fReplyTo: e.ReplyTo, fTaskID: e.TaskID,
		fIdempotencyKey: e.IdempotencyKey,
	} {
		if s == "" && f > fPayloadType {
			continue // optional and empty: left out (also the non-string slots)
		}
		if len(s) > math.MaxUint32 {
			return 0, invalid(fieldNames[f], "%d bytes is longer than a msgpack string can be", len(s))
		}
		size += len(encodedKeys[f]) + strSize(len(s))
	}
	if payloadPresent(e.Payload) {
		end, err := skipValue(e.Payload, 0)
		if err != nil {
			return 0, invalid("payload", "not a msgpack value: %v", err)
		}
		if end != len(e.Payload) {
			return 0, invalid("payload", "%d bytes after the first msgpack value", len(e.Payload)-end)
		}
		size += len(encodedKeys[fPayload]) + len(e.Payload)
	}
	if err := checkTime("timestamp", e.Timestamp); err != nil {
		return 0, err
	}
	size += len(encodedKeys[fTimestamp]) + timeSize(e.Timestamp)
	if !e.Deadline.IsZero() {
		if err := checkTime("deadline", e.Deadline); err != nil {
			return 0, err
		}
		size += len(encodedKeys[fDeadline]) + timeSize(e.Deadline)
	}
	if len(e.Extensions) > 0 {
		if len(e.Extensions) > MaxExtensions {
			return 0, invalid("extensions", "%d entries, limit %d", len(e.Extensions), MaxExtensions)
		}
		size += len(encodedKeys[fExtensions]) + mapHeaderSize(len(e.Extensions))
		for k, v := range e.Extensions {
			if len(k) > math.MaxUint32 || len(v) > math.MaxUint32 {
				return 0, invalid("extensions", "entry %.20q is longer than a msgpack string can be", k)
			}
			size += strSize(len(k)) + strSize(len(v))
		}
	}
	return size, nil
}

// payloadPresent reports whether p is written: nil and a lone msgpack nil both
// mean "no payload" and are left out.
func payloadPresent(p []byte) bool {
	return len(p) > 0 && !(len(p) == 1 && p[0] == 0xc0)
}

func checkTime(field string, t time.Time) error {
	if s := t.Unix(); s < minUnixSeconds || s > maxUnixSeconds {
		return invalid(field, "%v is outside the years 1 to 9999", t)
	}
	return nil
}

// appendEnvelope writes e, which encodedSize accepted.
func appendEnvelope(b []byte, e *Envelope) []byte {
	n := 6 // id, version, sender, recipient, payload_type, timestamp
	for _, present := range [...]bool{
		payloadPresent(e.Payload), e.CorrelationID != "", e.TraceID != "",
		e.ReplyTo != "", e.TaskID != "", !e.Deadline.IsZero(),
		e.IdempotencyKey != "", len(e.Extensions) > 0,
	} {
		if present {
			n++
		}
	}
	b = append(b, 0x80|byte(n))
	b = appendField(b, fID, e.ID)
	b = appendField(b, fVersion, e.Version)
	b = appendField(b, fSender, e.Sender)
	b = appendField(b, fRecipient, e.Recipient)
	b = appendField(b, fPayloadType, string(e.PayloadType))
	if payloadPresent(e.Payload) {
		b = append(b, encodedKeys[fPayload]...)
		b = append(b, e.Payload...)
	}
	b = appendOptional(b, fCorrelationID, e.CorrelationID)
	b = appendOptional(b, fTraceID, e.TraceID)
	b = append(b, encodedKeys[fTimestamp]...)
	b = appendTime(b, e.Timestamp)
	b = appendOptional(b, fReplyTo, e.ReplyTo)
	b = appendOptional(b, fTaskID, e.TaskID)
	if !e.Deadline.IsZero() {
		b = append(b, encodedKeys[fDeadline]...)
		b = appendTime(b, e.Deadline)
	}
	b = appendOptional(b, fIdempotencyKey, e.IdempotencyKey)
	if len(e.Extensions) > 0 {
		b = append(b, encodedKeys[fExtensions]...)
		b = appendExtensions(b, e.Extensions)
	}
	return b
}

func appendField(b []byte, f int, s string) []byte {
	b = append(b, encodedKeys[f]...)
	return appendStr(b, s)
}

func appendOptional(b []byte, f int, s string) []byte {
	if s == "" {
		return b
	}
	return appendField(b, f, s)
}

func appendExtensions(b []byte, m map[string]string) []byte {
	var buf [8]string
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = appendMapHeader(b, len(keys))
	for _, k := range keys {
		b = appendStr(b, k)
		b = appendStr(b, m[k])
	}
	return b
}

func strSize(n int) int {
	switch {
	case n < 32:
		return 1 + n
	case n < 1<<8:
		return 2 + n
	case n < 1<<16:
		return 3 + n
	}
	return 5 + n
}

// appendStr writes s as a msgpack str in its shortest form.
func appendStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 1<<8:
		b = append(b, 0xd9, byte(n))
	case n < 1<<16:
		b = append(b, 0xda, byte(n>>8), byte(n))
	default:
		b = append(b, 0xdb, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, s...)
}

func mapHeaderSize(n int) int {
	switch {
	case n < 16:
		return 1
	case n < 1<<16:
		return 3
	}
	return 5
}

func appendMapHeader(b []byte, n int) []byte {
	switch {
	case n < 16:
		return append(b, 0x80|byte(n))
	case n < 1<<16:
		return append(b, 0xde, byte(n>>8), byte(n))
	}
	return append(b, 0xdf, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// timeSize is the size appendTime writes for t.
func timeSize(t time.Time) int {
	if t.IsZero() {
		return 1
	}
	if s := uint64(t.Unix()); s>>34 == 0 {
		if t.Nanosecond() == 0 && s>>32 == 0 {
			return 6 // fixext4
		}
		return 10 // fixext8
	}
	return 15 // ext8, 12 bytes
}

// appendTime writes t as the msgpack timestamp extension (type -1) in the
// shortest of its three forms, or nil when t is zero.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0xc0)
	}
	sec, nsec := t.Unix(), uint64(t.Nanosecond())
	if uint64(sec)>>34 == 0 {
		data := nsec<<34 | uint64(sec)
		if data>>32 == 0 {
			b = append(b, 0xd6, 0xff)
			return binary.BigEndian.AppendUint32(b, uint32(data))
		}
		b = append(b, 0xd7, 0xff)
		return binary.BigEndian.AppendUint64(b, data)
	}
	b = append(b, 0xc7, 12, 0xff)
	b = binary.BigEndian.AppendUint32(b, uint32(nsec))
	return binary.BigEndian.AppendUint64(b, uint64(sec))
}
