package bus_test

import (
	"testing"

	"github.com/jetagent/jetagent/bus"
)

func TestMatchSubject(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, subject string
		want             bool
	}{
		{"a.b.c", "a.b.c", true},
		{"a.b.c", "a.b", false},
		{"a.b", "a.b.c", false},
		{"a.*.c", "a.x.c", true},
		{"a.*", "a.x.c", false},
		{"a.>", "a.x.c", true},
		{"a.>", "a", false},
		{">", "a", true},
		{"*", "a", true},
		{"*", "a.b", false},
		{"a.b", "", false},
	}
	for _, c := range cases {
		if got := bus.MatchSubject(c.pattern, c.subject); got != c.want {
			t.Errorf("MatchSubject(%q, %q) = %v", c.pattern, c.subject, got)
		}
	}
}
