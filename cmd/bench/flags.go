package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jetagent/jetagent/internal/benchsuite"
)

// settings are what the command line asks of a run.
type settings struct {
	suite      benchsuite.Options
	load       benchsuite.LoadOptions // Agent and Progress are run's to set
	out        string                 // markdown file to write; empty: none
	cpuProfile string                 // CPU profile to write; empty: none
}

// parseFlags reads the command line. When it returns ok false, the run
// must end with code: 0 after --help, 2 after a wrong flag, either said
// on stderr.
func parseFlags(args []string, stderr io.Writer) (s settings, code int, ok bool) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&s.suite.Rounds, "rounds", 7, "rounds of each measurement (medians and spreads are over rounds)")
	fs.IntVar(&s.suite.Messages, "messages", 20000, "messages per round of the throughput measurements")
	fs.IntVar(&s.suite.Requests, "requests", 2000, "requests per round of the latency measurements")
	fs.IntVar(&s.load.Messages, "load", 1_000_000, "tasks handled by one agent process in the sustained-load run (0: skip it)")
	fs.StringVar(&s.out, "out", "docs/benchmarks.md", "markdown file to write (empty: none; a run with --only writes only when --out is given)")
	fs.StringVar(&s.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (server included) to this file, for go tool pprof")
	fs.StringVar(&s.suite.Only, "only", "", "run only the measurements whose name contains this (e.g. publish, consume, replay, load)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `bench measures jetagent against hand-written nats.go code (and the
watermill-nats subscriber) with the same payloads and settings, each pair
run alternately on an embedded server of its own, then runs one agent
process through --load tasks and records its memory and goroutines. It
prints one table and writes it to --out. About two minutes on 2 cores.

Usage: go run ./cmd/bench [flags]    (or: make bench)

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return s, 0, false
		}
		return s, 2, false // the flag package printed the error and the usage
	}
	o := s.suite
	if fs.NArg() > 0 || o.Rounds < 1 || o.Messages < 1 || o.Requests < 1 || s.load.Messages < 0 {
		fmt.Fprintln(stderr, "bench: takes no arguments; --rounds, --messages and --requests must be positive, --load not negative")
		fs.Usage()
		return s, 2, false
	}
	outGiven := false
	fs.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	if o.Only != "" && !outGiven {
		s.out = "" // a partial table must not replace the full one
	}
	if o.Only != "" && !slices.ContainsFunc(benchsuite.Names(), func(n string) bool { return strings.Contains(n, o.Only) }) {
		fmt.Fprintf(stderr, "bench: --only %q matches no measurement; they are:\n  %s\n", o.Only, strings.Join(benchsuite.Names(), "\n  "))
		return s, 2, false
	}
	if s.out != "" {
		// Fail now, not after two minutes of measuring.
		if st, err := os.Stat(filepath.Dir(s.out)); err != nil || !st.IsDir() {
			fmt.Fprintf(stderr, "bench: cannot write %s: its directory is missing (run from the repository root, or pass --out)\n", s.out)
			return s, 2, false
		}
	}
	return s, 0, true
}
