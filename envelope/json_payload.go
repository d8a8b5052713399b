package envelope

import (
	"encoding/json"
	"errors"
)

// PayloadFromJSON converts one JSON value into payload bytes (msgpack), as
// UnmarshalJSON does for the "payload" key: integers become int64 (uint64
// above its range), other numbers float64; null becomes no payload (nil).
// It returns an error wrapping ErrMalformed when b is not exactly one JSON
// value, or holds an integer that fits in neither int64 nor uint64 (as a
// float64 it would silently lose digits).
func PayloadFromJSON(b []byte) ([]byte, error) {
	if !json.Valid(b) {
		return nil, &FieldError{Field: "payload", Err: ErrMalformed, Detail: errors.New("not a single valid JSON value").Error()}
	}
	return jsonToPayload(b)
}
