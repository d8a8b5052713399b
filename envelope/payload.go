package envelope

import (
	"bytes"
	"fmt"
	"reflect"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
)

// payloadEncoder is a pooled msgpack encoder with its buffer.
type payloadEncoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encoders = sync.Pool{New: func() any {
	p := new(payloadEncoder)
	p.enc = msgpack.NewEncoder(&p.buf)
	return p
}}

// payloadDecoder is a pooled msgpack decoder with its reader.
type payloadDecoder struct {
	rd  bytes.Reader
	dec *msgpack.Decoder
}

var decoders = sync.Pool{New: func() any {
	p := new(payloadDecoder)
	p.dec = msgpack.NewDecoder(&p.rd)
	return p
}}

// decodeAnyMap decodes a msgpack map into an interface: map[string]any when
// every key is a string (the library's default, which fails on other keys),
// map[any]any otherwise. A key that cannot be a Go map key (an array or a map)
// is an error instead of the panic the library would raise.
func decodeAnyMap(d *msgpack.Decoder) (any, error) {
	n, err := d.DecodeMapLen()
	if err != nil || n == -1 {
		return nil, err
	}
	strKeys := make(map[string]any, n) // DecodePayload checked n against the input
	var anyKeys map[any]any
	for range n {
		k, err := d.DecodeInterfaceLoose()
		if err != nil {
			return nil, err
		}
		v, err := d.DecodeInterfaceLoose()
		if err != nil {
			return nil, err
		}
		if s, ok := k.(string); ok && anyKeys == nil {
			strKeys[s] = v
			continue
		}
		if k != nil && !reflect.TypeOf(k).Comparable() {
			return nil, fmt.Errorf("msgpack: map key of type %T cannot be a Go map key", k)
		}
		if anyKeys == nil {
			anyKeys = make(map[any]any, len(strKeys)+1)
			for s, v := range strKeys {
				anyKeys[s] = v
			}
		}
		anyKeys[k] = v
	}
	if anyKeys != nil {
		return anyKeys, nil
	}
	return strKeys, nil
}

// maxPooledBuffer is the largest encoding buffer kept for reuse, so one huge
// payload does not pin its buffer in the pool.
const maxPooledBuffer = 64 << 10

// msgpackNil is the encoding of nil: what an absent payload decodes as.
var msgpackNil = []byte{0xc0}

// EncodePayload returns the msgpack encoding of v, for Envelope.Payload.
// Structs are encoded by their `msgpack` field tags, map keys are sorted (so
// the encoding is deterministic) and integers take their shortest form. A
// []byte is encoded as msgpack bin like any other value; to embed bytes that
// already are msgpack, pass msgpack.RawMessage. v == nil (or any value that
// encodes to msgpack nil) returns nil: no payload.
//
// The error, if any, is the msgpack library's (a type it cannot encode),
// wrapped with context.
func EncodePayload(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	p := encoders.Get().(*payloadEncoder)
	defer func() {
		if p.buf.Cap() <= maxPooledBuffer {
			encoders.Put(p)
		}
	}()
	p.buf.Reset()
	p.enc.Reset(&p.buf)
	p.enc.SetSortMapKeys(true)
	p.enc.UseCompactInts(true)
	if err := p.enc.Encode(v); err != nil {
		return nil, fmt.Errorf("envelope: encode payload: %w", err)
	}
	if bytes.Equal(p.buf.Bytes(), msgpackNil) {
		return nil, nil
	}
	return bytes.Clone(p.buf.Bytes()), nil
}

// DecodePayload decodes e.Payload into v, which must be a non-nil pointer.
// Structs are filled by their `msgpack` field tags. Values decoded into
// interfaces (v of type *any, *map[string]any, or such fields in a struct) get
// int64 or uint64 for every integer and float64 for every float, never the
// smallest type that fits; msgpack bin decoded into an interface becomes a
// string (the msgpack library's loose decoding); maps decoded into interfaces
// are map[string]any, or map[any]any when a key is not a string. An empty
// payload decodes as
// msgpack nil: v is set to its zero value.
//
// Errors wrap ErrMalformed together with the msgpack library's error (the
// payload does not fit v), or are a *FieldError wrapping ErrMalformed when the
// payload is not exactly one msgpack value within MaxPayloadDepth (checked
// before decoding, so hostile lengths cannot make the library allocate). A
// panic inside the msgpack library is recovered and reported as ErrMalformed.
func (e *Envelope) DecodePayload(v any) (err error) {
	data := e.Payload
	if len(data) == 0 {
		data = msgpackNil
	}
	// Check the structure first: the msgpack library allocates what lengths
	// declare (an array header claiming 2^32 elements makes it allocate
	// gigabytes), and this scan guarantees every declared element is there.
	end, err := skipValue(data, 0)
	if err != nil {
		return malformed("payload", err)
	}
	if end != len(data) {
		return malformedf("payload", end, "%d bytes after the first msgpack value", len(data)-end)
	}
	if pv, ok := v.(*any); ok && pv != nil {
		// The library decodes into the value an interface already holds, and
		// fails when that is not a pointer; start from nil instead.
		*pv = nil
	}
	p := decoders.Get().(*payloadDecoder)
	p.rd.Reset(data)
	p.dec.Reset(&p.rd)
	p.dec.UseLooseInterfaceDecoding(true)
	p.dec.SetMapDecoder(decodeAnyMap)
	defer func() {
		// The payload is untrusted input and the msgpack library panics on
		// some of it (for example an array as a key of a map[any]any field).
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: payload: msgpack library panicked: %v", ErrMalformed, r)
			return // do not pool a decoder left in an unknown state
		}
		p.rd.Reset(nil) // do not keep the payload alive from the pool
		decoders.Put(p)
	}()
	if err = p.dec.Decode(v); err != nil {
		return fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	return nil
}
