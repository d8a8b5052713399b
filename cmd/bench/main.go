// Command bench measures jetagent against hand-written nats.go code in
// one run on one embedded server, prints the table and writes it to
// docs/benchmarks.md. The logic lives in internal/benchsuite.
//
//	go run ./cmd/bench [--rounds 5] [--messages 20000] [--out docs/benchmarks.md]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/internal/benchsuite"
)

func main() {
	var o benchsuite.Options
	flag.IntVar(&o.Rounds, "rounds", 5, "rounds of each measurement (medians and spreads are over rounds)")
	flag.IntVar(&o.Messages, "messages", 20000, "messages per round of the throughput measurements")
	flag.IntVar(&o.Requests, "requests", 2000, "requests per round of the latency measurements")
	out := flag.String("out", "docs/benchmarks.md", "markdown file to write (empty: none)")
	flag.StringVar(&o.Only, "only", "", "run only the measurements whose name contains this (e.g. publish, consume, replay)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Progress = os.Stderr
	start := time.Now()
	results, err := benchsuite.Run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	md := benchsuite.Markdown(results, o, time.Since(start))
	fmt.Print(md)
	if *out != "" {
		if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "written to", *out)
	}
}
