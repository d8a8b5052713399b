package envelope

import (
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/oklog/ulid/v2"
)

func TestNewIDIsMonotonicAndUniqueAcrossGoroutines(t *testing.T) {
	const goroutines, perGoroutine = 8, 10_000
	ids := make([][]string, goroutines)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			own := make([]string, perGoroutine)
			for i := range own {
				own[i] = NewID()
			}
			ids[g] = own
		})
	}
	wg.Wait()
	seen := make(map[string]bool, goroutines*perGoroutine)
	for g, own := range ids {
		for i, id := range own {
			if _, err := ulid.ParseStrict(id); err != nil {
				t.Fatalf("goroutine %d id %d: %q is not a ULID: %v", g, i, id, err)
			}
			if seen[id] {
				t.Fatalf("duplicate id %s", id)
			}
			seen[id] = true
			// Each goroutine sees strictly increasing ids (a global order
			// exists too: they are handed out under one lock).
			if i > 0 && own[i-1] >= id {
				t.Fatalf("goroutine %d: id %s after %s is not greater", g, id, own[i-1])
			}
		}
	}
}

func TestNewIDNeverGoesBackInTime(t *testing.T) {
	// Simulate a wall clock that stepped back: the last millisecond handed out
	// lies in the future.
	idSource.mu.Lock()
	saved := idSource.lastMS
	future := ulid.Now() + 60_000
	idSource.lastMS = future
	idSource.mu.Unlock()
	defer func() {
		idSource.mu.Lock()
		idSource.lastMS = max(saved, idSource.lastMS)
		idSource.mu.Unlock()
	}()
	prev := ""
	for range 100 {
		id := NewID()
		if u := ulid.MustParseStrict(id); u.Time() < future {
			t.Fatalf("id %s has time %d, before the last one handed out (%d)", id, u.Time(), future)
		}
		if id <= prev {
			t.Fatalf("id %s not greater than %s", id, prev)
		}
		prev = id
	}
}

func TestDeriveID(t *testing.T) {
	parent := NewID()
	a, b := DeriveID(parent, "reply"), DeriveID(parent, "reply")
	if a != b {
		t.Fatalf("DeriveID is not deterministic: %s, %s", a, b)
	}
	derived := []string{a, DeriveID(parent, "dlq"), DeriveID(parent, ""), DeriveID(parent+"x", "reply")}
	if len(slices.Compact(slices.Sorted(slices.Values(derived)))) != len(derived) {
		t.Errorf("derived ids collide: %v", derived)
	}
	// "ab"+"c" and "a"+"bc" must not collide: the separator keeps them apart.
	if DeriveID("ab", "c") == DeriveID("a", "bc") {
		t.Error("DeriveID ignores the boundary between parent and purpose")
	}
	pu, du := ulid.MustParseStrict(parent), ulid.MustParseStrict(a)
	if pu.Time() != du.Time() {
		t.Errorf("derived time %d, parent time %d", du.Time(), pu.Time())
	}
	if d := ulid.MustParseStrict(DeriveID("not a ulid", "reply")); d.Time() != 0 {
		t.Errorf("derived from a non-ULID: time %d, want 0", d.Time())
	}
	// Pinned values (computed independently), so that implementations in
	// other languages can check theirs; docs/wire.md quotes them.
	for _, p := range []struct{ parent, purpose, want string }{
		{"01JWNNSVG0PVNVBFMY4A50SXM1", "reply", "01JWNNSVG0HPSWBFZXNCGN1HY4"},
		{"not a ulid", "reply", "0000000000VGBXAQ9WKKJX03MZ"},
	} {
		if got := DeriveID(p.parent, p.purpose); got != p.want {
			t.Errorf("DeriveID(%q, %q) = %s, want %s", p.parent, p.purpose, got, p.want)
		}
	}
}

func TestNewTraceID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := NewTraceID()
		if len(id) != 32 || strings.ToLower(id) != id {
			t.Fatalf("trace id %q is not 32 lowercase hex characters", id)
		}
		b, err := hex.DecodeString(id)
		if err != nil || string(b) == string(make([]byte, 16)) {
			t.Fatalf("trace id %q: %v (or all zero)", id, err)
		}
		if seen[id] {
			t.Fatalf("duplicate trace id %s", id)
		}
		seen[id] = true
	}
}
