package benchsuite_test

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/internal/agentcli"
	"github.com/jetagent/jetagent/internal/benchsuite"
	"go.uber.org/goleak"
)

const childEnv = "BENCHSUITE_TEST_AGENT"

// TestMain runs this test binary as the agent under load when asked to,
// as cmd/bench does with its own binary.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := agentcli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	goleak.VerifyTestMain(m)
}

func agentCmd(t *testing.T) func(ctx context.Context, args []string) *exec.Cmd {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return func(ctx context.Context, args []string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Env = append(os.Environ(), childEnv+"=1")
		return cmd
	}
}

// The suite must keep running end to end: every measurement gives one
// positive figure per round on both sides.
func TestRunGivesEveryMeasurement(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and runs every measurement")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	results, err := benchsuite.Run(ctx, benchsuite.Options{Rounds: 1, Messages: 300, Requests: 30})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) < 9 {
		t.Fatalf("%d results, want every measurement", len(results))
	}
	for _, r := range results {
		if len(r.Raw) != 1 || len(r.Ours) != 1 || r.Raw[0] <= 0 || r.Ours[0] <= 0 {
			t.Errorf("%s %d B: raw %v, jetagent %v", r.Name, r.Size, r.Raw, r.Ours)
		}
	}
	md := benchsuite.Markdown(results, benchsuite.Options{Rounds: 1}, time.Second)
	if !strings.Contains(md, "| consume (decode, breaker, dispositions, ack) | 256 B |") {
		t.Errorf("table lacks the consume row:\n%s", md)
	}
}

// The load run drives a real agent process and reads its own metrics;
// every task must be counted as processed.
func TestRunLoadCountsEveryTask(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := benchsuite.RunLoad(ctx, benchsuite.LoadOptions{Messages: 3000, Backlog: 1000, Every: 1000, Agent: agentCmd(t)})
	if err != nil {
		t.Fatal(err)
	}
	last := r.Rows[len(r.Rows)-1]
	if last.Processed != 3000 {
		t.Errorf("last row: %d processed, want 3000", last.Processed)
	}
	if r.MaxRSS <= 0 || r.MaxGoroutines <= 0 || r.MinGoroutines <= 0 {
		t.Errorf("RSS %d, goroutines %d-%d: the agent's metrics were not read", r.MaxRSS, r.MinGoroutines, r.MaxGoroutines)
	}
	if md := benchsuite.LoadMarkdown(r); !strings.Contains(md, "| 3000 |") {
		t.Errorf("load table lacks the last row:\n%s", md)
	}
}

// An agent that cannot start is reported with its own words, not waited
// for until the timeout.
func TestRunLoadReportsAnAgentThatFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	agent := agentCmd(t)
	_, err := benchsuite.RunLoad(ctx, benchsuite.LoadOptions{Messages: 10, Agent: func(ctx context.Context, args []string) *exec.Cmd {
		return agent(ctx, append(args, "--concurrency", "-1"))
	}})
	if err == nil || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "concurrency") {
		t.Fatalf("err = %v, want the agent's exit and its complaint about --concurrency", err)
	}
}
