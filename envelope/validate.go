package envelope

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxIDLen is the longest envelope id Validate accepts, in bytes.
const maxIDLen = 128

// MaxKeyLen is the longest task_id, idempotency_key and reply_to Validate
// accepts, in bytes: they become store keys and subjects.
const MaxKeyLen = 1024

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
//     a string field, extension key or value is not valid UTF-8; version,
//     sender, recipient, correlation_id, trace_id, task_id or idempotency_key
//     contains a control character (C0 including tab, DEL, C1: they end up in
//     HTTP headers, process environments and logs); task_id or
//     idempotency_key is longer than MaxKeyLen bytes; reply_to is not a
//     literal, non-system NATS subject (see ValidReplyTo); more than MaxExtensions
//     extensions;
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
	if err := checkReplyTo(e.ReplyTo); err != nil {
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

// checkStrings reports an empty extension key, the first string that is not
// valid UTF-8 (msgpack str holds UTF-8, and decoders in other languages reject
// anything else), the first identifier-like field with a control character,
// a task_id or idempotency_key longer than MaxKeyLen, or too many extensions.
// It allocates nothing: it runs on every delivery.
func checkStrings(e *Envelope) error {
	if !utf8.ValidString(e.ID) {
		return notUTF8("id", e.ID)
	}
	// payload_type is ASCII when Valid; reply_to has rules of its own.
	if err := checkText("version", e.Version); err != nil {
		return err
	}
	if err := checkText("sender", e.Sender); err != nil {
		return err
	}
	if err := checkText("recipient", e.Recipient); err != nil {
		return err
	}
	if err := checkText("correlation_id", e.CorrelationID); err != nil {
		return err
	}
	if err := checkText("trace_id", e.TraceID); err != nil {
		return err
	}
	if err := checkText("task_id", e.TaskID); err != nil {
		return err
	}
	if err := checkText("idempotency_key", e.IdempotencyKey); err != nil {
		return err
	}
	if len(e.TaskID) > MaxKeyLen {
		return invalid("task_id", "%d bytes, limit %d", len(e.TaskID), MaxKeyLen)
	}
	if len(e.IdempotencyKey) > MaxKeyLen {
		return invalid("idempotency_key", "%d bytes, limit %d", len(e.IdempotencyKey), MaxKeyLen)
	}
	if len(e.Extensions) > MaxExtensions {
		return invalid("extensions", "%d entries, limit %d", len(e.Extensions), MaxExtensions)
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

// checkText reports s when it is not valid UTF-8 or holds a control
// character: C0 (tab included), DEL or C1. One pass, no allocation.
func checkText(field, s string) error {
	i := printablePrefix(s) // what identifiers nearly always are, all of it
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return badChar(field, rune(c), i)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			return notUTF8(field, s)
		}
		if r <= 0x9f { // C1 controls, U+0080..U+009F
			return badChar(field, r, i)
		}
		i += size
	}
	return nil
}

// printablePrefix returns the length of the longest prefix of s made of
// printable ASCII (0x20..0x7e), eight bytes at a time.
func printablePrefix(s string) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		below := (x - 0x20*ones) &^ x // high bit set in a byte < 0x20 (or >= 0x80)
		y := x ^ 0x7f*ones
		del := (y - ones) &^ y // high bit set in a byte == 0x7f
		if (x|below|del)&highs != 0 {
			break
		}
	}
	for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
		i++
	}
	return i
}

func badChar(field string, r rune, at int) error {
	return invalid(field, "control character %q at byte %d", r, at)
}

// subjectBytes classes the bytes of a literal subject: 1 a token byte
// (printable ASCII but space, '*' and '>'), 2 the separator, 0 refused.
var subjectBytes = func() (t [256]uint8) {
	for c := '!'; c < 0x7f; c++ {
		t[c] = 1
	}
	t['*'], t['>'], t['.'] = 0, 0, 2
	return t
}()

// checkReplyTo reports a reply_to that ValidReplyTo refuses, saying why.
// One table lookup per byte, no allocation.
func checkReplyTo(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxKeyLen {
		return invalid("reply_to", "%d bytes, limit %d", len(s), MaxKeyLen)
	}
	if s[0] == '$' {
		// $JS.API, $KV, $O, $SYS...: a reply there would be a request to
		// the server (or a write to a bucket) made with the agent's rights.
		return invalid("reply_to", "%.80q is a system subject ('$')", s)
	}
	atSeparator := true // an empty token before a leading '.'
	for i := 0; i < len(s); i++ {
		switch subjectBytes[s[i]] {
		case 1:
			atSeparator = false
		case 2:
			if atSeparator {
				return emptyToken(s, i)
			}
			atSeparator = true
		default:
			if c := s[i]; c == '*' || c == '>' {
				return invalid("reply_to", "%.80q has the wildcard %q at byte %d: a reply goes to one literal subject", s, c, i)
			}
			return invalid("reply_to", "%.80q has %q at byte %d: a subject is printable ASCII without spaces", s, rune(s[i]), i)
		}
	}
	if atSeparator {
		return emptyToken(s, len(s))
	}
	return nil
}

func emptyToken(s string, at int) error {
	return invalid("reply_to", "%.80q has an empty token at byte %d (a leading, trailing or doubled '.')", s, at)
}

// ValidReplyTo reports whether s can be an envelope's reply_to: empty (no
// reply), or a literal NATS subject of at most MaxKeyLen bytes: printable
// ASCII without spaces, no wildcard ('*', '>'), tokens separated by single
// dots, none empty, and not a system subject (starting with '$': the
// JetStream API, KV buckets, object stores), which a reply would turn into
// a request or a write made with the replying agent's rights.
func ValidReplyTo(s string) bool { return checkReplyTo(s) == nil }

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
