package benchsuite

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// Options configure Run. The zero value is the full run.
type Options struct {
	// Rounds of each measurement. Zero: 7.
	Rounds int
	// Messages per round for throughput measurements. Zero: 20,000.
	Messages int
	// Requests per round for latency measurements. Zero: 2,000.
	Requests int
	// Sizes are the payload sizes. Nil: 256 B and 4 KiB.
	Sizes []int
	// Progress, when set, receives one line per finished measurement.
	Progress io.Writer
	// Only, when set, runs the measurements whose name contains it.
	Only string
}

func (o Options) withDefaults() Options {
	if o.Rounds == 0 {
		o.Rounds = 7
	}
	if o.Messages == 0 {
		o.Messages = 20000
	}
	if o.Requests == 0 {
		o.Requests = 2000
	}
	if o.Sizes == nil {
		o.Sizes = []int{256, 4096}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// Result is one measurement: the raw nats.go figure, jetagent's, both per
// round, in the unit named (higher is better for rates, lower for times).
type Result struct {
	Name       string
	Size       int
	Unit       string // "msg/s", "entries/s", "us"
	HigherWins bool
	Raw, Ours  []float64
	// Target is the ratio issue 7 asks for (ours/raw for rates, raw/ours
	// is not used: for times the ratio is ours/raw and must stay below).
	Target float64
	Peer   string // what "raw" is
}

// Median returns the median of xs.
func Median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// Ratios are ours/raw of each round. The two figures of a round are
// measured back to back, so a ratio cancels the drift of a shared machine
// that the absolute figures show.
func (r Result) Ratios() []float64 {
	out := make([]float64, 0, len(r.Raw))
	for i := range min(len(r.Raw), len(r.Ours)) {
		if r.Raw[i] != 0 {
			out = append(out, r.Ours[i]/r.Raw[i])
		}
	}
	return out
}

// Ratio is the median of Ratios.
func (r Result) Ratio() float64 { return Median(r.Ratios()) }

// Met reports whether the ratio meets the target.
func (r Result) Met() bool {
	if r.Target == 0 {
		return true
	}
	if r.HigherWins {
		return r.Ratio() >= r.Target
	}
	return r.Ratio() <= r.Target
}

// LoadName names the sustained-load run for Options.Only-style selection.
const LoadName = "sustained load"

// Names returns the measurement names in table order, then LoadName.
func Names() []string {
	var out []string
	for _, m := range measurements {
		out = append(out, m.name)
	}
	return append(out, LoadName)
}

// Run starts an embedded server in a temporary directory (file storage)
// and runs every measurement. It returns the results in table order.
func Run(ctx context.Context, o Options) ([]Result, error) {
	o = o.withDefaults()
	dir, err := os.MkdirTemp("", "jetagent-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var out []Result
	for i, m := range measurements {
		if o.Only != "" && !strings.Contains(m.name, o.Only) {
			continue
		}
		for _, size := range o.Sizes {
			if m.oneSize && size != o.Sizes[0] {
				continue
			}
			r, err := measureOnFreshServer(ctx, filepath.Join(dir, fmt.Sprintf("m%d-%d", i, size)), o, m, size)
			if err != nil {
				return out, fmt.Errorf("%s (%d B): %w", m.name, size, err)
			}
			fmt.Fprintf(o.Progress, "%-34s %5d B  raw %10.0f  jetagent %10.0f %-9s ratio %.2f\n",
				r.Name, r.Size, Median(r.Raw), Median(r.Ours), r.Unit, r.Ratio())
			out = append(out, r)
		}
	}
	return out, nil
}

// measureOnFreshServer runs one line of the table on a server of its own,
// so no line pays for what an earlier one left behind (message ids in the
// deduplication window, replies, dead letters, a grown heap).
func measureOnFreshServer(ctx context.Context, dir string, o Options, m measurement, size int) (Result, error) {
	srv, conn, stop, err := startServer(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	if err != nil {
		return Result{}, err
	}
	defer stop()
	goruntime.GC() // start each line from a collected heap
	return (&env{ctx: ctx, srv: srv, conn: conn, o: o}).measure(m, size)
}

// startServer starts an embedded server in opts.DataDir, connects and
// provisions the default topology; stop undoes all of it and removes the
// directory.
func startServer(ctx context.Context, opts bus.EmbeddedOptions) (*bus.EmbeddedServer, *bus.Conn, func(), error) {
	removeDir := func() { os.RemoveAll(opts.DataDir) }
	srv, err := bus.StartEmbedded(ctx, opts)
	if err != nil {
		removeDir()
		return nil, nil, nil, err
	}
	conn, err := srv.Connect(ctx)
	if err == nil {
		err = bus.Provision(ctx, conn.JetStream(), topo)
	}
	stop := func() {
		if conn != nil {
			conn.Close()
		}
		srv.Shutdown(context.Background())
		removeDir()
	}
	if err != nil {
		stop()
		return nil, nil, nil, err
	}
	return srv, conn, stop, nil
}

// Markdown renders results as the docs/benchmarks.md table, with the
// machine description.
func Markdown(results []Result, o Options, took time.Duration) string {
	o = o.withDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\n")
	fmt.Fprintf(&b, "Written by `go run ./cmd/bench` (`make bench`) on %s. Each line is a pair of\n", time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "measurements run alternately, %d rounds each, on an embedded nats-server of its own\n", o.Rounds)
	fmt.Fprintf(&b, "(file storage); figures are medians (min-max in brackets). The ratio is jetagent/raw per\n")
	fmt.Fprintf(&b, "round, median over rounds (each round's pair runs back to back, so its ratio cancels\n")
	fmt.Fprintf(&b, "the drift of a shared machine). Compare the ratios, not the absolute figures: those\n")
	fmt.Fprintf(&b, "drift between machines and runs. Rows marked informational\n")
	fmt.Fprintf(&b, "compare with a variant of the raw loop to show where a gap comes from. To see where\n")
	fmt.Fprintf(&b, "the time goes: `go run ./cmd/bench --only consume --load 0 --out \"\" --cpuprofile cpu.out`,\n")
	fmt.Fprintf(&b, "then `go tool pprof -top cpu.out`.\n\n")
	fmt.Fprintf(&b, "Machine: %s, %d CPUs, %s %s/%s. Run took %v.\n\n", cpuModel(), goruntime.NumCPU(), goruntime.Version(), goruntime.GOOS, goruntime.GOARCH, took.Round(time.Second))
	if len(results) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "| measurement | payload | raw | jetagent | unit | ratio | target | compared with |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		target := "-"
		if r.Target != 0 {
			op := ">="
			if !r.HigherWins {
				op = "<="
			}
			mark := "met"
			if !r.Met() {
				mark = fmt.Sprintf("not met: %.3f", r.Ratio()) // 0.848 shows as 0.85
			}
			target = fmt.Sprintf("%s %.2f (%s)", op, r.Target, mark)
		}
		fmt.Fprintf(&b, "| %s | %d B | %s | %s | %s | %s | %s | %s |\n", r.Name, r.Size,
			spread(r.Raw), spread(r.Ours), r.Unit, ratioSpread(r.Ratios()), target, r.Peer)
	}
	return b.String()
}

func ratioSpread(xs []float64) string {
	if len(xs) == 0 {
		return "-"
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return fmt.Sprintf("%.2f (%.2f-%.2f)", Median(s), s[0], s[len(s)-1])
}

func spread(xs []float64) string {
	s := slices.Clone(xs)
	slices.Sort(s)
	return fmt.Sprintf("%.0f (%.0f-%.0f)", Median(s), s[0], s[len(s)-1])
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return goruntime.GOARCH
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return goruntime.GOARCH
}
