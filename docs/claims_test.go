package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocsSayWhatTheCodeDoes checks claims of the docs that the code
// decides: each one names what it compares.
func TestDocsSayWhatTheCodeDoes(t *testing.T) {
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	concepts, readme := read("concepts.md"), read("../README.md")

	// References to files and documents that are not in the repository.
	for _, file := range markdownFiles(t) {
		text := read(file)
		if strings.Contains(text, "DESIGN") {
			t.Errorf("%s cites a DESIGN document, which is not in the repository", file)
		}
		for _, m := range regexp.MustCompile(`\]\(([^)#:]+)(#[^)]*)?\)`).FindAllStringSubmatch(text, -1) {
			if _, err := os.Stat(filepath.Join(filepath.Dir(file), m[1])); err != nil {
				t.Errorf("%s links to %s, which does not exist", file, m[1])
			}
		}
	}
	if strings.Contains(read("security.md"), "once wired") {
		t.Error("security.md says agent run takes the connection settings \"once wired\": it does")
	}

	// The heartbeat interval: runtime/heartbeat.go heartbeats a delivery once
	// a fraction of its own ack timeout has passed.
	m := regexp.MustCompile(`age >= timeout/(\d+) `).FindStringSubmatch(read("../runtime/heartbeat.go"))
	if m == nil {
		t.Fatal("runtime/heartbeat.go: beatDue's formula not found")
	}
	words := map[string]string{"2": "half", "3": "a third", "4": "a quarter"}
	if w := words[m[1]]; w == "" || !strings.Contains(concepts, w+" of its own ack timeout") {
		t.Errorf("concepts.md does not say a delivery is heartbeated once %q of its own ack timeout has passed (the code: timeout/%s)", w, m[1])
	}
	for n, w := range words {
		if n != m[1] && strings.Contains(concepts, w+" of its own ack timeout") {
			t.Errorf("concepts.md says %s of its ack timeout; the code heartbeats at timeout/%s", w, m[1])
		}
	}
	for _, n := range []string{"2", "3", "4", "5", "6"} {
		if strings.Contains(concepts, "AckWait/"+n) {
			t.Errorf("concepts.md says heartbeats come every AckWait/%s; the code heartbeats each delivery at its own timeout/%s", n, m[1])
		}
	}
	if strings.Contains(concepts, "bounded channel") {
		t.Error("concepts.md speaks of a bounded channel: a replica's window (Concurrency + Prefetch) bounds what it holds")
	}

	// Replies of a redelivered duplicate: the replies stream drops the
	// second (same id), core subscribers receive both.
	if strings.Contains(readme, "a redelivered duplicate is dropped by the server") {
		t.Error("README says the server drops a redelivered duplicate's reply: only the stream does; core subscribers receive both")
	}

	// The quick start: honest about the first run and what make test leaves.
	for _, want := range []string{"first run", "downloads", "images", "make clean-images"} {
		if !strings.Contains(readme, want) {
			t.Errorf("README's quick start does not mention %q", want)
		}
	}
	// Day two: the operational views.
	ops := read("operations.md")
	_, day2, ok := strings.Cut(ops, "## Day two")
	if !ok {
		t.Fatal("operations.md has no \"## Day two\" section")
	}
	for _, want := range []string{"agent ls", "agent task show", "agent task ls", "agent task cancel", "replay list", "replay replay"} {
		if !strings.Contains(day2, want) {
			t.Errorf("operations.md's day two section does not use %q", want)
		}
	}
	for _, want := range []string{"agent ls", "agent task show"} {
		if !strings.Contains(readme, want) {
			t.Errorf("README's tour does not use %q", want)
		}
	}
}
