package snapshot_test

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/jetagent/jetagent/snapshot"
)

var statuses = []snapshot.Status{
	snapshot.Submitted, snapshot.Working, snapshot.InputRequired,
	snapshot.Completed, snapshot.Failed, snapshot.Cancelled,
}

// TestTransitions checks every pair of statuses (and the empty and an
// unknown one) against the list of legal moves.
func TestTransitions(t *testing.T) {
	t.Parallel()
	legal := map[[2]snapshot.Status]bool{}
	for _, m := range [][2]snapshot.Status{
		{snapshot.Submitted, snapshot.Working},
		{snapshot.Submitted, snapshot.Cancelled},
		{snapshot.Submitted, snapshot.Failed},
		{snapshot.Working, snapshot.Working},
		{snapshot.Working, snapshot.InputRequired},
		{snapshot.Working, snapshot.Completed},
		{snapshot.Working, snapshot.Failed},
		{snapshot.Working, snapshot.Cancelled},
		{snapshot.InputRequired, snapshot.InputRequired},
		{snapshot.InputRequired, snapshot.Working},
		{snapshot.InputRequired, snapshot.Cancelled},
		{snapshot.InputRequired, snapshot.Failed},
	} {
		legal[m] = true
	}
	all := append([]snapshot.Status{"", "bogus", "Working"}, statuses...)
	for _, from := range all {
		for _, to := range all {
			want := legal[[2]snapshot.Status{from, to}]
			if got := from.CanTransition(to); got != want {
				t.Errorf("%q.CanTransition(%q) = %v, want %v", from, to, got, want)
			}
			// Transition treats "" as Submitted.
			effective := from
			if from == "" {
				effective = snapshot.Submitted
			}
			wantOK := legal[[2]snapshot.Status{effective, to}]
			err := snapshot.Transition(from, to)
			if wantOK && err != nil {
				t.Errorf("Transition(%q, %q) = %v, want nil", from, to, err)
			}
			if !wantOK && !errors.Is(err, snapshot.ErrIllegalTransition) {
				t.Errorf("Transition(%q, %q) = %v, want ErrIllegalTransition", from, to, err)
			}
			if !wantOK && err != nil && (!strings.Contains(err.Error(), string(effective)) || !strings.Contains(err.Error(), string(to))) {
				t.Errorf("Transition(%q, %q) error %q does not name both", from, to, err)
			}
		}
	}
	if err := snapshot.Transition("", snapshot.Working); err != nil {
		t.Errorf(`Transition("", working) = %v`, err)
	}
	for _, s := range statuses {
		if s.Terminal() {
			for _, to := range statuses {
				if s.CanTransition(to) {
					t.Errorf("terminal %s can move to %s", s, to)
				}
			}
		}
	}
}

func TestStatusTerminalValid(t *testing.T) {
	t.Parallel()
	terminal := map[snapshot.Status]bool{snapshot.Completed: true, snapshot.Failed: true, snapshot.Cancelled: true}
	for _, s := range statuses {
		if !s.Valid() {
			t.Errorf("%s not valid", s)
		}
		if s.Terminal() != terminal[s] {
			t.Errorf("%s.Terminal() = %v", s, s.Terminal())
		}
	}
	for _, s := range []snapshot.Status{"", "bogus", "WORKING", "working "} {
		if s.Valid() || s.Terminal() {
			t.Errorf("%q: valid %v terminal %v", s, s.Valid(), s.Terminal())
		}
	}
}

// keyShape is the key alphabet of a JetStream bucket ([-/_=.a-zA-Z0-9]),
// minus '/', with exactly one '.': "<agent>.<id>".
var keyShape = regexp.MustCompile(`^[-_a-zA-Z0-9]+\.[-_=a-zA-Z0-9]+$`)

// randomID returns 1..maxLen random bytes: often plain-token bytes, often
// any byte (invalid UTF-8 included), sometimes '.', '=' or multi-byte runes.
func randomID(r *rand.Rand, maxLen int) string {
	const plain = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
	n := 1 + r.IntN(maxLen)
	var b strings.Builder
	mode := r.IntN(3)
	for b.Len() < n {
		switch {
		case mode == 0 || r.IntN(10) < 7:
			b.WriteByte(plain[r.IntN(len(plain))])
		case r.IntN(4) == 0:
			b.WriteString([]string{".", "=", "é", "🙂", " ", "/", "*", ">"}[r.IntN(8)])
		default:
			b.WriteByte(byte(r.IntN(256)))
		}
	}
	s := b.String()
	if len(s) > n { // a multi-byte rune went past n
		s = s[:n]
	}
	return s
}

func TestKeyRoundTrip(t *testing.T) {
	t.Parallel()
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	seen := map[string][2]string{}
	for i := range 20000 {
		agent := randomID(r, 20)
		for strings.ContainsAny(agent, ".=/*> ") || !isPlain(agent) {
			agent = randomID(r, 20)
		}
		maxLen := 40
		if i%10 == 0 {
			maxLen = 1024
		}
		id := randomID(r, maxLen)
		key, err := snapshot.Key(agent, id)
		if err != nil {
			t.Fatalf("Key(%q, %q): %v", agent, id, err)
		}
		if !keyShape.MatchString(key) {
			t.Fatalf("Key(%q, %q) = %q: not one '.' between KV-legal tokens", agent, id, key)
		}
		a, got, err := snapshot.ParseKey(key)
		if err != nil || a != agent || got != id {
			t.Fatalf("ParseKey(Key(%q, %q)) = %q, %q, %v", agent, id, a, got, err)
		}
		if prev, ok := seen[key]; ok && prev != [2]string{agent, id} {
			t.Fatalf("Key(%q, %q) = Key(%q, %q) = %q", agent, id, prev[0], prev[1], key)
		}
		seen[key] = [2]string{agent, id}
	}
}

var plainRe = regexp.MustCompile(`^[-_a-zA-Z0-9]{1,256}$`)

func isPlain(s string) bool { return plainRe.MatchString(s) }

func TestKeyLimits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		agent, id string
		ok        bool
	}{
		{"a", "t", true},
		{strings.Repeat("a", 256), "t", true},
		{strings.Repeat("a", 257), "t", false},
		{"a", strings.Repeat("x", 1024), true},
		{"a", strings.Repeat("x", 1025), false},
		{"a", "", false},
		{"", "t", false},
		{"a.b", "t", false},
		{"a=", "t", false},
		{"=a", "t", false},
		{"é", "t", false},
	} {
		key, err := snapshot.Key(tc.agent, tc.id)
		if tc.ok != (err == nil) {
			t.Errorf("Key(%.20q, %.20q) = %.30q, %v; want ok %v", tc.agent, tc.id, key, err, tc.ok)
		}
		if err != nil && !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("Key(%.20q, %.20q): %v does not wrap ErrInvalid", tc.agent, tc.id, err)
		}
	}
	if key, _ := snapshot.Key("a", "abc"); key != "a.abc" {
		t.Errorf("plain id: key %q", key)
	}
	if key, _ := snapshot.Key("a", "a.b"); key != "a.=YS5i" {
		t.Errorf("dotted id: key %q", key)
	}
}

func TestParseKeyRejects(t *testing.T) {
	t.Parallel()
	for _, key := range []string{
		"", "a", "a.", ".t", "a.b.c", "a b.t", "a.t t", "a.=", "a.=!", "a.=YS5i=",
		"a.=YWJj",                           // "abc" is plain: its canonical key is "a.abc"
		"a.=QR",                             // non-zero trailing bits decode to "A", canonically "=QQ"
		"a.=YS5\ni",                         // the base64 decoder skips newlines
		"a.=" + strings.Repeat("eHh4", 342), // 1026 bytes
		"*.t", ">.t", "a.*", "a.>",
	} {
		if a, id, err := snapshot.ParseKey(key); !errors.Is(err, snapshot.ErrInvalid) {
			t.Errorf("ParseKey(%.40q) = %q, %.20q, %v; want ErrInvalid", key, a, id, err)
		}
	}
}

// FuzzParseKey: a key ParseKey accepts is exactly the key of what it returns.
func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"a.t", "a.=YS5i", "a.=QR", "a.=YWJj", "a.b.c", "", ".", "a.="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		agent, id, err := snapshot.ParseKey(key)
		if err != nil {
			return
		}
		if back, err := snapshot.Key(agent, id); err != nil || back != key {
			t.Fatalf("ParseKey(%q) = %q, %q but Key gives %q, %v", key, agent, id, back, err)
		}
	})
}

// FuzzKey: every id Key accepts round-trips.
func FuzzKey(f *testing.F) {
	for _, s := range []string{"t", "a.b", "=x", "\xff", "日本", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		key, err := snapshot.Key("agent", id)
		if err != nil {
			if id != "" && len(id) <= 1024 {
				t.Fatalf("Key(%q): %v", id, err)
			}
			return
		}
		if !keyShape.MatchString(key) {
			t.Fatalf("Key(%q) = %q", id, key)
		}
		if a, got, err := snapshot.ParseKey(key); err != nil || a != "agent" || got != id {
			t.Fatalf("ParseKey(%q) = %q, %q, %v", key, a, got, err)
		}
	})
}
