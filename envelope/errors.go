package envelope

import (
	"errors"

	"github.com/jetagent/jetagent/internal/errkind"
)

// Sentinel errors. Every failure this package reports wraps exactly one of them,
// so callers branch with errors.Is and read details with errors.As(*FieldError).
var (
	// ErrMalformed: the bytes are not a well-formed envelope (not msgpack, not a
	// map, a field of the wrong msgpack type, a duplicated key, trailing bytes...),
	// or a payload does not decode into the handler's type. resilience.Classify
	// reports KindMalformed for it (never retried): a handler that cannot use
	// its payload wraps it.
	ErrMalformed = errkind.ErrMalformed
	// ErrTooLarge: the encoded envelope is longer than Limits.MaxSize.
	ErrTooLarge = errors.New("envelope: too large")
	// ErrMissingField: a required field is empty.
	ErrMissingField = errors.New("envelope: missing field")
	// ErrInvalidField: a field is present but its value is not allowed.
	ErrInvalidField = errors.New("envelope: invalid field")
	// ErrBadTimestamp: the timestamp is further than Limits.MaxClockSkew from the
	// time the envelope was received.
	ErrBadTimestamp = errors.New("envelope: timestamp outside the clock-skew window")
	// ErrExpired: the deadline has passed.
	ErrExpired = errors.New("envelope: deadline passed")
	// ErrUnknownType: no handler exists for the payload type. This package never
	// returns it; the runtime does. It is defined here so that every reason an
	// envelope can be rejected lives in one place.
	ErrUnknownType = errors.New("envelope: unknown payload type")
)

// FieldError reports a problem with one field of an envelope. Err is one of the
// sentinel errors above; Field is the wire key (for example "sender"); Detail,
// when not empty, says what exactly is wrong.
type FieldError struct {
	Field  string
	Err    error
	Detail string
}

// Error returns "<sentinel text>: <field>[: <detail>]",
// for example "envelope: missing field: sender".
func (e *FieldError) Error() string {
	msg := "envelope: field error"
	if e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Field != "" {
		msg += ": " + e.Field
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Unwrap returns the sentinel error, so errors.Is(err, ErrMissingField) works.
func (e *FieldError) Unwrap() error { return e.Err }
