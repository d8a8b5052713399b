package envelope

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

func TestJSONRoundTrip(t *testing.T) {
	for name, e := range map[string]*Envelope{
		"minimal":        goldenMinimal(),
		"all fields":     goldenAllFields(),
		"payload nested": func() *Envelope { e := goldenMinimal(); e.Payload = nestedPayload(); return e }(),
	} {
		t.Run(name, func(t *testing.T) {
			first, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var back Envelope
			if err := json.Unmarshal(first, &back); err != nil {
				t.Fatal(err)
			}
			second, err := json.Marshal(&back)
			if err != nil {
				t.Fatal(err)
			}
			if string(first) != string(second) {
				t.Errorf("JSON form changed on a round trip:\n%s\n%s", first, second)
			}
			// Everything but the payload's msgpack types survives exactly.
			want := *e
			want.Payload = back.Payload
			if !reflect.DeepEqual(back, want) {
				t.Errorf("envelope changed:\n got %+v\nwant %+v", back, want)
			}
		})
	}
}

func TestJSONPayloadTypes(t *testing.T) {
	e := goldenAllFields()
	j, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Envelope
	if err := back.UnmarshalJSON(j); err != nil {
		t.Fatal(err)
	}
	if string(back.Payload) != string(e.Payload) {
		t.Errorf("payload %x, want %x (sorted keys, compact ints)", back.Payload, e.Payload)
	}
	src := `{"id":"x","payload":{"i":-3,"big":18446744073709551615,"f":1.5,"e":1e3,"z":-0,"s":"s","n":null,"a":[true]}}`
	if err := back.UnmarshalJSON([]byte(src)); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := msgpack.Unmarshal(back.Payload, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"i": int8(-3), "big": uint64(math.MaxUint64), "f": 1.5, "e": 1000.0, "z": math.Copysign(0, -1),
		"s": "s", "n": nil, "a": []any{true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("payload decodes as %#v, want %#v", got, want)
	}
	if math.Signbit(got["z"].(float64)) != true {
		t.Error("-0 lost its sign")
	}
}

func TestMarshalJSONShape(t *testing.T) {
	e := goldenMinimal()
	e.Sender = "<a&b>"
	e.Timestamp = time.Date(2025, 6, 1, 14, 0, 0, 500, time.FixedZone("X", 2*3600))
	e.Payload = msgpack.RawMessage{0xc0}
	var m map[string]any
	j, err := json.Marshal(*e) // a value, not a pointer
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(j, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"id": e.ID, "version": "1", "sender": "<a&b>", "recipient": "summarizer",
		"payload_type": "task.request", "timestamp": "2025-06-01T12:00:00.0000005Z",
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("JSON form %s, want the keys %v", j, want)
	}
	// json.Marshal escapes HTML in a Marshaler's output; MarshalJSON does not.
	if direct, _ := e.MarshalJSON(); !strings.Contains(string(direct), `"sender":"<a&b>"`) {
		t.Errorf("HTML characters escaped: %s", direct)
	}
	if !strings.HasPrefix(string(j), `{"id":`) {
		t.Errorf("keys not in wire order: %s", j)
	}
}

func TestUnmarshalJSONErrors(t *testing.T) {
	tests := map[string]string{
		"not JSON":            `{"id":`,
		"wrong type":          `{"id":1}`,
		"bad timestamp":       `{"timestamp":"yesterday"}`,
		"bad deadline":        `{"deadline":"2025-13-01T00:00:00Z"}`,
		"number out of range": `{"payload":1e400}`,
		"payload too deep":    `{"payload":` + strings.Repeat("[", MaxPayloadDepth+1) + strings.Repeat("]", MaxPayloadDepth+1) + `}`,
	}
	for name, src := range tests {
		var e Envelope
		if err := e.UnmarshalJSON([]byte(src)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	deepest := `{"payload":` + strings.Repeat("[", MaxPayloadDepth) + strings.Repeat("]", MaxPayloadDepth) + `}`
	var e Envelope
	if err := e.UnmarshalJSON([]byte(deepest)); err != nil {
		t.Errorf("payload exactly MaxPayloadDepth deep: %v", err)
	}
	if _, err := Marshal(&e); err != nil {
		t.Errorf("payload from JSON does not marshal: %v", err)
	}
	e = *goldenMinimal()
	if err := json.Unmarshal([]byte("null"), &e); err != nil || e.ID != goldenMinimal().ID {
		t.Errorf("null: %v, envelope %+v; want unchanged", err, e)
	}
}

func TestPayloadJSON(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    string
	}{
		{"empty", nil, `null`},
		{"nil", []byte{0xc0}, `null`},
		{"float32 keeps its short form", []byte{0xca, 0x3d, 0xcc, 0xcc, 0xcd}, `0.1`},
		{"bin is base64", []byte{0xc4, 3, 'a', 'b', 'c'}, `"YWJj"`},
		{"bool and int keys", []byte{0x82, 0xc3, 0x01, 0xd0, 0xfe, 0x02}, `{"-2":2,"true":1}`},
		{"bin key", []byte{0x81, 0xc4, 1, 0xff, 0x01}, `{"/w==":1}`},
		{"array key", []byte{0x81, 0x92, 0x01, 0x02, 0x03}, `{"[1 2]":3}`},
		{"timestamp", []byte{0xd6, 0xff, 0, 0, 0, 1}, `"1970-01-01T00:00:01Z"`},
		{"html", []byte{0xa3, '<', '&', '>'}, `"<&>"`},
	}
	for _, tt := range tests {
		got, err := PayloadJSON(tt.payload)
		if err != nil || string(got) != tt.want {
			t.Errorf("%s: PayloadJSON = %s, %v; want %s", tt.name, got, err, tt.want)
		}
	}
	for name, p := range map[string][]byte{
		"truncated":      {0x92, 0x01},
		"two values":     {0x01, 0x01},
		"huge array":     {0xdd, 0xff, 0xff, 0xff, 0xff},
		"too deep":       append([]byte(strings.Repeat("\x91", MaxPayloadDepth+1)), 0xc0),
		"bad timestamp":  {0xd6, 0xff, 0, 0, 0},
		"nanos too high": {0xd7, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
	} {
		if _, err := PayloadJSON(p); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
	for name, p := range map[string][]byte{
		"NaN":           {0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1},
		"other ext":     {0xd4, 0x05, 0x00},
		"ext in a list": {0x91, 0xd4, 0x05, 0x00},
	} {
		if _, err := PayloadJSON(p); err == nil || errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want a not-representable error", name, err)
		}
	}
	e := goldenMinimal()
	e.Payload = []byte{0xd4, 0x05, 0x00}
	if _, err := e.MarshalJSON(); err == nil {
		t.Error("MarshalJSON of a payload without JSON form succeeded")
	}
}

// TestIntegersBeyond64BitsAreRefused: as a float64 such an integer would
// keep only its first 17 digits, silently.
func TestIntegersBeyond64BitsAreRefused(t *testing.T) {
	for _, in := range []string{`18446744073709551616`, `{"id":123456789012345678901234567890}`, `[-9223372036854775809]`} {
		if _, err := PayloadFromJSON([]byte(in)); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "64 bits") {
			t.Errorf("%s: err = %v, want ErrMalformed naming the 64-bit limit", in, err)
		}
	}
	for _, in := range []string{`18446744073709551615`, `-9223372036854775808`, `1e30`, `1.5`} {
		if _, err := PayloadFromJSON([]byte(in)); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
}

// Found by FuzzUnmarshal: encoding/json writes 2.031312e20 as
// 203131200000000000000, which the JSON form then refused as an integer
// beyond 64 bits; MarshalJSON's output must always decode.
func TestALargeFloatSurvivesTheJSONForm(t *testing.T) {
	for _, f := range []float64{2.031312e20, 1e20, -9.3e19, 18446744073709551616} {
		env, err := New("a", "b", TaskRequest, map[string]any{"f": f})
		if err != nil {
			t.Fatal(err)
		}
		j, err := env.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back Envelope
		if err := back.UnmarshalJSON(j); err != nil {
			t.Fatalf("%g: the JSON form %s does not decode: %v", f, j, err)
		}
		var got map[string]float64
		if err := back.DecodePayload(&got); err != nil || got["f"] != f {
			t.Fatalf("%g came back as %v (%v) from %s", f, got, err, j)
		}
	}
}
