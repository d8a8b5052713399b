// Command bench measures jetagent against hand-written nats.go code in
// one run on one embedded server, then runs one agent process under a
// sustained load of a million tasks, prints both tables and writes them
// to docs/benchmarks.md. The logic lives in internal/benchsuite.
//
//	go run ./cmd/bench [--rounds 7] [--messages 20000] [--load 1000000] [--out docs/benchmarks.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
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
	defer stop()
	if os.Getenv(agentChild) == "1" {
		code := agentcli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	var o benchsuite.Options
	var lo benchsuite.LoadOptions
	flag.IntVar(&o.Rounds, "rounds", 7, "rounds of each measurement (medians and spreads are over rounds)")
	flag.IntVar(&o.Messages, "messages", 20000, "messages per round of the throughput measurements")
	flag.IntVar(&o.Requests, "requests", 2000, "requests per round of the latency measurements")
	flag.IntVar(&lo.Messages, "load", 1_000_000, "tasks handled by one agent process in the sustained-load run (0: skip it)")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to write (empty: none; a run with --only writes only when --out is given)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run (server included) to this file, for go tool pprof")
	flag.StringVar(&o.Only, "only", "", "run only the measurements whose name contains this (e.g. publish, consume, replay, load)")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), `bench measures jetagent against hand-written nats.go code (and the
watermill-nats subscriber) with the same payloads and settings, each pair
run alternately on an embedded server of its own, then runs one agent
process through --load tasks and records its memory and goroutines. It
prints one table and writes it to --out. About two minutes on 2 cores.

Usage: go run ./cmd/bench [flags]    (or: make bench)

Flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 || o.Rounds < 1 || o.Messages < 1 || o.Requests < 1 || lo.Messages < 0 {
		fmt.Fprintln(os.Stderr, "bench: takes no arguments; --rounds, --messages and --requests must be positive, --load not negative")
		flag.Usage()
		os.Exit(2)
	}
	outGiven := false
	flag.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	if o.Only != "" && !outGiven {
		*out = "" // a partial table must not replace the full one
	}
	if o.Only != "" && !slices.ContainsFunc(benchsuite.Names(), func(n string) bool { return strings.Contains(n, o.Only) }) {
		fmt.Fprintf(os.Stderr, "bench: --only %q matches no measurement; they are:\n  %s\n", o.Only, strings.Join(benchsuite.Names(), "\n  "))
		os.Exit(2)
	}
	if *out != "" {
		// Fail now, not after two minutes of measuring.
		if st, err := os.Stat(filepath.Dir(*out)); err != nil || !st.IsDir() {
			fmt.Fprintf(os.Stderr, "bench: cannot write %s: its directory is missing (run from the repository root, or pass --out)\n", *out)
			os.Exit(2)
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	lo.Agent = func(ctx context.Context, args []string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, self, args...)
		cmd.Env = append(os.Environ(), agentChild+"=1")
		return cmd
	}
	o.Progress, lo.Progress = os.Stderr, os.Stderr
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	start := time.Now()
	results, err := benchsuite.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	var load *benchsuite.LoadResult
	if lo.Messages > 0 && (o.Only == "" || strings.Contains(benchsuite.LoadName, o.Only)) {
		r, err := benchsuite.RunLoad(ctx, lo)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		load = &r
	}
	md := benchsuite.Markdown(results, o, time.Since(start))
	if load != nil {
		md += benchsuite.LoadMarkdown(*load)
	}
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "written to", *out)
	}
}
