package schedule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/rs/zerolog"
)

// Binaries the suite runs as real OS processes, built once per test process
// from this module (so go.mod pins nats-server's version).
const (
	natsServerPkg = "github.com/nats-io/nats-server/v2"
	agentPkg      = "./integration/testdata/scheduleagent"
	replayPkg     = "./cmd/replay"
)

var (
	binDir   string // set by TestMain, removed after the run
	binMu    sync.Mutex
	binBuilt = map[string]string{}
)

// binary builds pkg for the host (once per process) and returns its path.
func binary(t testing.TB, pkg string) string {
	t.Helper()
	binMu.Lock()
	defer binMu.Unlock()
	if p, ok := binBuilt[pkg]; ok {
		return p
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(binDir, strings.NewReplacer("/", "_", ".", "_").Replace(pkg))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	binBuilt[pkg] = out
	return out
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for ; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
	}
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// server is a nats-server process with JetStream on a store directory that
// outlives its restarts, always on the same ports.
type server struct {
	bin, conf   string
	port, mport int
	logs        testio.Buffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startServer(t testing.TB, dir string) *server {
	t.Helper()
	s := &server{bin: binary(t, natsServerPkg), port: freePort(t), mport: freePort(t)}
	s.conf = filepath.Join(dir, "nats.conf")
	conf := fmt.Sprintf("listen: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\nno_sys_acc: true\n"+
		"jetstream { store_dir: %q, max_memory_store: 64MB, max_file_store: 1GB }\n",
		s.port, s.mport, filepath.Join(dir, "js"))
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("nats-server log (last 4 KiB):\n%s", tail(s.logs.String(), 4096))
		}
	})
	return s
}

func (s *server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }
func (s *server) Addr() string {
	return "127.0.0.1:" + strconv.Itoa(s.port)
}

// start runs the server and waits until JetStream answers its health check.
func (s *server) start() error {
	cmd := exec.Command(s.bin, "-c", s.conf)
	cmd.Stdout, cmd.Stderr = &s.logs, &s.logs
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz?js-enabled-only=true", s.mport)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("nats-server exited at start:\n%s", tail(s.logs.String(), 2048))
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond) // polling the health endpoint
	}
	return errors.New("nats-server not ready within 30s")
}

// kill SIGKILLs the server and waits for it to be gone.
func (s *server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// proxies are toxiproxy proxies in this process, one per client process, so
// that one process's connection can be dropped or slowed.
type proxies struct {
	api *toxiproxy.ApiServer
}

func newProxies() *proxies {
	return &proxies{api: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())}
}

// proxy forwards a loopback port to the server; it keeps its port across
// drops.
type proxy struct {
	mu sync.Mutex
	p  *toxiproxy.Proxy
}

func (ps *proxies) add(t testing.TB, name, upstream string) *proxy {
	t.Helper()
	p := toxiproxy.NewProxy(ps.api, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	pr := &proxy{p: p}
	t.Cleanup(p.Stop)
	return pr
}

func (p *proxy) URL() string { return "nats://" + p.p.Listen }

// drop closes every connection through the proxy and refuses new ones
// until restore.
func (p *proxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.p.Stop()
}

func (p *proxy) restore() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var err error
	for range 50 { // the port may linger a moment after the listener closed
		if err = p.p.Start(); err == nil || errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
			return nil
		}
		time.Sleep(20 * time.Millisecond) // retrying the listen
	}
	return err
}

// latency delays what the server sends to the process by ms (± jitter).
func (p *proxy) latency(ms int) error {
	_, err := p.p.Toxics.AddToxicJson(strings.NewReader(fmt.Sprintf(
		`{"name":"lat","type":"latency","stream":"downstream","attributes":{"latency":%d,"jitter":%d}}`, ms, ms/4)))
	return err
}

func (p *proxy) clearLatency() {
	_ = p.p.Toxics.RemoveToxic(context.Background(), "lat")
}

// exit is how one incarnation of a replica ended.
type exit struct {
	PID      int
	Started  time.Time
	Ended    time.Time
	Code     int
	Signaled string // "killed", "terminated", "" (exited by itself)
}

// replica runs one agent process at a time and restarts it when it exits,
// like a service manager, until stopped.
type replica struct {
	idx     int
	bin     string
	args    []string
	delay   time.Duration // before a restart
	metrics string        // file the agent writes its /metrics address to
	logs    testio.Buffer

	mu      sync.Mutex
	cmd     *exec.Cmd
	started time.Time
	exits   []exit
	frozen  bool
	stopped bool
	gate    chan struct{} // non-nil: keep the replica down until closed
	wake    chan struct{} // closed when a new process started
	done    chan struct{}
}

func startReplica(idx int, bin, metrics string, delay time.Duration, args ...string) *replica {
	r := &replica{idx: idx, bin: bin, args: args, delay: delay, metrics: metrics, wake: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *replica) loop() {
	defer close(r.done)
	for {
		_ = os.Remove(r.metrics)
		cmd := exec.Command(r.bin, r.args...)
		cmd.Stdout, cmd.Stderr = &r.logs, &r.logs
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(&r.logs, "replica %d: %v\n", r.idx, err)
			return
		}
		r.mu.Lock()
		r.cmd, r.started = cmd, time.Now()
		close(r.wake)
		r.wake = make(chan struct{})
		r.mu.Unlock()
		err := cmd.Wait()
		e := exit{PID: cmd.Process.Pid, Ended: time.Now()}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			e.Code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				switch ws.Signal() {
				case syscall.SIGKILL:
					e.Signaled = "killed"
				case syscall.SIGTERM:
					e.Signaled = "terminated"
				default:
					e.Signaled = ws.Signal().String()
				}
			}
		}
		r.mu.Lock()
		e.Started = r.started
		r.exits = append(r.exits, e)
		r.cmd, r.frozen = nil, false
		stopped := r.stopped
		r.mu.Unlock()
		if stopped {
			return
		}
		r.mu.Lock()
		gate := r.gate
		r.mu.Unlock()
		if gate != nil {
			<-gate // scaled down until released (or stopped)
		}
		r.mu.Lock()
		stopped = r.stopped
		r.mu.Unlock()
		if stopped {
			return
		}
		time.Sleep(r.delay) // the service manager's restart delay
	}
}

// pid returns the running process's pid, or 0 between incarnations.
func (r *replica) pid() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// signal sends sig to the running process and returns its pid (0: none).
func (r *replica) signal(sig syscall.Signal) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	if sig == syscall.SIGSTOP {
		r.frozen = true
	}
	if sig == syscall.SIGCONT {
		r.frozen = false
	}
	_ = r.cmd.Process.Signal(sig)
	return r.cmd.Process.Pid
}

// holdDown stops the replica gracefully (SIGTERM) and keeps it down until
// release: a scale-down and scale-up. It returns the stopped pid.
func (r *replica) holdDown() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate == nil {
		r.gate = make(chan struct{})
	}
	if r.cmd == nil {
		return 0
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	return r.cmd.Process.Pid
}

func (r *replica) release() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
}

// waitUp waits until a process runs and has served its metrics address (it
// is connected then, or about to be).
func (r *replica) waitUp(ctx context.Context) error {
	for {
		if r.pid() != 0 {
			if _, err := os.Stat(r.metrics); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replica %d not up: %w", r.idx, ctx.Err())
		case <-time.After(20 * time.Millisecond): // polling the process
		}
	}
}

// stop ends the loop: SIGCONT (if frozen), SIGTERM, and SIGKILL after grace.
func (r *replica) stop(grace time.Duration) {
	r.mu.Lock()
	r.stopped = true
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
	cmd := r.cmd
	if cmd != nil {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	r.mu.Unlock()
	select {
	case <-r.done:
	case <-time.After(grace):
		r.mu.Lock()
		if r.cmd != nil {
			_ = r.cmd.Process.Signal(syscall.SIGKILL)
		}
		r.mu.Unlock()
		<-r.done
	}
}

func (r *replica) exitsSoFar() []exit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]exit(nil), r.exits...)
}

// sample reads the running process's goroutines and resident memory from
// its /metrics.
func (r *replica) sample() (pid int, goroutines, rss float64, err error) {
	pid = r.pid()
	if pid == 0 {
		return 0, 0, 0, errors.New("not running")
	}
	addr, err := os.ReadFile(r.metrics)
	if err != nil {
		return pid, 0, 0, err
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + string(addr) + "/metrics")
	if err != nil {
		return pid, 0, 0, err
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return pid, 0, 0, err
	}
	for line := range strings.Lines(buf.String()) {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "go_goroutines":
			goroutines = v
		case "process_resident_memory_bytes":
			rss = v
		}
	}
	return pid, goroutines, rss, nil
}
