package agentcli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/nats-io/nats-server/v2/server"
)

// Tests of what the commands say when something is off: each message names
// the cause and the way out that applies to this situation.

// startRun runs "agent run" with args in the background until it is ready
// (or exits), and returns its log and a stop function that cancels it and
// returns its exit code.
func startRun(t *testing.T, args ...string) (log *testio.Buffer, exited <-chan int, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log = &testio.Buffer{}
	done := make(chan int, 1)
	go func() { done <- Main(ctx, append([]string{"run"}, args...), &bytes.Buffer{}, log) }()
	code := -1
	stopped := false
	stop = func() int {
		if !stopped {
			stopped = true
			cancel()
			code = <-done
		}
		return code
	}
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(log.String(), "ready;") {
		select {
		case c := <-done:
			stopped, code = true, c
			cancel()
			ch := make(chan int, 1)
			ch <- c
			return log, ch, stop
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent run never became ready: %s", log.String())
		}
		time.Sleep(10 * time.Millisecond) // polling another goroutine's log output
	}
	return log, done, stop
}

func TestDataDirInUseNamesTheOwnersURL(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	startRun(t, "--data-dir", dir, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	code, _, stderr := runMain(t, "run", "--data-dir", dir, "--listen", "127.0.0.1:"+strconv.Itoa(freePort(t)))
	want := "--nats nats://127.0.0.1:" + strconv.Itoa(port)
	if code != 1 || !strings.Contains(stderr, want) || strings.Contains(stderr, bus.DefaultURL) {
		t.Fatalf("second run on the same data dir: exit %d, stderr %q; want the owner's URL (%s)", code, stderr, want)
	}
}

func TestEmbeddedServerRefusesANonLoopbackListenAddress(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:" + strconv.Itoa(freePort(t)), ":" + strconv.Itoa(freePort(t))} {
		log, exited, stop := startRun(t, "--data-dir", t.TempDir(), "--listen", addr)
		select {
		case code := <-exited:
			if code != 2 || !strings.Contains(log.String(), "authentication") {
				t.Errorf("--listen %s: exit %d, stderr %q; want a usage error naming the missing authentication", addr, code, log.String())
			}
		default:
			stop()
			t.Errorf("--listen %s: the embedded server (no authentication) listens on every interface", addr)
		}
	}
}

func TestReadyHintNamesTheConnectionWhenNotTheDefault(t *testing.T) {
	port := strconv.Itoa(freePort(t))
	log, _, stop := startRun(t, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:"+port, "--prefix", "acme")
	stop()
	want := "try: agent send --nats nats://127.0.0.1:" + port + " --prefix acme --to echo"
	if !strings.Contains(log.String(), want) {
		t.Fatalf("log %q lacks %q", log.String(), want)
	}
}

func TestReplicasAboveOneAreRefusedOnTheEmbeddedServer(t *testing.T) {
	start := time.Now()
	code, _, stderr := runMain(t, "run", "--replicas", "3", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")
	if code != 2 || !strings.Contains(stderr, "--replicas") || !strings.Contains(stderr, "cluster") {
		t.Fatalf("exit %d, stderr %q; want a usage error before the server starts", code, stderr)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refused after %v", took)
	}
}

// startPlainServer starts a nats-server without JetStream on a free port.
func startPlainServer(t *testing.T) string {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("plain server not ready")
	}
	return srv.ClientURL()
}

func TestAServerWithoutJetStreamIsNamedAsTheCause(t *testing.T) {
	url := startPlainServer(t)
	code, _, stderr := runMain(t, "run", "--nats", url)
	if code != 1 || !strings.Contains(stderr, "JetStream is not enabled") {
		t.Errorf("run: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runMain(t, "send", "--nats", url, "--to", "echo", "--timeout", "5s")
	if code != 1 || !strings.Contains(stderr, "JetStream is not enabled") {
		t.Errorf("send: exit %d, stderr %q", code, stderr)
	}
}

func TestPayloadIntegersBeyond64BitsAreRefused(t *testing.T) {
	for _, p := range []string{"123456789012345678901234567890", `{"n":[-99999999999999999999]}`} {
		code, _, stderr := runMain(t, "send", "--to", "echo", "--payload", p, "--nats", "nats://127.0.0.1:1")
		if code != 2 || !strings.Contains(stderr, "64 bits") {
			t.Errorf("--payload %s: exit %d, stderr %q; want a usage error (the integer would become a float)", p, code, stderr)
		}
	}
}

func TestYAMLSyntaxErrorsPointAtTheirLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tab.yaml")
	// line 5 is indented with a tab, which YAML forbids
	text := "agents:\n  - name: a\n    concurrency: 2\n  - name: b\n\tconcurrency: 3\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := validateMain(t, path)
	if code != 1 || !strings.HasPrefix(stderr, path+":5") {
		t.Fatalf("exit %d, stderr %q; want the problem on line 5", code, stderr)
	}
	// a parser error: the flow sequence opened on line 3 is never closed
	if err := os.WriteFile(path, []byte("agents:\n  - name: a\n    types: [task.request, x\n  - name: b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = validateMain(t, path)
	if code != 1 || !strings.HasPrefix(stderr, path+":3: invalid YAML") {
		t.Fatalf("exit %d, stderr %q; want the problem on line 3", code, stderr)
	}
}

func TestSendInterruptedSaysTheTaskWasPublished(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{Listen: true})
	conn := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, conn.JetStream(), bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	sendCtx, interrupt := context.WithCancel(ctx)
	var out, errb testio.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(sendCtx, []string{"send", "--nats", srv.ClientURL(), "--to", "nobody", "--task-id", "t-1", "--timeout", "30s"}, &out, &errb)
	}()
	st, err := conn.JetStream().Stream(ctx, bus.Topology{}.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling the stream for the published task
	}
	interrupt() // Ctrl-C
	code := <-done
	if code != 130 || !strings.Contains(errb.String(), "published") || !strings.Contains(errb.String(), "t-1") || strings.Contains(errb.String(), "no reply") ||
		!strings.Contains(errb.String(), "waits in the stream until an agent named nobody starts") {
		t.Fatalf("interrupted send: exit %d, stderr %q; want 130 and that task t-1 was published and will still run", code, errb.String())
	}
}

// TestRepeatedWarningsAreAggregated: a flood of bad input writes a few
// lines and a count, not a line per message; every dead letter is still in
// the DLQ.
func TestRepeatedWarningsAreAggregated(t *testing.T) {
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	log, _, stop := startRun(t, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:"+strconv.Itoa(port))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := bus.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 300
	topo := bus.Topology{}
	for i := range n {
		if _, err := conn.JetStream().Publish(ctx, topo.TaskSubject("echo", "task.request"), []byte("not msgpack "+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	dlqStream, err := conn.JetStream().Stream(ctx, topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	for {
		info, err := dlqStream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == n {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d of %d dead letters stored", info.State.Msgs, n)
		}
		time.Sleep(20 * time.Millisecond) // polling the DLQ
	}
	stop()
	lines := strings.Count(log.String(), "msg=dead-lettered")
	if lines > 20 || !strings.Contains(log.String(), "suppressed") {
		t.Fatalf("%d malformed messages wrote %d \"dead-lettered\" lines (want at most 20, and a count of the rest):\n%.2000s", n, lines, log.String())
	}
}

// TestDataDirHeldByAProcessThatListensNowhere: replay (in process, no
// listener) holds the directory; agent run must not send the user to
// 127.0.0.1:4222.
func TestDataDirHeldByAProcessThatListensNowhere(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	code, _, stderr := runMain(t, "run", "--data-dir", dir, "--listen", "127.0.0.1:0")
	if code != 1 || strings.Contains(stderr, "4222") || !strings.Contains(stderr, "accepts no network clients") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr = runMain(t, "ls", "--data-dir", dir); code != 1 || strings.Contains(stderr, "4222") || !strings.Contains(stderr, "accepts no network clients") {
		t.Fatalf("ls: exit %d, stderr %q", code, stderr)
	}
}
