package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/jetagent/jetagent", Version: "v0.1.0"},
		Deps:     []*debug.Module{{Path: "github.com/nats-io/nats-server/v2", Version: "v2.15.2"}, {Path: "github.com/nats-io/nats.go", Version: "v1.55.0"}},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-01-02T03:04:05Z"}, {Key: "vcs.modified", Value: "true"}}}
	got := fromBuildInfo(bi).String()
	want := `v0.1.0
  commit:      abc123 (2026-01-02T03:04:05Z), with uncommitted changes
  go:          go1.26.0
  nats-server: v2.15.2
  nats.go:     v1.55.0
`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
	if s := fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}).String(); !strings.Contains(s, "commit:      unknown (not recorded") {
		t.Errorf("without vcs info: %s", s)
	}
}
