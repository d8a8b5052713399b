package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBinariesReportTheirVersions builds the real binaries (test binaries
// carry no dependency versions) and runs "version" and "--version".
func TestBinariesReportTheirVersions(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries")
	}
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, l := range strings.Split(string(mod), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			want[f[0]] = f[1]
		}
	}
	dir := t.TempDir()
	for _, prog := range []string{"agent", "replay"} {
		bin := filepath.Join(dir, prog)
		if out, err := exec.Command("go", "build", "-o", bin, "../"+prog).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", prog, err, out)
		}
		for _, arg := range []string{"version", "--version"} {
			out, err := exec.Command(bin, arg).CombinedOutput()
			s := string(out)
			if err != nil || !strings.HasPrefix(s, prog+" ") || !strings.Contains(s, "nats-server: "+want["github.com/nats-io/nats-server/v2"]) ||
				!strings.Contains(s, "nats.go:     "+want["github.com/nats-io/nats.go"]) || !strings.Contains(s, "go:          go1.") || !strings.Contains(s, "commit:") {
				t.Errorf("%s %s: %v\n%s", prog, arg, err, s)
			}
		}
	}
}
