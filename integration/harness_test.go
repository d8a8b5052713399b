package integration

import (
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"
)

// TestRequireDockerDecision checks requireDocker's rule without Docker: no engine fails the
// test under CI=true and skips it elsewhere.
func TestRequireDockerDecision(t *testing.T) {
	unreachable := errors.New("Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
	tests := []struct {
		name    string
		ci      string
		err     error
		want    dockerVerdict
		wantMsg string
	}{
		{"engine up, CI", "true", nil, dockerRun, ""},
		{"engine up, no CI", "", nil, dockerRun, ""},
		{"no engine, CI=true", "true", unreachable, dockerFatal, "integration tests need Docker and CI=true: " + unreachable.Error()},
		{"no engine, CI=1", "1", unreachable, dockerFatal, "integration tests need Docker and CI=true: " + unreachable.Error()},
		{"no engine, CI unset", "", unreachable, dockerSkip, unreachable.Error()},
		{"no engine, CI=false", "false", unreachable, dockerSkip, unreachable.Error()},
		{"no engine, CI=woodpecker", "woodpecker", unreachable, dockerSkip, unreachable.Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, msg := dockerDecision(tt.ci, tt.err)
			if got != tt.want {
				t.Errorf("verdict = %d, want %d", got, tt.want)
			}
			if tt.want == dockerFatal && msg != tt.wantMsg {
				t.Errorf("message = %q, want %q", msg, tt.wantMsg)
			}
			if !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("message %q does not contain %q", msg, tt.wantMsg)
			}
			if tt.want == dockerSkip && !strings.Contains(msg, "DOCKER_HOST") {
				t.Errorf("skip message %q does not say how to enable the tests", msg)
			}
		})
	}
}

func TestBinaryName(t *testing.T) {
	for pkg, want := range map[string]string{
		"./cmd/agent":                            "agent",
		"./cmd/replay/":                          "replay",
		"github.com/nats-io/nats-server/v2":      "nats-server",
		"github.com/jetagent/jetagent/cmd/agent": "agent",
		".":                                      "main",
	} {
		if got := binaryName(pkg); got != want {
			t.Errorf("binaryName(%q) = %q, want %q", pkg, got, want)
		}
	}
}

func TestLastLines(t *testing.T) {
	if got := lastLines("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("lastLines = %q", got)
	}
	if got := lastLines("a\nb", 5); got != "a\nb" {
		t.Errorf("lastLines = %q", got)
	}
}

// TestBuildHelpers builds the probe program of testdata both ways: as a FROM scratch image
// (run once, its output read from the log) and for the host (run as a process).
func TestBuildHelpers(t *testing.T) {
	requireDocker(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	bin := buildHostBinary(t, "./integration/testdata/probe")
	if again := buildHostBinary(t, "./integration/testdata/probe"); again != bin {
		t.Errorf("second buildHostBinary = %s, want the cached %s", again, bin)
	}
	out, err := exec.CommandContext(ctx, bin, "host").CombinedOutput()
	if err != nil || string(out) != "probe ok args=host\n" {
		t.Errorf("host probe: %q, %v", out, err)
	}

	image := buildImage(t, "jetagent-probe", map[string]string{"/probe": "./integration/testdata/probe"})
	if !strings.HasPrefix(image, "jetagent-probe:") || len(image) != len("jetagent-probe:")+12 {
		t.Errorf("image ref %q, want jetagent-probe:<12 hex>", image)
	}
	ctr, err := testcontainers.Run(ctx, image,
		testcontainers.WithLogger(tclog.TestLogger(t)),
		testcontainers.WithLabels(map[string]string{harnessLabel: "true"}),
		testcontainers.WithCmd("in", "image"),
		testcontainers.WithWaitStrategy(wait.ForExit().WithExitTimeout(time.Minute)),
	)
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		t.Fatalf("run probe image: %v", err)
	}
	state, err := ctr.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logs, err := ctr.Logs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	output, err := io.ReadAll(logs)
	if err != nil {
		t.Fatal(err)
	}
	if state.ExitCode != 0 || string(output) != "probe ok args=in,image\n" {
		t.Errorf("probe in image: exit %d, output %q", state.ExitCode, output)
	}
}

func TestHasReplace(t *testing.T) {
	for gomod, want := range map[string]bool{
		"module m\n\nrequire x v1.0.0\n":                   false,
		"module m\n// replace nothing\n":                   false,
		"module m\nreplace x => ../x\n":                    true,
		"module m\nreplace (\n\tx => ../x\n)\n":            true,
		"module m\nrequire github.com/a/replacer v1.0.0\n": false,
	} {
		if got := hasReplace([]byte(gomod)); got != want {
			t.Errorf("hasReplace(%q) = %t, want %t", gomod, got, want)
		}
	}
}
