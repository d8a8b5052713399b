package envelope

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// fixedClock returns Limits whose clock and receive time are at.
func fixedClock(at time.Time) Limits {
	return Limits{ReceivedAt: at, Now: func() time.Time { return at }}
}

func TestValidate(t *testing.T) {
	t0 := goldenT0
	edit := func(f func(e *Envelope)) *Envelope {
		e := goldenAllFields()
		f(e)
		return e
	}
	tests := []struct {
		name   string
		e      *Envelope
		limits Limits
		want   error // nil: valid
		field  string
		detail string // substring of FieldError.Detail
	}{
		{"valid", goldenAllFields(), fixedClock(t0), nil, "", ""},
		{"valid non-standard type", edit(func(e *Envelope) { e.PayloadType = "billing.invoice_v2" }), fixedClock(t0), nil, "", ""},
		{"nil envelope", nil, fixedClock(t0), ErrMissingField, "", "nil"},
		{"missing id", edit(func(e *Envelope) { e.ID = "" }), fixedClock(t0), ErrMissingField, "id", ""},
		{"missing version", edit(func(e *Envelope) { e.Version = "" }), fixedClock(t0), ErrMissingField, "version", ""},
		{"missing sender", edit(func(e *Envelope) { e.Sender = "" }), fixedClock(t0), ErrMissingField, "sender", ""},
		{"missing recipient", edit(func(e *Envelope) { e.Recipient = "" }), fixedClock(t0), ErrMissingField, "recipient", ""},
		{"missing payload type", edit(func(e *Envelope) { e.PayloadType = "" }), fixedClock(t0), ErrMissingField, "payload_type", ""},
		{"missing timestamp", edit(func(e *Envelope) { e.Timestamp = time.Time{} }), fixedClock(t0), ErrMissingField, "timestamp", ""},
		{"id too long", edit(func(e *Envelope) { e.ID = strings.Repeat("a", 129) }), fixedClock(t0), ErrInvalidField, "id", "129 bytes"},
		{"id 128 bytes", edit(func(e *Envelope) { e.ID = strings.Repeat("a", 128) }), fixedClock(t0), nil, "", ""},
		{"id with space", edit(func(e *Envelope) { e.ID = "a b" }), fixedClock(t0), ErrInvalidField, "id", "' '"},
		{"id with newline", edit(func(e *Envelope) { e.ID = "a\r\nb" }), fixedClock(t0), ErrInvalidField, "id", `'\r'`},
		{"id with DEL", edit(func(e *Envelope) { e.ID = "a\x7f" }), fixedClock(t0), ErrInvalidField, "id", ""},
		{"id with star", edit(func(e *Envelope) { e.ID = "a*" }), fixedClock(t0), ErrInvalidField, "id", "'*'"},
		{"id with gt", edit(func(e *Envelope) { e.ID = "a>" }), fixedClock(t0), ErrInvalidField, "id", "'>'"},
		{"id with no-break space", edit(func(e *Envelope) { e.ID = "a\u00a0b" }), fixedClock(t0), ErrInvalidField, "id", ""},
		{"id with unicode letter", edit(func(e *Envelope) { e.ID = "idé" }), fixedClock(t0), nil, "", ""},
		{"bad payload type", edit(func(e *Envelope) { e.PayloadType = "Task.Request" }), fixedClock(t0), ErrInvalidField, "payload_type", ""},
		{"empty extension key", edit(func(e *Envelope) { e.Extensions[""] = "x" }), fixedClock(t0), ErrInvalidField, "extensions", "empty key"},
		{"sender not UTF-8", edit(func(e *Envelope) { e.Sender = "a\xffb" }), fixedClock(t0), ErrInvalidField, "sender", "UTF-8"},
		{"extension value not UTF-8", edit(func(e *Envelope) { e.Extensions["k"] = "\xc3" }), fixedClock(t0), ErrInvalidField, "extensions", "UTF-8"},
		// Control characters end up in HTTP headers, environments and logs.
		{"task id with CR LF", edit(func(e *Envelope) { e.TaskID = "t\r\nX: y" }), fixedClock(t0), ErrInvalidField, "task_id", `'\r'`},
		{"task id with NUL", edit(func(e *Envelope) { e.TaskID = "t\x00" }), fixedClock(t0), ErrInvalidField, "task_id", `'\x00'`},
		{"task id with tab", edit(func(e *Envelope) { e.TaskID = "t\tu" }), fixedClock(t0), ErrInvalidField, "task_id", ""},
		{"task id with C1", edit(func(e *Envelope) { e.TaskID = "t\u0085" }), fixedClock(t0), ErrInvalidField, "task_id", ""},
		{"task id with unicode", edit(func(e *Envelope) { e.TaskID = "задача-1 é" }), fixedClock(t0), nil, "", ""},
		{"task id too long", edit(func(e *Envelope) { e.TaskID = strings.Repeat("t", MaxKeyLen+1) }), fixedClock(t0), ErrInvalidField, "task_id", "1025 bytes"},
		{"task id at the limit", edit(func(e *Envelope) { e.TaskID = strings.Repeat("t", MaxKeyLen) }), fixedClock(t0), nil, "", ""},
		{"idempotency key with LF", edit(func(e *Envelope) { e.IdempotencyKey = "k\n" }), fixedClock(t0), ErrInvalidField, "idempotency_key", ""},
		{"idempotency key too long", edit(func(e *Envelope) { e.IdempotencyKey = strings.Repeat("k", MaxKeyLen+1) }), fixedClock(t0), ErrInvalidField, "idempotency_key", ""},
		{"recipient with DEL", edit(func(e *Envelope) { e.Recipient = "a\x7f" }), fixedClock(t0), ErrInvalidField, "recipient", ""},
		{"sender with ESC", edit(func(e *Envelope) { e.Sender = "\x1b[31mred" }), fixedClock(t0), ErrInvalidField, "sender", ""},
		{"version with NUL", edit(func(e *Envelope) { e.Version = "1\x00" }), fixedClock(t0), ErrInvalidField, "version", ""},
		{"correlation id with LF", edit(func(e *Envelope) { e.CorrelationID = "c\n" }), fixedClock(t0), ErrInvalidField, "correlation_id", ""},
		{"trace id with CR", edit(func(e *Envelope) { e.TraceID = "\r" }), fixedClock(t0), ErrInvalidField, "trace_id", ""},
		{"extension value with LF is fine", edit(func(e *Envelope) { e.Extensions["note"] = "two\nlines" }), fixedClock(t0), nil, "", ""},
		{"too many extensions", edit(func(e *Envelope) {
			for i := range MaxExtensions + 1 {
				e.Extensions[strings.Repeat("k", i+1)] = "v"
			}
		}), fixedClock(t0), ErrInvalidField, "extensions", "limit 64"},
		// reply_to is one literal subject.
		{"reply_to with space", edit(func(e *Envelope) { e.ReplyTo = "jetagent.replies.c.a b" }), fixedClock(t0), ErrInvalidField, "reply_to", "' '"},
		{"reply_to with gt", edit(func(e *Envelope) { e.ReplyTo = "jetagent.replies.>" }), fixedClock(t0), ErrInvalidField, "reply_to", "wildcard"},
		{"reply_to with star", edit(func(e *Envelope) { e.ReplyTo = "jetagent.*.c" }), fixedClock(t0), ErrInvalidField, "reply_to", "wildcard"},
		{"reply_to star inside a token", edit(func(e *Envelope) { e.ReplyTo = "jetagent.a*b" }), fixedClock(t0), ErrInvalidField, "reply_to", "wildcard"},
		{"reply_to trailing dot", edit(func(e *Envelope) { e.ReplyTo = "jetagent.replies." }), fixedClock(t0), ErrInvalidField, "reply_to", "empty token"},
		{"reply_to leading dot", edit(func(e *Envelope) { e.ReplyTo = ".jetagent" }), fixedClock(t0), ErrInvalidField, "reply_to", "empty token"},
		{"reply_to doubled dot", edit(func(e *Envelope) { e.ReplyTo = "a..b" }), fixedClock(t0), ErrInvalidField, "reply_to", "empty token"},
		{"reply_to with NUL", edit(func(e *Envelope) { e.ReplyTo = "a.\x00" }), fixedClock(t0), ErrInvalidField, "reply_to", ""},
		{"reply_to not ASCII", edit(func(e *Envelope) { e.ReplyTo = "a.é" }), fixedClock(t0), ErrInvalidField, "reply_to", ""},
		{"reply_to too long", edit(func(e *Envelope) { e.ReplyTo = strings.Repeat("r.", MaxKeyLen/2) + "x" }), fixedClock(t0), ErrInvalidField, "reply_to", "limit"},
		{"reply_to a KV key", edit(func(e *Envelope) { e.ReplyTo = "$KV.JETAGENT_SNAPSHOTS_a.a.t1" }), fixedClock(t0), ErrInvalidField, "reply_to", "system subject"},
		{"reply_to the JetStream API", edit(func(e *Envelope) { e.ReplyTo = "$JS.API.STREAM.DELETE.X" }), fixedClock(t0), ErrInvalidField, "reply_to", "system subject"},
		{"reply_to an inbox", edit(func(e *Envelope) { e.ReplyTo = "_INBOX.abc.1" }), fixedClock(t0), nil, "", ""},
		{"reply_to one token", edit(func(e *Envelope) { e.ReplyTo = "x" }), fixedClock(t0), nil, "", ""},
		{"timestamp at the skew limit ahead", edit(func(e *Envelope) { e.Timestamp = t0.Add(DefaultMaxClockSkew) }), fixedClock(t0), nil, "", ""},
		{"timestamp ahead", edit(func(e *Envelope) { e.Timestamp = t0.Add(DefaultMaxClockSkew + 1) }), fixedClock(t0), ErrBadTimestamp, "timestamp", "5m0.000000001s ahead"},
		{"timestamp behind", edit(func(e *Envelope) { e.Timestamp = t0.Add(-6 * time.Minute) }), fixedClock(t0), ErrBadTimestamp, "timestamp", "6m0s behind"},
		{"timestamp behind, custom skew", edit(func(e *Envelope) { e.Timestamp = t0.Add(-2 * time.Second) }),
			Limits{ReceivedAt: t0, Now: func() time.Time { return t0 }, MaxClockSkew: time.Second}, ErrBadTimestamp, "timestamp", "2s behind"},
		{"timestamp far off, skew ignored", edit(func(e *Envelope) { e.Timestamp = t0.Add(-24 * time.Hour) }),
			Limits{IgnoreClockSkew: true, Now: func() time.Time { return t0 }}, nil, "", ""},
		{"receive time defaults to Now", edit(func(e *Envelope) { e.Timestamp = t0.Add(-time.Hour) }),
			Limits{Now: func() time.Time { return t0.Add(-time.Hour) }}, nil, "", ""},
		{"receive time separate from Now", goldenAllFields(),
			Limits{ReceivedAt: t0, Now: func() time.Time { return t0.Add(time.Hour) }}, ErrExpired, "deadline", "passed 58m30s ago"},
		{"deadline passed", edit(func(e *Envelope) { e.Deadline = t0.Add(-time.Nanosecond) }), fixedClock(t0), ErrExpired, "deadline", "passed 1ns ago"},
		{"deadline exactly now", edit(func(e *Envelope) { e.Deadline = t0 }), fixedClock(t0), nil, "", ""},
		{"no deadline", edit(func(e *Envelope) { e.Deadline = time.Time{} }), fixedClock(t0.Add(100 * time.Hour)),
			ErrBadTimestamp, "timestamp", "behind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.e.Validate(tt.limits)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Validate = %v, want %v", err, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %T, want *FieldError", err)
			}
			if fe.Field != tt.field || !strings.Contains(fe.Detail, tt.detail) {
				t.Errorf("FieldError{Field: %q, Detail: %q}, want field %q and detail containing %q", fe.Field, fe.Detail, tt.field, tt.detail)
			}
		})
	}
}

func TestValidateUsesTimeNowByDefault(t *testing.T) {
	e, err := New("a", "b", TaskRequest, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Validate(Limits{}); err != nil {
		t.Errorf("fresh envelope with default limits: %v", err)
	}
	e.Deadline = time.Now().Add(-time.Minute)
	if err := e.Validate(Limits{}); !errors.Is(err, ErrExpired) {
		t.Errorf("deadline a minute ago with default clock: %v, want ErrExpired", err)
	}
	e.Deadline = time.Time{}
	e.Timestamp = time.Now().Add(-DefaultMaxClockSkew - time.Minute)
	if err := e.Validate(Limits{}); !errors.Is(err, ErrBadTimestamp) {
		t.Errorf("timestamp beyond the default skew: %v, want ErrBadTimestamp", err)
	}
}

func TestFieldErrorMessage(t *testing.T) {
	tests := map[string]*FieldError{
		"envelope: missing field: sender":          {Field: "sender", Err: ErrMissingField},
		"envelope: invalid field: id: too long":    {Field: "id", Err: ErrInvalidField, Detail: "too long"},
		"envelope: malformed: offset 0: not a map": {Err: ErrMalformed, Detail: "offset 0: not a map"},
		"envelope: field error: x":                 {Field: "x"},
	}
	for want, fe := range tests {
		if got := fe.Error(); got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	}
}

func TestParse(t *testing.T) {
	data := mustMarshal(t, goldenAllFields())
	e, err := Parse(data, fixedClock(goldenT0))
	if err != nil || e.ID != goldenAllFields().ID {
		t.Fatalf("Parse = %v, %v", e, err)
	}
	tests := []struct {
		name   string
		data   []byte
		limits Limits
		want   error
		env    bool // an envelope is returned with the error
	}{
		{"too large", data, Limits{MaxSize: len(data) - 1}, ErrTooLarge, false},
		{"too large before decoding", append([]byte{0xc1}, make([]byte, DefaultMaxSize)...), Limits{}, ErrTooLarge, false},
		{"exactly the limit", data, Limits{MaxSize: len(data), ReceivedAt: goldenT0, Now: fixedClock(goldenT0).Now}, nil, true},
		{"malformed", data[:10], fixedClock(goldenT0), ErrMalformed, false},
		{"missing field", mustMarshal(t, &Envelope{ID: "x"}), fixedClock(goldenT0), ErrMissingField, true},
		{"bad timestamp", data, fixedClock(goldenT0.Add(time.Hour)), ErrBadTimestamp, true},
		{"expired", data, Limits{IgnoreClockSkew: true, Now: func() time.Time { return goldenT0.Add(time.Hour) }}, ErrExpired, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(tt.data, tt.limits)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Parse error = %v, want %v", err, tt.want)
			}
			if (e != nil) != tt.env {
				t.Errorf("Parse returned envelope %v, want one: %v", e, tt.env)
			}
			if tt.want == ErrTooLarge && !strings.Contains(err.Error(), "limit") {
				t.Errorf("too-large error %q does not give the sizes", err)
			}
		})
	}
}

// printablePrefix (eight bytes at a time) agrees with the plain loop on
// every byte value at every position.
func TestPrintablePrefix(t *testing.T) {
	naive := func(s string) int {
		i := 0
		for i < len(s) && s[i] >= 0x20 && s[i] < 0x7f {
			i++
		}
		return i
	}
	base := []byte("abcdefghijklmnopqrstuvwxyz012345")
	for n := 0; n <= len(base); n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				b := append([]byte(nil), base[:n]...)
				b[pos] = byte(c)
				if got, want := printablePrefix(string(b)), naive(string(b)); got != want {
					t.Fatalf("printablePrefix(%q) = %d, want %d", b, got, want)
				}
			}
		}
	}
}
