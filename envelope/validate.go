package envelope

import (
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxIDLen is the longest envelope id Validate accepts, in bytes.
const maxIDLen = 128

// Limits are the checks Validate and Parse apply beyond the required fields.
// The zero value gives the defaults.
type Limits struct {
	// MaxSize is the largest encoded envelope Parse accepts, in bytes.
	// Zero (or negative) means DefaultMaxSize.
	MaxSize int
	// MaxClockSkew is how far the timestamp may be from ReceivedAt, in either
	// direction. Zero (or negative) means DefaultMaxClockSkew.
	MaxClockSkew time.Duration
	// IgnoreClockSkew skips the timestamp window check, for example when
	// replaying old envelopes from the dead-letter queue.
	IgnoreClockSkew bool
	// ReceivedAt is the time the timestamp is compared with, for example the
	// broker's receive time of the message. Zero means Now().
	ReceivedAt time.Time
	// Now is the clock for the deadline check and the ReceivedAt default.
	// Nil means time.Now.
	Now func() time.Time
	// AliasPayload makes Parse's envelope share its Payload with data
	// instead of copying it: data must then stay unchanged while the
	// envelope is in use. For callers that own data outright, such as a
	// NATS message's body (the runtime sets it); it saves a copy of every
	// payload.
	AliasPayload bool
}

func (l *Limits) maxSize() int {
	if l.MaxSize <= 0 {
		return DefaultMaxSize
	}
	return l.MaxSize
}

func (l *Limits) maxClockSkew() time.Duration {
	if l.MaxClockSkew <= 0 {
		return DefaultMaxClockSkew
	}
	return l.MaxClockSkew
}

func (l *Limits) now() time.Time {
	if l.Now == nil {
		return time.Now()
	}
	return l.Now()
}

// Validate checks that e may be processed. It returns nil or a *FieldError
// naming the first problem found, whose Err is:
//
//   - ErrMissingField: id, version, sender, recipient, payload_type or
//     timestamp is empty (e == nil reports this too, with an empty Field);
//   - ErrInvalidField: the id is longer than 128 bytes or contains whitespace,
//     control characters, '*' or '>' (it becomes a NATS header and may appear
//     in subjects); the payload type is not Valid; an extension key is empty;
//     a string field, extension key or value is not valid UTF-8;
//   - ErrBadTimestamp: the timestamp is more than l.MaxClockSkew before or after
//     l.ReceivedAt (unless l.IgnoreClockSkew);
//   - ErrExpired: a deadline is set and is before l.Now().
//
// Validate does not reject payload types that are not Standard: whether a
// handler exists is for the runtime to decide (ErrUnknownType).
func (e *Envelope) Validate(l Limits) error {
	if e == nil {
		return &FieldError{Err: ErrMissingField, Detail: "nil *Envelope"}
	}
	for _, f := range [...]struct {
		name  string
		empty bool
	}{
		{"id", e.ID == ""},
		{"version", e.Version == ""},
		{"sender", e.Sender == ""},
		{"recipient", e.Recipient == ""},
		{"payload_type", e.PayloadType == ""},
		{"timestamp", e.Timestamp.IsZero()},
	} {
		if f.empty {
			return &FieldError{Field: f.name, Err: ErrMissingField}
		}
	}
	if err := checkID(e.ID); err != nil {
		return err
	}
	if !e.PayloadType.Valid() {
		return invalid("payload_type", "%.80q is not dot-separated tokens of [a-z0-9_-], at most %d bytes", e.PayloadType, maxPayloadTypeLen)
	}
	if err := checkStrings(e); err != nil {
		return err
	}
	var now time.Time
	haveNow := false
	clock := func() time.Time {
		if !haveNow {
			now, haveNow = l.now(), true
		}
		return now
	}
	if !l.IgnoreClockSkew {
		ref := l.ReceivedAt
		if ref.IsZero() {
			ref = clock()
		}
		skew := l.maxClockSkew()
		switch d := e.Timestamp.Sub(ref); {
		case d > skew:
			return &FieldError{Field: "timestamp", Err: ErrBadTimestamp,
				Detail: fmt.Sprintf("%v ahead of the receive time %v (limit %v)", d, ref.UTC().Format(time.RFC3339Nano), skew)}
		case d < -skew:
			return &FieldError{Field: "timestamp", Err: ErrBadTimestamp,
				Detail: fmt.Sprintf("%v behind the receive time %v (limit %v)", -d, ref.UTC().Format(time.RFC3339Nano), skew)}
		}
	}
	if !e.Deadline.IsZero() {
		if n := clock(); e.Deadline.Before(n) {
			return &FieldError{Field: "deadline", Err: ErrExpired,
				Detail: fmt.Sprintf("%v passed %v ago", e.Deadline.UTC().Format(time.RFC3339Nano), n.Sub(e.Deadline))}
		}
	}
	return nil
}

// idASCIIAllowed marks the ASCII bytes an id may contain: printable, not
// space, '*' or '>'.
var idASCIIAllowed = func() (t [utf8.RuneSelf]bool) {
	for c := '!'; c < 0x7f; c++ {
		t[c] = c != '*' && c != '>'
	}
	return t
}()

// checkID reports an id that cannot serve as a Nats-Msg-Id header value.
func checkID(id string) error {
	if len(id) > maxIDLen {
		return invalid("id", "%d bytes, limit %d", len(id), maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < utf8.RuneSelf {
			if !idASCIIAllowed[c] {
				return badIDChar(rune(c), i)
			}
			continue
		}
		// Invalid UTF-8 decodes as RuneError here and is reported by checkStrings.
		r, size := utf8.DecodeRuneInString(id[i:])
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return badIDChar(r, i)
		}
		i += size - 1
	}
	return nil
}

func badIDChar(r rune, at int) error {
	return invalid("id", "character %q at byte %d is not allowed (whitespace, control, '*' and '>' are not)", r, at)
}

// checkStrings reports an empty extension key, or the first string that is not
// valid UTF-8: msgpack str holds UTF-8, and decoders in other languages reject
// anything else.
func checkStrings(e *Envelope) error {
	switch {
	case !utf8.ValidString(e.ID):
		return notUTF8("id", e.ID)
	case !utf8.ValidString(e.Version):
		return notUTF8("version", e.Version)
	case !utf8.ValidString(e.Sender):
		return notUTF8("sender", e.Sender)
	case !utf8.ValidString(e.Recipient):
		return notUTF8("recipient", e.Recipient)
	case !utf8.ValidString(e.CorrelationID): // payload_type is ASCII when Valid
		return notUTF8("correlation_id", e.CorrelationID)
	case !utf8.ValidString(e.TraceID):
		return notUTF8("trace_id", e.TraceID)
	case !utf8.ValidString(e.ReplyTo):
		return notUTF8("reply_to", e.ReplyTo)
	case !utf8.ValidString(e.TaskID):
		return notUTF8("task_id", e.TaskID)
	case !utf8.ValidString(e.IdempotencyKey):
		return notUTF8("idempotency_key", e.IdempotencyKey)
	}
	for k, v := range e.Extensions {
		switch {
		case k == "":
			return invalid("extensions", "empty key")
		case !utf8.ValidString(k):
			return invalid("extensions", "key %.40q is not valid UTF-8", k)
		case !utf8.ValidString(v):
			return invalid("extensions", "value of %.40q is not valid UTF-8", k)
		}
	}
	return nil
}

func notUTF8(field, value string) error {
	return invalid(field, "%.40q is not valid UTF-8", value)
}

// Parse decodes and validates one envelope, in this order: it rejects data
// longer than l.MaxSize with an error wrapping ErrTooLarge (before decoding
// anything), decodes it like Unmarshal (errors wrap ErrMalformed; the
// payload aliases data when l.AliasPayload is set), then runs Validate with
// l.
//
// On a Validate error Parse returns the decoded envelope as well as the error,
// so that the caller can dead-letter it with its id and sender; on ErrTooLarge
// and ErrMalformed the envelope is nil.
func Parse(data []byte, l Limits) (*Envelope, error) {
	if limit := l.maxSize(); len(data) > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(data), limit)
	}
	e := new(Envelope)
	if err := unmarshal(data, e, l.AliasPayload); err != nil {
		return nil, err
	}
	if err := e.Validate(l); err != nil {
		return e, err
	}
	return e, nil
}
