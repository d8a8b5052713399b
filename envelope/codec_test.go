package envelope

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// wireKeys decodes the top-level keys of an encoding, in order, with the
// msgpack library.
func wireKeys(t *testing.T, b []byte) []string {
	t.Helper()
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	n, err := dec.DecodeMapLen()
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, n)
	for i := range keys {
		if keys[i], err = dec.DecodeString(); err != nil {
			t.Fatal(err)
		}
		if err := dec.Skip(); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestMarshalKeyOrder(t *testing.T) {
	got := wireKeys(t, mustMarshal(t, goldenAllFields()))
	want := fieldNames[:]
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
}

func TestMarshalOmitsEmptyOptionalFields(t *testing.T) {
	got := wireKeys(t, mustMarshal(t, goldenMinimal()))
	want := []string{"id", "version", "sender", "recipient", "payload_type", "timestamp"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	// Required fields are written even when empty, and so is a zero timestamp
	// (as nil), so that Validate on the other side names what is missing.
	got = wireKeys(t, mustMarshal(t, &Envelope{Extensions: map[string]string{}, Payload: []byte{0xc0}}))
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys of an empty envelope %v, want %v", got, want)
	}
}

func TestMarshalIsDeterministic(t *testing.T) {
	e := goldenAllFields()
	for i := range 30 {
		e.Extensions[string(rune('a'+i%26))+strings.Repeat("x", i)] = "v"
	}
	first := mustMarshal(t, e)
	for range 20 { // map iteration order differs between runs
		if b := mustMarshal(t, e); !bytes.Equal(b, first) {
			t.Fatal("two encodings of one envelope differ")
		}
	}
	var back Envelope
	if err := Unmarshal(first, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, e) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", back, *e)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	tests := map[string]*Envelope{
		"minimal":    goldenMinimal(),
		"all fields": goldenAllFields(),
		"long strings": func() *Envelope {
			e := goldenMinimal()
			e.Sender = strings.Repeat("s", 31)            // fixstr, longest
			e.Recipient = strings.Repeat("r", 32)         // str8, shortest
			e.TaskID = strings.Repeat("t", 255)           // str8, longest
			e.ReplyTo = strings.Repeat("p", 256)          // str16
			e.IdempotencyKey = strings.Repeat("k", 70000) // str32
			return e
		}(),
		"local time zone": func() *Envelope {
			e := goldenMinimal()
			e.Timestamp = time.Date(2025, 6, 1, 14, 0, 0, 1, time.FixedZone("CEST", 2*3600))
			return e
		}(),
	}
	for name, e := range tests {
		t.Run(name, func(t *testing.T) {
			var back Envelope
			if err := Unmarshal(mustMarshal(t, e), &back); err != nil {
				t.Fatal(err)
			}
			want := *e
			want.Timestamp = want.Timestamp.UTC()
			if !reflect.DeepEqual(back, want) {
				t.Errorf("round trip differs:\n got %+v\nwant %+v", back, want)
			}
		})
	}
}

func TestMarshalErrors(t *testing.T) {
	withPayload := func(p []byte) *Envelope {
		e := goldenMinimal()
		e.Payload = p
		return e
	}
	tests := []struct {
		name  string
		e     *Envelope
		field string
	}{
		{"nil envelope", nil, ""},
		{"payload not msgpack", withPayload([]byte{0xc1}), "payload"},
		{"payload truncated", withPayload([]byte{0x92, 0x01}), "payload"},
		{"payload two values", withPayload([]byte{0x01, 0x02}), "payload"},
		{"payload too deep", withPayload(append(bytes.Repeat([]byte{0x91}, MaxPayloadDepth+1), 0xc0)), "payload"},
		{"timestamp after 9999", func() *Envelope {
			e := goldenMinimal()
			e.Timestamp = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)
			return e
		}(), "timestamp"},
		{"deadline before year 1", func() *Envelope {
			e := goldenMinimal()
			e.Deadline = time.Date(0, 12, 31, 0, 0, 0, 0, time.UTC)
			return e
		}(), "deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Marshal(tt.e)
			var fe *FieldError
			if !errors.Is(err, ErrInvalidField) || !errors.As(err, &fe) || fe.Field != tt.field {
				t.Fatalf("Marshal = %x, %v; want *FieldError{Field: %q, Err: ErrInvalidField}", b, err, tt.field)
			}
			dst := []byte("prefix")
			got, err := AppendMarshal(dst, tt.e)
			if err == nil || string(got) != "prefix" {
				t.Errorf("AppendMarshal = %q, %v; want dst unchanged and an error", got, err)
			}
		})
	}
	// Deepest allowed payload is accepted.
	if _, err := Marshal(withPayload(append(bytes.Repeat([]byte{0x91}, MaxPayloadDepth), 0xc0))); err != nil {
		t.Errorf("payload nested exactly MaxPayloadDepth deep: %v", err)
	}
}

func TestAppendMarshal(t *testing.T) {
	e := goldenAllFields()
	want := mustMarshal(t, e)
	buf := make([]byte, 0, 1024)
	buf = append(buf, "head"...)
	got, err := AppendMarshal(buf, e)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[:4]) != "head" || !bytes.Equal(got[4:], want) {
		t.Errorf("AppendMarshal = %x, want head + %x", got, want)
	}
	if &got[0] != &buf[:1][0] {
		t.Error("AppendMarshal reallocated although dst had room")
	}
	if allocs := testing.AllocsPerRun(100, func() { got, _ = AppendMarshal(got[:0], e) }); allocs != 0 {
		t.Errorf("AppendMarshal into a large enough buffer allocates %v times, want 0", allocs)
	}
}

// TestTimestampEncodingMatchesLibrary checks all three timestamp forms against
// the msgpack library, which implements the spec's rules independently.
func TestTimestampEncodingMatchesLibrary(t *testing.T) {
	times := []time.Time{
		time.Unix(0, 0),                        // 32-bit
		time.Unix(1<<32-1, 0),                  // 32-bit, largest
		time.Unix(1<<32, 0),                    // 64-bit: seconds need 33 bits
		time.Unix(1748779200, 1),               // 64-bit: nanoseconds
		time.Unix(1<<34-1, 999_999_999),        // 64-bit, largest
		time.Unix(1<<34, 0),                    // 96-bit
		time.Unix(-1, 999_999_999),             // 96-bit: before 1970
		time.Unix(minUnixSeconds, 1),           // 96-bit: year 1
		time.Unix(maxUnixSeconds, 999_999_999), // 96-bit: year 9999
	}
	for _, tm := range times {
		var buf bytes.Buffer
		if err := msgpack.NewEncoder(&buf).EncodeTime(tm); err != nil {
			t.Fatal(err)
		}
		if got := appendTime(nil, tm); !bytes.Equal(got, buf.Bytes()) {
			t.Errorf("%v: appendTime %x, library %x", tm, got, buf.Bytes())
		}
		if got := timeSize(tm); got != buf.Len() {
			t.Errorf("%v: timeSize %d, encoded %d", tm, got, buf.Len())
		}
		h, err := readHeader(buf.Bytes(), 0)
		if err != nil {
			t.Fatal(err)
		}
		back, err := readTime(buf.Bytes(), h)
		if err != nil || !back.Equal(tm) || back.Location() != time.UTC {
			t.Errorf("%v: readTime = %v, %v", tm, back, err)
		}
	}
	if got, want := time.Unix(minUnixSeconds, 0).UTC(), (time.Time{}); got != want {
		t.Errorf("minUnixSeconds is %v, want the zero time", got)
	}
	if got := time.Unix(maxUnixSeconds, 0).UTC(); got != time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC) {
		t.Errorf("maxUnixSeconds is %v, want the last second of 9999", got)
	}
}
