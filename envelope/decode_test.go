package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestUnmarshalDoesNotAliasInput(t *testing.T) {
	want := goldenAllFields()
	data := mustMarshal(t, want)
	var e Envelope
	if err := Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	for i := range data { // the caller reuses its buffer
		data[i] = 0xff
	}
	if !reflect.DeepEqual(&e, want) {
		t.Errorf("envelope changed with its input buffer:\n got %+v\nwant %+v", e, *want)
	}
}

func TestUnmarshalOverwritesTarget(t *testing.T) {
	stale := goldenAllFields()
	min := mustMarshal(t, goldenMinimal())
	e := *stale
	if err := Unmarshal(min, &e); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&e, goldenMinimal()) {
		t.Errorf("fields of the previous envelope survived: %+v", e)
	}
	e = *stale
	if err := Unmarshal(min[:len(min)-1], &e); err == nil {
		t.Fatal("truncated input decoded")
	}
	if !reflect.DeepEqual(e, Envelope{}) {
		t.Errorf("after an error the target is %+v, want the zero Envelope", e)
	}
	if err := Unmarshal(min, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Unmarshal into nil = %v, want ErrMalformed", err)
	}
}

func TestUnmarshalNilMeansAbsent(t *testing.T) {
	data := rawMap(append(minimalFields(),
		"trace_id", nil, "reply_to", nil, "payload", nil, "deadline", nil, "extensions", map[string]string{})...)
	var e Envelope
	if err := Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&e, goldenMinimal()) {
		t.Errorf("got %+v, want the minimal envelope", e)
	}
	if e.Payload != nil || e.Extensions != nil {
		t.Errorf("Payload %v, Extensions %v: want nil for absent values", e.Payload, e.Extensions)
	}
}

func TestUnmarshalAcceptsEveryTimestampForm(t *testing.T) {
	sec := goldenT0.Unix()
	forms := map[string][]byte{
		"fixext4":    binary.BigEndian.AppendUint32([]byte{0xd6, 0xff}, uint32(sec)),
		"fixext8":    binary.BigEndian.AppendUint64([]byte{0xd7, 0xff}, uint64(sec)),
		"ext8 len12": binary.BigEndian.AppendUint64([]byte{0xc7, 12, 0xff, 0, 0, 0, 0}, uint64(sec)),
		"ext8 len4":  binary.BigEndian.AppendUint32([]byte{0xc7, 4, 0xff}, uint32(sec)),
		"ext16 len8": binary.BigEndian.AppendUint64([]byte{0xc8, 0, 8, 0xff}, uint64(sec)),
		"ext32 len4": binary.BigEndian.AppendUint32([]byte{0xc9, 0, 0, 0, 4, 0xff}, uint32(sec)),
	}
	for name, ts := range forms {
		var e Envelope
		if err := Unmarshal(rawMap(replaceField(minimalFields(), "timestamp", ts)...), &e); err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if e.Timestamp != goldenT0 {
			t.Errorf("%s: timestamp %v, want %v", name, e.Timestamp, goldenT0)
		}
	}
}

// TestUnmarshalMalformed covers the syntax errors that the golden vectors do
// not; each must be reported as ErrMalformed naming the right field.
func TestUnmarshalMalformed(t *testing.T) {
	min := minimalFields()
	var beforeYear1 uint64 = 1<<64 - 1 + minUnixSeconds // two's complement of minUnixSeconds-1
	with := func(key string, raw []byte) []byte { return rawMap(replaceField(min, key, raw)...) }
	tests := []struct {
		name  string
		data  []byte
		field string
	}{
		{"empty input", nil, ""},
		{"nil", []byte{0xc0}, ""},
		{"never-used byte", []byte{0xc1}, ""},
		{"map count larger than entries", append([]byte{0x87}, rawMap(min...)[1:]...), ""},
		{"key truncated", []byte{0x81, 0xa5, 'a'}, ""},
		{"str8 length truncated", []byte{0x81, 0xd9}, ""},
		{"map16 length truncated", []byte{0xde, 0x00}, ""},
		{"bin key", []byte{0x81, 0xc4, 1, 'a', 0xc0}, ""},
		{"value missing", []byte{0x81, 0xa2, 'i', 'd'}, "id"},
		{"timestamp wrong ext type", with("timestamp", []byte{0xd6, 0x05, 0, 0, 0, 1}), "timestamp"},
		{"timestamp 16 bytes", with("timestamp", append([]byte{0xd8, 0xff}, make([]byte, 16)...)), "timestamp"},
		{"timestamp 5 bytes", with("timestamp", []byte{0xc7, 5, 0xff, 0, 0, 0, 0, 1}), "timestamp"},
		{"timestamp ext8 type missing", []byte{0x81, 0xa9, 't', 'i', 'm', 'e', 's', 't', 'a', 'm', 'p', 0xc7, 0}, "timestamp"},
		{"timestamp as int", with("timestamp", []byte{0xce, 0x68, 0x3c, 0x40, 0xc0}), "timestamp"},
		{"timestamp after 9999", with("timestamp",
			binary.BigEndian.AppendUint64([]byte{0xc7, 12, 0xff, 0, 0, 0, 0}, maxUnixSeconds+1)), "timestamp"},
		{"timestamp before year 1", with("timestamp",
			binary.BigEndian.AppendUint64([]byte{0xc7, 12, 0xff, 0, 0, 0, 0}, beforeYear1)), "timestamp"},
		{"deadline bool", rawMap(append(slices.Clone(min), "deadline", true)...), "deadline"},
		{"payload_type array", with("payload_type", []byte{0x91, 0xa1, 'x'}), "payload_type"},
		{"extensions array", rawMap(append(slices.Clone(min), "extensions", []string{"a"})...), "extensions"},
		{"extensions bin key", rawMap(append(slices.Clone(min), "extensions", []byte{0x81, 0xc4, 1, 'k', 0xa1, 'v'})...), "extensions"},
		{"extensions duplicate key", rawMap(append(slices.Clone(min), "extensions",
			[]byte{0x82, 0xa1, 'k', 0xa1, 'v', 0xa1, 'k', 0xa1, 'w'})...), "extensions"},
		{"extensions truncated", rawMap(append(slices.Clone(min), "extensions", []byte{0x82, 0xa1, 'k', 0xa1, 'v'})...), "extensions"},
		{"payload with never-used byte", rawMap(append(slices.Clone(min), "payload", []byte{0x92, 0x01, 0xc1})...), "payload"},
		{"unknown key value truncated", rawMap(append(slices.Clone(min), "x_later", []byte{0xdc, 0xff, 0xff})...), "x_later"},
		{"long unknown key", rawMap(append(slices.Clone(min), strings.Repeat("k", 100)+"\xff", []byte{0xc1})...),
			strings.Repeat("k", 64) + "..."},
		{"unknown key not UTF-8", rawMap(append(slices.Clone(min), "a\xffb", []byte{0xc1})...), "a\uFFFDb"},
		{"unknown key value too deep", rawMap(append(slices.Clone(min), "x_deep",
			append(bytes.Repeat([]byte{0x81, 0xa0}, MaxPayloadDepth+1), 0xc0))...), "x_deep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Envelope
			err := Unmarshal(tt.data, &e)
			var fe *FieldError
			if !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) || fe.Field != tt.field || fe.Detail == "" {
				t.Fatalf("Unmarshal(%x) = %v; want ErrMalformed in *FieldError{Field: %q} with a detail", tt.data, err, tt.field)
			}
			if !reflect.DeepEqual(e, Envelope{}) {
				t.Errorf("target not zero after error: %+v", e)
			}
		})
	}
}

// TestUnmarshalBoundedAllocation feeds short inputs that declare huge lengths
// and checks that the decoder does not allocate for what is not there.
func TestUnmarshalBoundedAllocation(t *testing.T) {
	u32 := []byte{0xff, 0xff, 0xff, 0xff}
	pad := func(b []byte) []byte { // every hostile input is exactly 32 bytes
		if len(b) > 32 {
			t.Fatalf("hostile input is %d bytes", len(b))
		}
		return append(b, bytes.Repeat([]byte{0xa0}, 32-len(b))...)
	}
	inputs := map[string][]byte{
		"map32 envelope":     pad(append([]byte{0xdf}, u32...)),
		"str32 key":          pad(append([]byte{0x81, 0xdb}, u32...)),
		"str32 value":        pad(append([]byte{0x81, 0xa6, 's', 'e', 'n', 'd', 'e', 'r', 0xdb}, u32...)),
		"array32 payload":    pad(append([]byte{0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xdd}, u32...)),
		"map32 payload":      pad(append([]byte{0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xdf}, u32...)),
		"bin32 payload":      pad(append([]byte{0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc6}, u32...)),
		"ext32 payload":      pad(append([]byte{0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0xc9}, u32...)),
		"map32 extensions":   pad(append([]byte{0x81, 0xaa, 'e', 'x', 't', 'e', 'n', 's', 'i', 'o', 'n', 's', 0xdf}, u32...)),
		"map16 extensions":   pad([]byte{0x81, 0xaa, 'e', 'x', 't', 'e', 'n', 's', 'i', 'o', 'n', 's', 0xde, 0xff, 0xff}),
		"nested array32s":    pad(append(append(append([]byte{0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd', 0x91, 0x91, 0xdd}, u32...), 0xdd), u32...)),
		"unknown key array":  pad(append([]byte{0x81, 0xa1, 'x', 0xdd}, u32...)),
		"many unknown keys":  pad([]byte{0x8f, 0xa1, 'a', 0xc0, 0xa1, 'b', 0xc0, 0xa1, 'c', 0xc0, 0xa1, 'd', 0xc0}),
		"huge deep payloads": pad(append([]byte{0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd'}, bytes.Repeat([]byte{0xdd, 0, 0, 0, 1}, 4)...)),
	}
	const limit = 64 << 10
	for name, data := range inputs {
		t.Run(name, func(t *testing.T) {
			if err := Unmarshal(data, new(Envelope)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal = %v, want ErrMalformed", err)
			}
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				_ = Unmarshal(data, new(Envelope))
			}
			runtime.ReadMemStats(&after)
			if perRun := (after.TotalAlloc - before.TotalAlloc) / runs; perRun >= limit {
				t.Errorf("allocates %d bytes per call for a %d-byte input, want < %d", perRun, len(data), limit)
			}
		})
	}
}

// TestUnmarshalDeepInputIsCheap checks that a megabyte of nesting is rejected
// without recursion (the race detector would make deep recursion very slow).
func TestUnmarshalDeepInputIsCheap(t *testing.T) {
	deep := append([]byte{0x81, 0xa7, 'p', 'a', 'y', 'l', 'o', 'a', 'd'}, bytes.Repeat([]byte{0x91}, 1<<20)...)
	var e Envelope
	err := Unmarshal(deep, &e)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "payload" || !errors.Is(err, ErrMalformed) {
		t.Fatalf("Unmarshal = %v, want malformed payload", err)
	}
}

func TestUnmarshalSkipsUnknownKeys(t *testing.T) {
	data := rawMap(append(minimalFields(),
		"x_map", map[string]any{"a": []any{1, 2.5, "s", nil, true, []byte("b")}},
		"x_time", time.Unix(5, 0), "x_neg", -70000, "x_str16", string(make([]byte, 300)))...)
	var e Envelope
	if err := Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&e, goldenMinimal()) {
		t.Errorf("got %+v, want the minimal envelope", e)
	}
}

func TestParseAliasPayload(t *testing.T) {
	env, err := New("a", "b", TaskRequest, "hello")
	if err != nil {
		t.Fatal(err)
	}
	data, err := Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	copied, err := Parse(data, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	aliased, err := Parse(data, Limits{AliasPayload: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range data {
		data[i] = 0
	}
	var s string
	if err := copied.DecodePayload(&s); err != nil || s != "hello" {
		t.Fatalf("the copied payload changed with data: %q %v", s, err)
	}
	if err := aliased.DecodePayload(&s); err == nil && s == "hello" {
		t.Fatal("AliasPayload: the payload does not share data's memory")
	}
	if cap(aliased.Payload) != len(aliased.Payload) {
		t.Fatal("an aliased payload must not be appendable into data")
	}
}
