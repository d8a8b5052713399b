package envelope

// The three codec designs compared in docs/adr/0001-envelope-codec.md, on the
// same envelope and the same wire format:
//
//	reflect: msgpack struct tags on a mirror struct, library Marshal/Unmarshal;
//	custom:  msgpack.CustomEncoder/CustomDecoder written against the library's
//	         Encoder/Decoder API;
//	append:  this package's hand-written append encoder and byte-slice parser
//	         (Marshal/Unmarshal), the one chosen.
//
// TestCodecDesignsAgree proves the three produce and accept the same bytes, so
// the benchmarks compare like with like.
//
//	go test -run '^$' -bench BenchmarkCodec -benchmem -count 5 ./envelope

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// ---- (a) reflection over struct tags ----

type reflectEnvelope struct {
	ID             string             `msgpack:"id"`
	Version        string             `msgpack:"version"`
	Sender         string             `msgpack:"sender"`
	Recipient      string             `msgpack:"recipient"`
	PayloadType    string             `msgpack:"payload_type"`
	Payload        msgpack.RawMessage `msgpack:"payload,omitempty"`
	CorrelationID  string             `msgpack:"correlation_id,omitempty"`
	TraceID        string             `msgpack:"trace_id,omitempty"`
	Timestamp      time.Time          `msgpack:"timestamp"`
	ReplyTo        string             `msgpack:"reply_to,omitempty"`
	TaskID         string             `msgpack:"task_id,omitempty"`
	Deadline       time.Time          `msgpack:"deadline,omitempty"`
	IdempotencyKey string             `msgpack:"idempotency_key,omitempty"`
	Extensions     map[string]string  `msgpack:"extensions,omitempty"`
}

func reflectMarshal(e *Envelope) ([]byte, error) {
	r := reflectEnvelope{
		e.ID, e.Version, e.Sender, e.Recipient, string(e.PayloadType), e.Payload, e.CorrelationID,
		e.TraceID, e.Timestamp, e.ReplyTo, e.TaskID, e.Deadline, e.IdempotencyKey, e.Extensions,
	}
	var buf bytes.Buffer
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)
	enc.SetSortMapKeys(true) // extensions in canonical order
	if err := enc.Encode(&r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func reflectUnmarshal(data []byte, e *Envelope) error {
	var r reflectEnvelope
	if err := msgpack.Unmarshal(data, &r); err != nil {
		return err
	}
	*e = Envelope{
		r.ID, r.Version, r.Sender, r.Recipient, PayloadType(r.PayloadType), []byte(r.Payload), r.CorrelationID,
		r.TraceID, utcOrZero(r.Timestamp), r.ReplyTo, r.TaskID, utcOrZero(r.Deadline), r.IdempotencyKey, r.Extensions,
	}
	return nil
}

func utcOrZero(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC()
}

// ---- (b) CustomEncoder / CustomDecoder ----

type customEnvelope Envelope

var (
	_ msgpack.CustomEncoder = (*customEnvelope)(nil)
	_ msgpack.CustomDecoder = (*customEnvelope)(nil)
)

func (c *customEnvelope) EncodeMsgpack(enc *msgpack.Encoder) error {
	e := (*Envelope)(c)
	n := 6
	for _, present := range []bool{payloadPresent(e.Payload), e.CorrelationID != "", e.TraceID != "",
		e.ReplyTo != "", e.TaskID != "", !e.Deadline.IsZero(), e.IdempotencyKey != "", len(e.Extensions) > 0} {
		if present {
			n++
		}
	}
	if err := enc.EncodeMapLen(n); err != nil {
		return err
	}
	str := func(key, v string, optional bool) error {
		if optional && v == "" {
			return nil
		}
		if err := enc.EncodeString(key); err != nil {
			return err
		}
		return enc.EncodeString(v)
	}
	for _, err := range []error{
		str("id", e.ID, false), str("version", e.Version, false), str("sender", e.Sender, false),
		str("recipient", e.Recipient, false), str("payload_type", string(e.PayloadType), false),
	} {
		if err != nil {
			return err
		}
	}
	if payloadPresent(e.Payload) {
		if err := enc.EncodeString("payload"); err != nil {
			return err
		}
		if err := msgpack.RawMessage(e.Payload).EncodeMsgpack(enc); err != nil {
			return err
		}
	}
	if err := str("correlation_id", e.CorrelationID, true); err != nil {
		return err
	}
	if err := str("trace_id", e.TraceID, true); err != nil {
		return err
	}
	if err := enc.EncodeString("timestamp"); err != nil {
		return err
	}
	if err := enc.EncodeTime(e.Timestamp); err != nil {
		return err
	}
	if err := str("reply_to", e.ReplyTo, true); err != nil {
		return err
	}
	if err := str("task_id", e.TaskID, true); err != nil {
		return err
	}
	if !e.Deadline.IsZero() {
		if err := enc.EncodeString("deadline"); err != nil {
			return err
		}
		if err := enc.EncodeTime(e.Deadline); err != nil {
			return err
		}
	}
	if err := str("idempotency_key", e.IdempotencyKey, true); err != nil {
		return err
	}
	if len(e.Extensions) > 0 {
		if err := enc.EncodeString("extensions"); err != nil {
			return err
		}
		enc.SetSortMapKeys(true)
		if err := enc.Encode(e.Extensions); err != nil {
			return err
		}
	}
	return nil
}

func (c *customEnvelope) DecodeMsgpack(dec *msgpack.Decoder) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	e := Envelope{}
	for range n {
		key, err := dec.DecodeString()
		if err != nil {
			return err
		}
		var s *string
		switch key {
		case "id":
			s = &e.ID
		case "version":
			s = &e.Version
		case "sender":
			s = &e.Sender
		case "recipient":
			s = &e.Recipient
		case "payload_type":
			var v string
			v, err = dec.DecodeString()
			e.PayloadType = PayloadType(v)
		case "payload":
			var raw msgpack.RawMessage
			raw, err = dec.DecodeRaw()
			e.Payload = raw
		case "correlation_id":
			s = &e.CorrelationID
		case "trace_id":
			s = &e.TraceID
		case "timestamp":
			e.Timestamp, err = dec.DecodeTime()
			e.Timestamp = utcOrZero(e.Timestamp)
		case "reply_to":
			s = &e.ReplyTo
		case "task_id":
			s = &e.TaskID
		case "deadline":
			e.Deadline, err = dec.DecodeTime()
			e.Deadline = utcOrZero(e.Deadline)
		case "idempotency_key":
			s = &e.IdempotencyKey
		case "extensions":
			var m map[string]string
			err = dec.Decode(&m)
			e.Extensions = m
		default:
			err = dec.Skip()
		}
		if s != nil {
			*s, err = dec.DecodeString()
		}
		if err != nil {
			return err
		}
	}
	*c = customEnvelope(e)
	return nil
}

func customMarshal(e *Envelope) ([]byte, error) { return msgpack.Marshal((*customEnvelope)(e)) }

func customUnmarshal(data []byte, e *Envelope) error {
	return msgpack.Unmarshal(data, (*customEnvelope)(e))
}

// ---- comparison ----

type codecDesign struct {
	name      string
	marshal   func(*Envelope) ([]byte, error)
	unmarshal func([]byte, *Envelope) error
}

var codecDesigns = []codecDesign{
	{"reflect", reflectMarshal, reflectUnmarshal},
	{"custom", customMarshal, customUnmarshal},
	{"append", Marshal, Unmarshal},
}

func TestCodecDesignsAgree(t *testing.T) {
	for _, e := range []*Envelope{benchEnvelope(), goldenAllFields(), goldenMinimal()} {
		want := mustMarshal(t, e)
		for _, d := range codecDesigns {
			got, err := d.marshal(e)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: marshal = %x, %v\nwant %x", d.name, got, err, want)
			}
			var back Envelope
			if err := d.unmarshal(want, &back); err != nil || !reflect.DeepEqual(&back, e) {
				t.Errorf("%s: unmarshal = %+v, %v\nwant %+v", d.name, back, err, *e)
			}
		}
	}
}

func BenchmarkCodec(b *testing.B) {
	e := benchEnvelope()
	data := mustMarshalB(b, e)
	for _, d := range codecDesigns {
		b.Run(d.name+"/marshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.marshal(e); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(d.name+"/unmarshal", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var out Envelope
				if err := d.unmarshal(data, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustMarshalB(b *testing.B, e *Envelope) []byte {
	data, err := Marshal(e)
	if err != nil {
		b.Fatal(err)
	}
	return data
}
