//go:build linux

package agentcli

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/runtime"
)

// exitWithin is how soon after one of its parts is killed an `agent run`
// process must have exited.
const exitWithin = time.Second

// Killing one part of a real `agent run` process, from outside it, ends
// the process non-zero within a second, and its last line names the cause.
func TestRunExitsWhenAPartDies(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary and runs it")
	}
	bin := buildAgent(t)
	cases := []struct {
		name  string
		kill  func(t *testing.T, p *agentProcess)
		cause string // in the process's last line
	}{
		{"the runtime's consumer is deleted", func(t *testing.T, p *agentProcess) {
			if err := p.js(t).DeleteConsumer(ctxFor(t, 5*time.Second), bus.Topology{}.TasksStream(), "echo"); err != nil {
				t.Fatal(err)
			}
		}, "runtime echo: pull ended"},
		{"the tasks stream is deleted", func(t *testing.T, p *agentProcess) {
			if err := p.js(t).DeleteStream(ctxFor(t, 5*time.Second), bus.Topology{}.TasksStream()); err != nil {
				t.Fatal(err)
			}
		}, "runtime echo: pull ended"},
		{"the ops listener is shut down", func(t *testing.T, p *agentProcess) {
			if err := testio.ShutdownListener(p.cmd.Process.Pid, p.opsPort); err != nil {
				t.Fatal(err)
			}
		}, "ophttp: serving 127.0.0.1:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startAgentProcess(t, bin)
			p.waitReady(t)
			p.connect(t) // before the kill: its time is the kill's
			killed := time.Now()
			tc.kill(t, p)
			code, exited := p.waitExit(t, 5*time.Second)
			took := exited.Sub(killed)
			t.Logf("exit %d %v after the kill", code, took.Round(time.Millisecond))
			if code <= 0 || took > exitWithin {
				t.Errorf("exit %d %v after the kill, want non-zero within %v", code, took.Round(time.Millisecond), exitWithin)
			}
			lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
			t.Logf("last line: %s", lines[len(lines)-1])
			if last := lines[len(lines)-1]; !strings.HasPrefix(last, "agent: ") || !strings.Contains(last, tc.cause) {
				t.Errorf("last line %q, want agent: ... %s ...", last, tc.cause)
			}
			if t.Failed() {
				t.Logf("stderr:\n%s", p.stderr.String())
			}
		})
	}
}

// When one agent dies while another has a task in hand, the process
// finishes that task before it exits (as on SIGTERM), and meanwhile
// /healthz answers 503 naming the dead agent.
func TestHealthzNamesTheDeadAgentWhileTheOthersFinish(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary and runs it")
	}
	bin := buildAgent(t)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	file := writeConfig(t, `
agents:
	- name: echo
	- name: slow
		handler:
			kind: exec
			command: [sh, -c, 'cat >/dev/null; touch `+started+`; sleep 2; echo "{\"done\": true}"']
`)
	p := startAgentProcess(t, bin, "--config", file)
	p.waitReady(t)
	p.connect(t)
	client, err := runtime.NewClient(p.conn, runtime.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	env, err := envelope.New(client.Name(), "slow", envelope.TaskRequest, 1)
	if err != nil {
		t.Fatal(err)
	}
	replied := make(chan error, 1)
	go func() {
		_, err := client.Send(ctxFor(t, 30*time.Second), env)
		replied <- err
	}()
	poll(t, "the slow task to start", func() bool { _, err := os.Stat(started); return err == nil })

	if err := p.js(t).DeleteConsumer(ctxFor(t, 5*time.Second), bus.Topology{}.TasksStream(), "echo"); err != nil {
		t.Fatal(err)
	}
	healthz := "http://127.0.0.1:" + strconv.Itoa(p.opsPort) + "/healthz"
	var body string
	poll(t, "/healthz to answer 503", func() bool {
		var code int
		code, body = httpGet(t, healthz)
		return code == http.StatusServiceUnavailable
	})
	if !strings.HasPrefix(body, "dead: agent echo: runtime echo: pull ended: ") || strings.Contains(body, "slow") {
		t.Errorf("/healthz body %q, want the echo agent named, alone", body)
	}
	if err := <-replied; err != nil {
		t.Errorf("the slow task in hand got no reply: %v", err)
	}
	if code, _ := p.waitExit(t, 10*time.Second); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", p.stderr.String())
	}
}

// poll checks cond until it holds, for up to 5 s.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling another process
	}
}

// buildAgent builds cmd/agent for this test.
func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agent")
	ctx := ctxFor(t, 5*time.Minute)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/agent")
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// agentProcess is `agent run` with the echo agent, on its own embedded
// server, serving /readyz.
type agentProcess struct {
	cmd      *exec.Cmd
	natsURL  string
	opsPort  int
	stderr   testio.Buffer
	exited   chan struct{} // closed once cmd.Wait has returned
	exitedAt time.Time
	conn     *bus.Conn
	connOnce sync.Once
}

// startAgentProcess starts bin run on free ports, with extra arguments.
func startAgentProcess(t *testing.T, bin string, extra ...string) *agentProcess {
	t.Helper()
	port := freePort(t)
	p := &agentProcess{natsURL: "nats://127.0.0.1:" + strconv.Itoa(port), opsPort: freePort(t), exited: make(chan struct{})}
	args := append([]string{"run", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--data-dir", t.TempDir(),
		"--ops-listen", "127.0.0.1:" + strconv.Itoa(p.opsPort)}, extra...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.exitedAt = time.Now()
		close(p.exited)
	}()
	t.Cleanup(func() {
		if p.conn != nil {
			p.conn.Close()
		}
		select {
		case <-p.exited:
			return
		default:
		}
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitReady polls /readyz until it answers 200.
func (p *agentProcess) waitReady(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	url := "http://127.0.0.1:" + strconv.Itoa(p.opsPort) + "/readyz"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("agent exited before it was ready: %s", p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 200 (last: %v): %s", err, p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond) // polling another process
	}
}

func (p *agentProcess) connect(t *testing.T) {
	t.Helper()
	p.connOnce.Do(func() {
		conn, err := bus.Connect(ctxFor(t, 5*time.Second), p.natsURL)
		if err != nil {
			t.Fatal(err)
		}
		p.conn = conn
	})
}

func (p *agentProcess) js(t *testing.T) interface {
	DeleteConsumer(ctx context.Context, stream, consumer string) error
	DeleteStream(ctx context.Context, stream string) error
} {
	p.connect(t)
	return p.conn.JetStream()
}

// waitExit waits up to limit for the process to exit, and returns its
// exit code (-1 when a signal ended it) and when it exited. Past limit it
// kills the process and fails the test.
func (p *agentProcess) waitExit(t *testing.T, limit time.Duration) (int, time.Time) {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode(), p.exitedAt
	case <-time.After(limit):
		t.Fatalf("the process was still running %v after the kill:\n%s", limit, p.stderr.String())
		return 0, time.Time{}
	}
}
