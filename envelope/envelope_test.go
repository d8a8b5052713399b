package envelope

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/vmihailenco/msgpack/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type summarize struct {
	Text     string `msgpack:"text"`
	MaxWords int    `msgpack:"max_words"`
}

func TestNew(t *testing.T) {
	before := time.Now()
	e, err := New("client-1", "summarizer", TaskRequest, summarize{Text: "hi", MaxWords: 3})
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ulid.ParseStrict(e.ID); err != nil {
		t.Errorf("ID %q is not a ULID: %v", e.ID, err)
	}
	if e.Version != WireVersion || e.Sender != "client-1" || e.Recipient != "summarizer" || e.PayloadType != TaskRequest {
		t.Errorf("header fields wrong: %+v", e)
	}
	if e.Timestamp.Location() != time.UTC || e.Timestamp.Before(before.Add(-time.Millisecond)) || e.Timestamp.After(after) {
		t.Errorf("Timestamp %v not UTC or not between %v and %v", e.Timestamp, before, after)
	}
	if len(e.TraceID) != 32 {
		t.Errorf("TraceID %q", e.TraceID)
	}
	var got summarize
	if err := e.DecodePayload(&got); err != nil || got != (summarize{"hi", 3}) {
		t.Errorf("DecodePayload = %+v, %v", got, err)
	}
	if err := e.Validate(Limits{}); err != nil {
		t.Errorf("a new envelope does not validate: %v", err)
	}

	empty, err := New("a", "b", TaskCancel, nil)
	if err != nil || empty.Payload != nil {
		t.Errorf("New with nil payload: Payload %x, err %v; want nil, nil", empty.Payload, err)
	}
	if _, err := New("a", "b", TaskRequest, make(chan int)); err == nil {
		t.Error("New with an unencodable payload succeeded")
	}
}

func TestNewReply(t *testing.T) {
	req, err := New("client-1", "summarizer", TaskRequest, "text")
	if err != nil {
		t.Fatal(err)
	}
	req.TaskID = "task-9"
	req.ReplyTo = "jetagent.replies.client-1"
	req.Deadline = time.Now().Add(time.Minute)
	req.Extensions = map[string]string{"k": "v"}
	rep, err := req.NewReply(TaskResponse, map[string]int{"words": 1})
	if err != nil {
		t.Fatal(err)
	}
	want := Envelope{
		ID: DeriveID(req.ID, "reply"), Version: WireVersion, Sender: "summarizer", Recipient: "client-1",
		PayloadType: TaskResponse, Payload: rep.Payload, CorrelationID: req.ID, TraceID: req.TraceID,
		Timestamp: rep.Timestamp, TaskID: "task-9",
	}
	if !reflect.DeepEqual(*rep, want) {
		t.Errorf("reply\n got %+v\nwant %+v", *rep, want)
	}
	again, _ := req.NewReply(TaskResponse, nil)
	if again.ID != rep.ID {
		t.Errorf("second reply to one request has id %s, first %s", again.ID, rep.ID)
	}
	if rep.Timestamp.Location() != time.UTC || rep.Timestamp.Before(req.Timestamp) {
		t.Errorf("reply timestamp %v (request %v)", rep.Timestamp, req.Timestamp)
	}
	var words map[string]int
	if err := rep.DecodePayload(&words); err != nil || words["words"] != 1 {
		t.Errorf("DecodePayload = %v, %v", words, err)
	}
	if _, err := req.NewReply(TaskResponse, func() {}); err == nil {
		t.Error("NewReply with an unencodable payload succeeded")
	}
}

func TestEncodePayload(t *testing.T) {
	b, err := EncodePayload(map[string]any{"b": 1, "a": int64(2), "c": []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	// Sorted keys, shortest integers, []byte as bin.
	want := []byte{0x83, 0xa1, 'a', 0x02, 0xa1, 'b', 0x01, 0xa1, 'c', 0xc4, 0x01, 0x01}
	if !bytes.Equal(b, want) {
		t.Errorf("EncodePayload = %x, want %x", b, want)
	}
	raw, _ := EncodePayload(msgpack.RawMessage{0x92, 0x01, 0x02})
	if !bytes.Equal(raw, []byte{0x92, 0x01, 0x02}) {
		t.Errorf("RawMessage is embedded as %x", raw)
	}
	var nilPtr *summarize
	if b, err := EncodePayload(nilPtr); b != nil || err != nil {
		t.Errorf("typed nil encodes as %x, %v; want no payload", b, err)
	}
	// The result does not share the pooled buffer.
	first, _ := EncodePayload("first")
	_, _ = EncodePayload("second")
	if string(first[1:]) != "first" {
		t.Errorf("an earlier result changed: %q", first)
	}
}

func TestDecodePayloadLoose(t *testing.T) {
	e := &Envelope{Payload: nestedPayload()}
	var v any
	if err := e.DecodePayload(&v); err != nil {
		t.Fatal(err)
	}
	m := v.(map[string]any)
	ints := m["ints"].([]any)
	for i, want := range []any{int64(7), uint64(200), uint64(60000), uint64(4000000000), uint64(18446744073709551615),
		int64(-5), int64(-100), int64(-30000), int64(-2000000000), int64(-9223372036854775808)} {
		if ints[i] != want {
			t.Errorf("ints[%d] = %#v, want %#v", i, ints[i], want)
		}
	}
	if f := m["floats"].([]any); f[0] != float64(1.5) || f[1] != -0.1 {
		t.Errorf("floats = %#v, want float64s", f)
	}
	if byNumber, ok := m["by_number"].(map[any]any); !ok || byNumber[int64(3)] != "three" {
		t.Errorf("map with integer keys decoded as %#v", m["by_number"])
	}
	var sm map[string]any
	if err := (&Envelope{Payload: mustEncode(map[string]any{"n": 1})}).DecodePayload(&sm); err != nil || sm["n"] != int64(1) {
		t.Errorf("into map[string]any: %#v, %v", sm, err)
	}
}

func TestDecodePayloadEmptyAndErrors(t *testing.T) {
	s := summarize{Text: "old", MaxWords: 1}
	if err := (&Envelope{}).DecodePayload(&s); err != nil || s != (summarize{}) {
		t.Errorf("empty payload: %+v, %v; want zero value, nil", s, err)
	}
	var v any = "old"
	if err := (&Envelope{}).DecodePayload(&v); err != nil || v != nil {
		t.Errorf("empty payload into any: %#v, %v", v, err)
	}
	tests := map[string][]byte{
		"wrong type":         mustEncode("a string"),
		"truncated":          {0x92, 0x01},
		"trailing bytes":     {0x01, 0x02},
		"array as map key":   {0x81, 0x91, 0x01, 0x02},
		"never-used byte":    {0xc1},
		"huge declared size": {0xdd, 0xff, 0xff, 0xff, 0xff},
	}
	for name, p := range tests {
		var n int
		var anyV any
		var mm map[any]any
		for _, target := range []any{&n, &anyV, &mm} {
			if name == "wrong type" && target != any(&n) {
				continue
			}
			err := (&Envelope{Payload: p}).DecodePayload(target)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%s into %T: err = %v, want ErrMalformed", name, target, err)
			}
		}
	}
}
