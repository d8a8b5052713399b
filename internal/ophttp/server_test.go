package ophttp_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/ophttp"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/metrics"
	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus"
)

// get fetches path from the server over HTTP, without keeping the
// connection (so no client goroutine outlives the test).
func get(t *testing.T, srv *ophttp.Server, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + srv.Addr().String() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// waitStatus polls path until it answers code.
func waitStatus(t *testing.T, srv *ophttp.Server, path string, code int) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, body := get(t, srv, path)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q, want %d", path, got, body, code)
		}
		time.Sleep(20 * time.Millisecond) // polling an external condition
	}
}

// startNATS starts a listening embedded server on dir at listen. The
// caller shuts it down (after the runtimes on it have stopped).
func startNATS(t *testing.T, dir, listen string) *bus.EmbeddedServer {
	t.Helper()
	srv, err := bus.StartEmbedded(testkit.Context(t), bus.EmbeddedOptions{DataDir: dir, Listen: listen, MaxStore: 1 << 30})
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	return srv
}

func shutdown(t *testing.T, srv *bus.EmbeddedServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("shutdown NATS: %v", err)
	}
}

func startOps(t *testing.T, cfg ophttp.Config) *ophttp.Server {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	srv, err := ophttp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(context.Background()); err != nil {
			t.Errorf("stop ops server: %v", err)
		}
	})
	return srv
}

// /readyz answers 503 before the runtime starts, 200 once it runs, 503
// while the NATS server is down, and 200 again once it is back (same port,
// same store), where the agent goes on answering; /metrics is scraped
// over HTTP throughout, /healthz stays 200.
func TestReadinessFollowsTheConnectionAndTheRuntime(t *testing.T) {
	dir := t.TempDir()
	nats1 := startNATS(t, dir, "127.0.0.1:0")
	current := nats1
	t.Cleanup(func() { shutdown(t, current) }) // runs last: after the runtime stopped
	u, err := url.Parse(nats1.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bus.Connect(testkit.Context(t), nats1.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	topo := bus.Topology{} // file storage: the streams survive the restart
	if err := bus.Provision(testkit.Context(t), conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{ScrapeTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: topo, Observer: m.Agent("echo")})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, runtime.Echo)
	if err := m.Agent("echo").Watch(rt); err != nil {
		t.Fatal(err)
	}
	ops := startOps(t, ophttp.Config{Gatherer: reg, Checks: []ophttp.Check{ophttp.Connection(conn), ophttp.Runtime(rt)}})

	if code, _ := get(t, ops, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	code, body := get(t, ops, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "agent echo: "+runtime.ErrNotStarted.Error()) {
		t.Errorf("/readyz before Start = %d %q, want 503 naming the runtime", code, body)
	}

	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if body := waitStatus(t, ops, "/readyz", http.StatusOK); body != "ok\n" {
		t.Errorf("/readyz body %q", body)
	}
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Topology: topo})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	sendOne := func() {
		t.Helper()
		env, err := envelope.New("tester", "echo", envelope.TaskRequest, "hello")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.Send(testkit.Context(t), env); err != nil {
			t.Fatal(err)
		}
	}
	sendOne()

	shutdown(t, nats1)
	body = waitStatus(t, ops, "/readyz", http.StatusServiceUnavailable)
	if !strings.Contains(body, "not ready: nats: connection") {
		t.Errorf("/readyz while NATS is down = %q, want the connection named", body)
	}
	// /metrics still answers (without the server-read gauges) and /healthz
	// stays up: the process is alive, just not ready.
	code, body = get(t, ops, "/metrics")
	if code != http.StatusOK || !strings.Contains(body, `jetagent_processed_total{agent="echo",subject="jetagent.tasks.echo.task.request"} 1`) {
		t.Errorf("/metrics while NATS is down = %d:\n%s", code, body)
	}
	if code, _ := get(t, ops, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while NATS is down = %d", code)
	}

	current = startNATS(t, dir, net.JoinHostPort(u.Hostname(), u.Port()))
	waitStatus(t, ops, "/readyz", http.StatusOK)
	sendOne()
	// The reply reaches the client before the agent acks and counts it.
	wants := []string{
		`jetagent_processed_total{agent="echo",subject="jetagent.tasks.echo.task.request"} 2`,
		`jetagent_consumer_pending{agent="echo"} 0`,
		`jetagent_consumer_ack_pending{agent="echo"} 0`,
		`jetagent_dlq_messages{agent="echo"} 0`,
		`jetagent_handler_duration_seconds_count{agent="echo",subject="jetagent.tasks.echo.task.request"} 2`,
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body = get(t, ops, "/metrics")
		missing := ""
		for _, want := range wants {
			if !strings.Contains(body, want) {
				missing = want
			}
		}
		if code == http.StatusOK && missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics after the restart = %d, lacks %s:\n%s", code, missing, body)
		}
		time.Sleep(20 * time.Millisecond) // polling an external condition
	}
}

func TestServerRunsOnce(t *testing.T) {
	srv, err := ophttp.New(ophttp.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatalf("Stop before Start: %v", err)
	}
	if err := srv.Start(testkit.Context(t)); !errors.Is(err, ophttp.ErrStopped) {
		t.Fatalf("Start after Stop = %v, want ErrStopped", err)
	}

	srv = startOps(t, ophttp.Config{})
	if err := srv.Start(testkit.Context(t)); !errors.Is(err, ophttp.ErrStarted) {
		t.Errorf("second Start = %v, want ErrStarted", err)
	}
	if code, body := get(t, srv, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/readyz with no checks = %d %q", code, body)
	}
	if code, _ := get(t, srv, "/metrics"); code != http.StatusNotFound {
		t.Errorf("/metrics without a gatherer = %d, want 404", code)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if _, err := ophttp.New(ophttp.Config{Checks: []ophttp.Check{{Name: "x"}}}); err == nil {
		t.Error("a check without a func was accepted")
	}
}

func TestStartReportsATakenAddress(t *testing.T) {
	busy := startOps(t, ophttp.Config{})
	srv, err := ophttp.New(ophttp.Config{Addr: busy.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(testkit.Context(t)); err == nil {
		_ = srv.Stop(context.Background())
		t.Fatal("Start on a taken address succeeded")
	}
}
