package envelope

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzUnmarshal checks that Unmarshal never panics, reports every failure as
// ErrMalformed with a zeroed target, and that what it accepts survives a
// Marshal/Unmarshal round trip unchanged.
//
// Round-tripping compares envelopes, not bytes: the input may legitimately be
// non-canonical (unknown keys, nil for absent fields, longer headers than
// needed, keys in another order, a wider timestamp form, an empty extensions
// map). Marshal's own output, however, must be canonical: encoding it again
// gives the same bytes.
func FuzzUnmarshal(f *testing.F) {
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.msgpack"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no golden vectors to seed with: %v", err)
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		input := bytes.Clone(data)
		var e Envelope
		if err := Unmarshal(data, &e); err != nil {
			var fe *FieldError
			if !errors.Is(err, ErrMalformed) || !errors.As(err, &fe) {
				t.Fatalf("error %v is not a malformed *FieldError", err)
			}
			if !reflect.DeepEqual(e, Envelope{}) {
				t.Fatalf("target not zeroed after an error: %+v", e)
			}
			return
		}
		if !bytes.Equal(data, input) {
			t.Fatal("Unmarshal modified its input")
		}
		encoded, err := Marshal(&e)
		if err != nil {
			t.Fatalf("decoded envelope does not marshal: %v\n%+v", err, e)
		}
		var back Envelope
		if err := Unmarshal(encoded, &back); err != nil {
			t.Fatalf("Marshal output does not decode: %v\n%x", err, encoded)
		}
		if !reflect.DeepEqual(normalized(e), normalized(back)) {
			t.Fatalf("round trip changed the envelope:\nfirst  %+v\nsecond %+v", e, back)
		}
		again, err := Marshal(&back)
		if err != nil || !bytes.Equal(again, encoded) {
			t.Fatalf("Marshal is not canonical: %x then %x (%v)", encoded, again, err)
		}
		// Neither the JSON form nor validation may panic on decoded input.
		_ = e.Validate(Limits{})
		if j, err := e.MarshalJSON(); err == nil {
			var fromJSON Envelope
			if err := fromJSON.UnmarshalJSON(j); err != nil {
				t.Fatalf("JSON form does not decode: %v\n%s", err, j)
			}
		}
	})
}

// normalized returns e with its times in UTC, the form Unmarshal produces.
func normalized(e Envelope) Envelope {
	e.Timestamp = e.Timestamp.UTC()
	e.Deadline = e.Deadline.UTC()
	return e
}
