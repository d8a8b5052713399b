// Command bench measures jetagent against hand-written nats.go code in
// one run on one embedded server, then runs one agent process under a
// sustained load of a million tasks, prints both tables and writes them
// to docs/benchmarks.md. The logic lives in internal/benchsuite.
//
//	go run ./cmd/bench [--rounds 7] [--messages 20000] [--load 1000000] [--out docs/benchmarks.md]
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/internal/agentcli"
	"github.com/jetagent/jetagent/internal/benchsuite"
)

// agentChild, set in the environment, makes this binary the agent under
// load: the same code as cmd/agent, without a separate build.
const agentChild = "JETAGENT_BENCH_AGENT_CHILD"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if os.Getenv(agentChild) == "1" {
		code = agentcli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// run is the bench command with args (without the program name); it
// returns the exit code: 0 done, 1 failed, 2 wrong flags. It returns
// only after everything it opened is closed and the CPU profile, if
// any, is written, whatever the outcome.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	s, code, ok := parseFlags(args, stderr)
	if !ok {
		return code
	}
	o, lo := s.suite, s.load
	fail := func(err error) int {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	lo.Agent = func(ctx context.Context, args []string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Env = append(os.Environ(), agentChild+"=1")
		return cmd
	}
	o.Progress, lo.Progress = stderr, stderr
	if s.cpuProfile != "" {
		stopProfile, err := startCPUProfile(s.cpuProfile)
		if err != nil {
			return fail(err)
		}
		defer func() {
			if err := stopProfile(); err != nil && code == 0 {
				code = fail(err)
			}
		}()
	}
	start := time.Now()
	results, err := benchsuite.Run(ctx, o)
	if err != nil {
		return fail(err)
	}
	var load *benchsuite.LoadResult
	if lo.Messages > 0 && (o.Only == "" || strings.Contains(benchsuite.LoadName, o.Only)) {
		r, err := benchsuite.RunLoad(ctx, lo)
		if err != nil {
			return fail(err)
		}
		load = &r
	}
	md := benchsuite.Markdown(results, o, time.Since(start))
	if load != nil {
		md += benchsuite.LoadMarkdown(*load)
	}
	fmt.Fprint(stdout, md)
	if s.out != "" {
		if err := os.WriteFile(s.out, []byte(md), 0o644); err != nil {
			return fail(err)
		}
		fmt.Fprintln(stderr, "written to", s.out)
	}
	return 0
}

// startCPUProfile profiles the process into path until the returned stop,
// which flushes the profile and closes the file.
func startCPUProfile(path string) (stop func() error, err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			return fmt.Errorf("CPU profile: %w", err)
		}
		return nil
	}, nil
}
