package envelope

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// jsonEnvelope is the JSON form of an Envelope: the wire keys, in wire order.
type jsonEnvelope struct {
	ID             string            `json:"id"`
	Version        string            `json:"version"`
	Sender         string            `json:"sender"`
	Recipient      string            `json:"recipient"`
	PayloadType    PayloadType       `json:"payload_type"`
	Payload        json.RawMessage   `json:"payload,omitempty"`
	CorrelationID  string            `json:"correlation_id,omitempty"`
	TraceID        string            `json:"trace_id,omitempty"`
	Timestamp      string            `json:"timestamp"`
	ReplyTo        string            `json:"reply_to,omitempty"`
	TaskID         string            `json:"task_id,omitempty"`
	Deadline       string            `json:"deadline,omitempty"`
	IdempotencyKey string            `json:"idempotency_key,omitempty"`
	Extensions     map[string]string `json:"extensions,omitempty"`
}

// MarshalJSON returns the JSON form of e, used by the CLIs and by sidecar
// agents written in other languages: an object with the wire keys in wire
// order, the payload as a JSON value (see PayloadJSON), timestamp and deadline
// as RFC 3339 strings in UTC with up to nine fractional digits, and empty
// optional fields (and a zero deadline) left out.
//
// It has a value receiver so that json.Marshal uses it for Envelope values
// as well as pointers. Errors are PayloadJSON's.
func (e Envelope) MarshalJSON() ([]byte, error) {
	j := jsonEnvelope{
		ID:             e.ID,
		Version:        e.Version,
		Sender:         e.Sender,
		Recipient:      e.Recipient,
		PayloadType:    e.PayloadType,
		CorrelationID:  e.CorrelationID,
		TraceID:        e.TraceID,
		Timestamp:      e.Timestamp.UTC().Format(time.RFC3339Nano),
		ReplyTo:        e.ReplyTo,
		TaskID:         e.TaskID,
		IdempotencyKey: e.IdempotencyKey,
		Extensions:     e.Extensions,
	}
	if !e.Deadline.IsZero() {
		j.Deadline = e.Deadline.UTC().Format(time.RFC3339Nano)
	}
	if payloadPresent(e.Payload) {
		p, err := PayloadJSON(e.Payload)
		if err != nil {
			return nil, err
		}
		j.Payload = p
	}
	return marshalJSON(j)
}

// marshalJSON is json.Marshal without HTML escaping, for readable output.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// UnmarshalJSON decodes the JSON form written by MarshalJSON into e,
// overwriting it. Keys it does not know are ignored; a missing or null payload
// leaves Payload nil. The payload is converted to msgpack with EncodePayload:
// JSON numbers that are integers become int64 (uint64 above the int64 range),
// all others float64; objects become maps with sorted keys. Base64 strings
// stay strings (JSON does not say they were bytes). Like Unmarshal, it does
// not validate.
//
// Errors wrap ErrMalformed: the JSON is invalid or a field has the wrong JSON
// type (the encoding/json error is wrapped too), a time is not RFC 3339 or is
// outside the years 1 to 9999, or the payload nests deeper than
// MaxPayloadDepth. The JSON literal null leaves e unchanged.
func (e *Envelope) UnmarshalJSON(b []byte) error {
	if string(bytes.TrimSpace(b)) == "null" {
		return nil
	}
	var j jsonEnvelope
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w: json: %w", ErrMalformed, err)
	}
	ts, err := parseJSONTime("timestamp", j.Timestamp)
	if err != nil {
		return err
	}
	dl, err := parseJSONTime("deadline", j.Deadline)
	if err != nil {
		return err
	}
	payload, err := jsonToPayload(j.Payload)
	if err != nil {
		return err
	}
	*e = Envelope{
		ID:             j.ID,
		Version:        j.Version,
		Sender:         j.Sender,
		Recipient:      j.Recipient,
		PayloadType:    j.PayloadType,
		Payload:        payload,
		CorrelationID:  j.CorrelationID,
		TraceID:        j.TraceID,
		Timestamp:      ts,
		ReplyTo:        j.ReplyTo,
		TaskID:         j.TaskID,
		Deadline:       dl,
		IdempotencyKey: j.IdempotencyKey,
		Extensions:     j.Extensions,
	}
	if len(e.Extensions) == 0 {
		e.Extensions = nil
	}
	return nil
}

func parseJSONTime(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &FieldError{Field: field, Err: ErrMalformed, Detail: err.Error()}
	}
	if err := checkTime(field, t); err != nil {
		return time.Time{}, &FieldError{Field: field, Err: ErrMalformed, Detail: err.(*FieldError).Detail}
	}
	return t.UTC(), nil
}

// jsonToPayload converts a JSON payload to msgpack; absent or null is nil.
func jsonToPayload(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, &FieldError{Field: "payload", Err: ErrMalformed, Detail: err.Error()}
	}
	v, err := convertJSONNumbers(v, 0)
	if err != nil {
		return nil, err
	}
	return EncodePayload(v)
}

// convertJSONNumbers replaces every json.Number in v by an int64, uint64 or
// float64, and rejects nesting deeper than MaxPayloadDepth.
func convertJSONNumbers(v any, depth int) (any, error) {
	switch v := v.(type) {
	case json.Number:
		return jsonNumber(v)
	case []any:
		if depth == MaxPayloadDepth {
			return nil, &FieldError{Field: "payload", Err: ErrMalformed, Detail: fmt.Sprintf("arrays and objects nested deeper than %d", MaxPayloadDepth)}
		}
		for i, x := range v {
			var err error
			if v[i], err = convertJSONNumbers(x, depth+1); err != nil {
				return nil, err
			}
		}
	case map[string]any:
		if depth == MaxPayloadDepth {
			return nil, &FieldError{Field: "payload", Err: ErrMalformed, Detail: fmt.Sprintf("arrays and objects nested deeper than %d", MaxPayloadDepth)}
		}
		for k, x := range v {
			var err error
			if v[k], err = convertJSONNumbers(x, depth+1); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}

func jsonNumber(n json.Number) (any, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") && s != "-0" {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		// A float would keep only its first 17 digits: refuse rather
		// than change the number.
		return nil, &FieldError{Field: "payload", Err: ErrMalformed, Detail: fmt.Sprintf("integer %.40s does not fit in 64 bits (send it as a string)", s)}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, &FieldError{Field: "payload", Err: ErrMalformed, Detail: fmt.Sprintf("number %.40s: %v", s, err)}
	}
	return f, nil
}

// PayloadJSON renders a msgpack payload as JSON, the way MarshalJSON shows it.
// Integers of every width become JSON numbers, float32 and float64 keep their
// own shortest form, strings stay strings, bin becomes a base64 string (as
// encoding/json writes []byte), arrays become arrays, maps become objects
// whose keys are str keys as they are, bin and timestamp keys rendered as
// above, and other keys in their fmt.Sprint form (when two keys render alike,
// the later wins), and timestamps become RFC 3339 strings. Object keys come out sorted. An empty payload is null.
//
// Errors wrap ErrMalformed when payload is not exactly one msgpack value
// within MaxPayloadDepth; a payload that has no JSON form (NaN or infinite
// floats, extension types other than timestamps) gives an error that does not.
func PayloadJSON(payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return []byte("null"), nil
	}
	end, err := skipValue(payload, 0)
	if err != nil {
		return nil, malformed("payload", err)
	}
	if end != len(payload) {
		return nil, malformedf("payload", end, "%d bytes after the first msgpack value", len(payload)-end)
	}
	v, _, err := payloadValue(payload, 0)
	if err != nil {
		return nil, err
	}
	b, err := marshalJSON(v)
	if err != nil {
		return nil, fmt.Errorf("envelope: payload has no JSON form: %w", err)
	}
	return b, nil
}

// payloadValue converts the msgpack value at b[off], which skipValue accepted
// (so its depth is bounded), into a value encoding/json renders as described
// at PayloadJSON. It returns the offset after the value.
func payloadValue(b []byte, off int) (any, int, error) {
	h, err := readHeader(b, off)
	if err != nil {
		return nil, 0, malformed("payload", err)
	}
	data := b[h.body:h.end()]
	switch h.kind {
	case kindNil:
		return nil, h.body, nil
	case kindBool:
		return h.code == 0xc3, h.body, nil
	case kindUint:
		if h.n == 0 {
			return uint64(h.code), h.body, nil
		}
		return beUint(data), h.end(), nil
	case kindInt:
		if h.n == 0 {
			return int64(int8(h.code)), h.body, nil
		}
		u := beUint(data)
		shift := 64 - 8*h.n // sign-extend
		return int64(u<<shift) >> shift, h.end(), nil
	case kindFloat32:
		return jsonFloat32(math.Float32frombits(binary.BigEndian.Uint32(data))), h.end(), nil
	case kindFloat64:
		return jsonFloat64(math.Float64frombits(binary.BigEndian.Uint64(data))), h.end(), nil
	case kindStr:
		return string(data), h.end(), nil
	case kindBin:
		return base64.StdEncoding.EncodeToString(data), h.end(), nil
	case kindExt:
		if h.ext == -1 {
			t, err := readTime(b, h)
			if err != nil {
				return nil, 0, malformed("payload", err)
			}
			return t.Format(time.RFC3339Nano), h.end(), nil
		}
		return nil, 0, fmt.Errorf("envelope: payload has no JSON form: msgpack extension type %d at offset %d", h.ext, off)
	case kindArray:
		arr := make([]any, h.n) // h.n <= bytes left: readHeader checked
		off = h.body
		for i := range arr {
			if arr[i], off, err = payloadValue(b, off); err != nil {
				return nil, 0, err
			}
		}
		return arr, off, nil
	default: // kindMap
		m := make(map[string]any, h.n)
		off = h.body
		for range h.n {
			var k, v any
			if k, off, err = payloadValue(b, off); err != nil {
				return nil, 0, err
			}
			if v, off, err = payloadValue(b, off); err != nil {
				return nil, 0, err
			}
			ks, ok := k.(string) // str, and bin and timestamps rendered as above
			if !ok {
				ks = fmt.Sprint(k)
			}
			m[ks] = v
		}
		return m, off, nil
	}
}

// beUint reads a big-endian unsigned integer of 1, 2, 4 or 8 bytes.
func beUint(b []byte) uint64 {
	switch len(b) {
	case 1:
		return uint64(b[0])
	case 2:
		return uint64(binary.BigEndian.Uint16(b))
	case 4:
		return uint64(binary.BigEndian.Uint32(b))
	}
	return binary.BigEndian.Uint64(b)
}

// jsonFloat64 and jsonFloat32 write a float as encoding/json does (its
// shortest form), except that a float the JSON form would read back as an
// integer too large for 64 bits (2.03e20 is written 203131200000000000000)
// is written with an exponent, so that MarshalJSON's output always decodes.
type (
	jsonFloat64 float64
	jsonFloat32 float32
)

func (f jsonFloat64) MarshalJSON() ([]byte, error) { return floatJSON(float64(f), 64) }
func (f jsonFloat32) MarshalJSON() ([]byte, error) { return floatJSON(float64(f), 32) }

func floatJSON(f float64, bits int) ([]byte, error) {
	var b []byte
	var err error
	if bits == 32 {
		b, err = json.Marshal(float32(f))
	} else {
		b, err = json.Marshal(f)
	}
	if err != nil || bytes.ContainsAny(b, ".eE") {
		return b, err
	}
	if _, err := jsonNumber(json.Number(b)); err == nil {
		return b, nil
	}
	return strconv.AppendFloat(nil, f, 'e', -1, bits), nil
}
