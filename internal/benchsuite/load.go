package benchsuite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// LoadOptions configure RunLoad.
type LoadOptions struct {
	// Messages is how many tasks the agent handles. Zero: 1,000,000.
	Messages int
	// Size is the payload size in bytes. Zero: 256.
	Size int
	// Backlog bounds how far publishing runs ahead of the agent, so the
	// load is sustained rather than one burst. Zero: 50,000.
	Backlog int
	// Timeout bounds the whole run. Zero: 10 minutes.
	Timeout time.Duration
	// Every is the number of tasks between two rows of the table. Zero:
	// Messages/10.
	Every int
	// Agent returns the command that runs `agent` with args: the agent
	// process under test, exactly as an operator runs it.
	Agent func(ctx context.Context, args []string) *exec.Cmd
	// Progress, when set, receives one line per row.
	Progress io.Writer
}

func (o LoadOptions) withDefaults() LoadOptions {
	if o.Messages == 0 {
		o.Messages = 1_000_000
	}
	if o.Size == 0 {
		o.Size = 256
	}
	if o.Backlog == 0 {
		o.Backlog = 50_000
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.Every == 0 {
		o.Every = max(o.Messages/10, 1)
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	return o
}

// LoadSample is the agent process as its /metrics showed it.
type LoadSample struct {
	Elapsed    time.Duration
	Processed  int64
	RSS        int64 // resident set size in bytes; -1 where the OS does not report it
	Goroutines int
}

// LoadResult is the outcome of RunLoad: one sample per Every tasks, the
// highest RSS and the goroutine range seen in any sample.
type LoadResult struct {
	Messages, Size int
	Rows           []LoadSample
	MaxRSS         int64 // -1 where the OS does not report RSS
	MinGoroutines  int
	MaxGoroutines  int
	Took           time.Duration
}

// MaxRSSTarget is issue 7's bound on an agent's resident memory.
const MaxRSSTarget = 64 << 20

// RunLoad starts an embedded server on loopback and one agent process
// (`agent run --nats URL --ops-listen ADDR`, the built-in echo handler,
// default settings), publishes o.Messages tasks to it while it works,
// never more than o.Backlog ahead, and reads the agent's own /metrics
// (jetagent_processed_total, go_goroutines,
// process_resident_memory_bytes) every 100 ms until every task is
// processed. It fails if any task is dead-lettered or the agent exits.
func RunLoad(ctx context.Context, o LoadOptions) (LoadResult, error) {
	o = o.withDefaults()
	res := LoadResult{Messages: o.Messages, Size: o.Size, MinGoroutines: -1, MaxRSS: -1}
	if o.Agent == nil {
		return res, errors.New("benchsuite: LoadOptions.Agent is required")
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "jetagent-load-")
	if err != nil {
		return res, err
	}
	srv, conn, stop, err := startServer(ctx, bus.EmbeddedOptions{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return res, err
	}
	defer stop()
	ops, err := freeAddr()
	if err != nil {
		return res, err
	}
	const agent = "load"
	var agentErr tail
	cmd := o.Agent(ctx, []string{"run", "--nats", srv.ClientURL(), "--name", agent, "--ops-listen", ops, "--log-level", "warn"})
	cmd.Stdout, cmd.Stderr = &agentErr, &agentErr
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start the agent: %w", err)
	}
	var waitErr error // set before exited is closed
	exited := make(chan struct{})
	go func() { waitErr = cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	client := &http.Client{Timeout: 5 * time.Second}
	if err := waitReady(ctx, client, "http://"+ops+"/readyz", exited); err != nil {
		return res, fmt.Errorf("%w (agent output: %s)", err, agentErr.String())
	}

	var processed atomic.Int64
	pubErr, pubDone := make(chan error, 1), make(chan struct{})
	pubCtx, stopPub := context.WithCancel(ctx)
	go func() {
		defer close(pubDone)
		pubErr <- publishSteadily(pubCtx, conn, agent, o, &processed)
	}()
	defer func() { stopPub(); <-pubDone }() // before the connection closes

	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	next := int64(o.Every)
	for {
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("load: %d of %d tasks processed: %w", processed.Load(), o.Messages, ctx.Err())
		case <-exited:
			return res, fmt.Errorf("load: the agent exited (%v) after %d tasks: %s", waitErr, processed.Load(), agentErr.String())
		case err := <-pubErr:
			if err != nil {
				return res, fmt.Errorf("load: publish: %w", err)
			}
			pubErr = nil // all published
		case <-tick.C:
		}
		m, err := scrape(ctx, client, "http://"+ops+"/metrics")
		if err != nil {
			return res, err
		}
		if dl := m["jetagent_dead_lettered_total"] + m["jetagent_failed_total"]; dl != 0 {
			return res, fmt.Errorf("load: %v tasks failed or dead-lettered", dl)
		}
		s := LoadSample{Elapsed: time.Since(start), Processed: int64(m["jetagent_processed_total"]),
			Goroutines: int(m["go_goroutines"]), RSS: -1}
		if v, ok := m["process_resident_memory_bytes"]; ok {
			s.RSS = int64(v)
		}
		processed.Store(s.Processed)
		res.MaxRSS = max(res.MaxRSS, s.RSS)
		if s.Processed >= int64(o.Every)/10 { // past start-up: the pool and buffers exist
			if res.MinGoroutines < 0 || s.Goroutines < res.MinGoroutines {
				res.MinGoroutines = s.Goroutines
			}
			res.MaxGoroutines = max(res.MaxGoroutines, s.Goroutines)
		}
		if s.Processed >= next || s.Processed >= int64(o.Messages) {
			res.Rows = append(res.Rows, s)
			fmt.Fprintf(o.Progress, "load: %8d tasks  %6.1fs  RSS %s  goroutines %d\n",
				s.Processed, s.Elapsed.Seconds(), mib(s.RSS), s.Goroutines)
			for next <= s.Processed {
				next += int64(o.Every)
			}
		}
		if s.Processed >= int64(o.Messages) {
			res.Took = s.Elapsed
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return res, err
	}
	<-exited
	if waitErr != nil {
		return res, fmt.Errorf("load: the agent did not stop cleanly: %w: %s", waitErr, agentErr.String())
	}
	return res, nil
}

// publishSteadily publishes o.Messages tasks in batches, waiting while
// more than o.Backlog are unprocessed.
func publishSteadily(ctx context.Context, conn *bus.Conn, agent string, o LoadOptions, processed *atomic.Int64) error {
	pub := bus.NewPublisher(conn.JetStream())
	p := payload(o.Size)
	subject := topo.TaskSubject(agent, envelope.TaskRequest)
	batch := min(o.Backlog/2, 10_000)
	wait := time.NewTicker(20 * time.Millisecond)
	defer wait.Stop()
	for sent := 0; sent < o.Messages; {
		for int64(sent)-processed.Load() > int64(o.Backlog-batch) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-wait.C:
			}
		}
		n := min(batch, o.Messages-sent)
		envs := make([]*envelope.Envelope, n)
		for i := range envs {
			env, err := envelope.New("load", agent, envelope.TaskRequest, p)
			if err != nil {
				return err
			}
			envs[i] = env
		}
		if _, err := pub.PublishEnvelopes(ctx, subject, envs); err != nil {
			return err
		}
		sent += n
	}
	return nil
}

// waitReady polls url until it answers 200, the process exits or ctx ends.
func waitReady(ctx context.Context, c *http.Client, url string, exited <-chan struct{}) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := c.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("load: the agent never became ready: %w", ctx.Err())
		case <-exited:
			return errors.New("load: the agent exited before it was ready")
		case <-t.C:
		}
	}
}

// scrape reads the agent's /metrics and sums each metric's samples over
// their labels (counters, gauges and untyped values).
func scrape(ctx context.Context, c *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("load: scrape the agent: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("load: scrape the agent: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("load: scrape the agent: %w", err)
	}
	sums := make(map[string]float64, len(families))
	for name, f := range families {
		for _, m := range f.GetMetric() {
			sums[name] += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
	}
	return sums, nil
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func mib(b int64) string {
	if b < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// tail keeps the last 4 KiB written to it: the agent's last words.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 4096 {
		t.buf = t.buf[len(t.buf)-4096:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// LoadMarkdown renders r as the sustained-load section of docs/benchmarks.md.
func LoadMarkdown(r LoadResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Sustained load\n\n")
	fmt.Fprintf(&b, "One agent process (`agent run --nats URL`, built-in echo handler, default settings)\n")
	fmt.Fprintf(&b, "handled %d tasks of %d B while they were published, in %v (%.0f tasks/s). Figures are its own\n",
		r.Messages, r.Size, r.Took.Round(100*time.Millisecond), float64(r.Messages)/r.Took.Seconds())
	fmt.Fprintf(&b, "/metrics (`process_resident_memory_bytes`, `go_goroutines`) read every 100 ms.\n\n")
	verdict := "met"
	if r.MaxRSS >= MaxRSSTarget {
		verdict = "not met"
	}
	if r.MaxRSS < 0 {
		verdict = "not measured on this OS"
	}
	fmt.Fprintf(&b, "Highest RSS: %s (target < 64 MiB: %s). Goroutines after start-up: %d-%d.\n\n",
		mib(r.MaxRSS), verdict, r.MinGoroutines, r.MaxGoroutines)
	fmt.Fprintf(&b, "| tasks processed | elapsed | RSS | goroutines |\n|---|---|---|---|\n")
	for _, s := range r.Rows {
		fmt.Fprintf(&b, "| %d | %.1f s | %s | %d |\n", s.Processed, s.Elapsed.Seconds(), mib(s.RSS), s.Goroutines)
	}
	return b.String()
}
