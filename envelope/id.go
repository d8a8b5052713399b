package envelope

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// idSource hands out process-wide monotonic ULIDs. ulid.MonotonicEntropy is not
// safe for concurrent use, so one mutex guards it and the last millisecond used.
var idSource struct {
	mu      sync.Mutex
	lastMS  uint64
	entropy *ulid.MonotonicEntropy
}

func init() {
	idSource.entropy = ulid.Monotonic(rand.Reader, 0)
}

// NewID returns a new ULID string (26 Crockford base32 characters).
//
// IDs from one process are strictly increasing, also when called from many
// goroutines at once and when the wall clock steps back: the time part never
// goes below the last one handed out, and within one millisecond the random
// part is incremented. It is safe for concurrent use and never fails.
func NewID() string {
	now := ulid.Timestamp(time.Now())
	s := &idSource
	s.mu.Lock()
	ms := max(now, s.lastMS)
	var id ulid.ULID
	for {
		var err error
		id, err = ulid.New(ms, s.entropy)
		if err == nil {
			break
		}
		if !errors.Is(err, ulid.ErrMonotonicOverflow) {
			s.mu.Unlock()
			// crypto/rand.Read never returns an error (Go 1.24 and later)
			// and ms is derived from the clock, so this cannot happen.
			panic("envelope: NewID: " + err.Error())
		}
		// The random part ran out inside this millisecond: borrow the next one.
		// The entropy source draws fresh random bytes for a new millisecond.
		ms++
	}
	s.lastMS = ms
	s.mu.Unlock()
	return id.String()
}

// DeriveID returns a ULID string computed only from parent and purpose, so the
// same inputs always give the same id. Its time part is parent's when parent is
// a valid ULID (zero otherwise); its random part is the first 10 bytes of
// SHA-256(parent + "\x00" + purpose).
//
// The runtime gives a reply DeriveID(request.ID, "reply"): when a request is
// delivered twice, both replies carry the same id and JetStream drops the second
// as a duplicate (Nats-Msg-Id).
func DeriveID(parent, purpose string) string {
	var id ulid.ULID
	if p, err := ulid.ParseStrict(parent); err == nil {
		_ = id.SetTime(p.Time()) // cannot fail: p's time is already in range
	}
	h := sha256.New()
	h.Write([]byte(parent))
	h.Write([]byte{0})
	h.Write([]byte(purpose))
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	copy(id[6:], sum[:10])
	return id.String()
}

// NewTraceID returns a random W3C trace-id: 32 lowercase hex characters, never
// all zero. It never fails.
func NewTraceID() string {
	var b [16]byte
	for {
		rand.Read(b[:]) // never returns an error (Go 1.24 and later)
		if b != [16]byte{} {
			return hex.EncodeToString(b[:])
		}
	}
}
