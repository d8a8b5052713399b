package didyoumean

import "testing"

func TestClosest(t *testing.T) {
	known := []string{"list", "show", "replay", "purge", "stats", "permanent", "max_attempts"}
	for word, want := range map[string]string{
		"lst": "list", "permanant": "permanent", "max_attempt": "max_attempts", "shwo": "show",
		"frobnicate": "", "x": "", "": "",
	} {
		if got := Closest(word, known); got != want {
			t.Errorf("Closest(%q) = %q, want %q", word, got, want)
		}
	}
}
