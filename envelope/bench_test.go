package envelope

import (
	"strings"
	"testing"
	"time"
)

// benchEnvelope is a realistic request: ten fields and a map payload of
// about 256 bytes.
func benchEnvelope() *Envelope {
	payload := mustEncode(map[string]any{
		"text":      strings.Repeat("The quick brown fox jumps over the lazy dog. ", 3),
		"max_words": 50,
		"language":  "en",
		"options":   map[string]any{"temperature": 0.7, "top_k": 40, "stream": false, "model": "small-2025-05"},
		"tags":      []string{"news", "summary", "batch-7"},
	})
	return &Envelope{
		ID:          "01JWNNSVG0PVNVBFMY4A50SXM1",
		Version:     WireVersion,
		Sender:      "client-7f3a",
		Recipient:   "summarizer",
		PayloadType: TaskRequest,
		Payload:     payload,
		TraceID:     "4bf92f3577b34da6a3ce929d0e0e4736",
		Timestamp:   time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC),
		ReplyTo:     "jetagent.replies.client-7f3a",
		TaskID:      "task-000042",
	}
}

func TestBenchEnvelopeShape(t *testing.T) {
	e := benchEnvelope()
	if n := len(e.Payload); n < 230 || n > 280 {
		t.Errorf("payload is %d bytes, want about 256", n)
	}
	if n := len(wireKeys(t, mustMarshal(t, e))); n != 10 {
		t.Errorf("%d fields, want 10", n)
	}
}

func BenchmarkMarshal(b *testing.B) {
	e := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Marshal(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendMarshal(b *testing.B) {
	e := benchEnvelope()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = AppendMarshal(buf[:0], e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	data, _ := Marshal(benchEnvelope())
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		var e Envelope
		if err := Unmarshal(data, &e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	e := benchEnvelope()
	data, _ := Marshal(e)
	l := Limits{ReceivedAt: e.Timestamp, Now: func() time.Time { return e.Timestamp }}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(data, l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	e := benchEnvelope()
	l := Limits{ReceivedAt: e.Timestamp, Now: func() time.Time { return e.Timestamp }}
	b.ReportAllocs()
	for b.Loop() {
		if err := e.Validate(l); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePayload(b *testing.B) {
	e := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		var v map[string]any
		if err := e.DecodePayload(&v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewID(b *testing.B) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = NewID()
		}
	})
}

func BenchmarkNew(b *testing.B) {
	payload := map[string]any{"text": "hello", "max_words": 50}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New("client", "summarizer", TaskRequest, payload); err != nil {
			b.Fatal(err)
		}
	}
}
