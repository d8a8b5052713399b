package snapshot

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestIsConflict(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{jetstream.ErrKeyExists, true},
		{fmt.Errorf("x: %w", jetstream.ErrKeyRevisionMismatch), true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Code: 400}, true},
		{fmt.Errorf("wrapped: %w", &jetstream.APIError{ErrorCode: 10164, Code: 400}), true},
		{&jetstream.APIError{ErrorCode: 10077, Code: 400}, false},
		{jetstream.ErrKeyNotFound, false},
		{errors.New("timeout"), false},
	} {
		if got := isConflict(tc.err); got != tc.want {
			t.Errorf("isConflict(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

type entry struct {
	jetstream.KeyValueEntry
	value []byte
}

func (e entry) Key() string      { return "a.t" }
func (e entry) Revision() uint64 { return 7 }
func (e entry) Value() []byte    { return e.value }

// FuzzDecode: no input makes decode panic; what decodes is a valid
// snapshot of the key's task.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("garbage"))
	f.Add([]byte{0x81, 0xa6, 's', 't', 'a', 't', 'u', 's', 0xa7, 'w', 'o', 'r', 'k', 'i', 'n', 'g'})
	f.Add([]byte{0xdf, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xc7, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := decode("a", "t", entry{value: data})
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if s.Agent != "a" || s.TaskID != "t" || s.Revision != 7 || !s.Status.Valid() {
			t.Fatalf("decoded %+v", s)
		}
	})
}
