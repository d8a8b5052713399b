package integration

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/console"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/runtime/beacon"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go"
)

// The console does its whole job as the documented operator user
// ("replay"), on a server that enforces the permissions, while agent A
// runs as agent-A with its status reports: every page renders without an
// error, the agent shows its consumer, replica and breaker, a replay, a
// purge and a task cancel succeed, and the server refuses the console
// nothing.
func TestConsoleRunsWithTheOperatorPermissions(t *testing.T) {
	s := startSecured(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Agent A, as agent-A: echo, and a task in steps that waits.
	var denied sync.Map
	recordDenied := nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			denied.Store(err.Error(), true)
		}
	})
	agentConn := s.connect(t, "agent-A", []nats.Option{recordDenied})
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	bc := beacon.New(agentConn, s.topo, "A", beacon.Options{Interval: 200 * time.Millisecond})
	rt, err := runtime.New(agentConn, runtime.Config{Agent: "A", Topology: s.topo, Logger: slog.New(slog.DiscardHandler),
		Observer: bc.Observer(nil), KeepSnapshots: true})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, task *runtime.Task) (any, error) {
		if task.TaskID() != "long-1" {
			return runtime.Echo(ctx, task)
		}
		if err := task.Step(ctx, 1, func(context.Context) (any, error) { return "half", nil }); err != nil {
			return nil, err
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, task.Step(ctx, 2, func(context.Context) (any, error) { return nil, nil })
	})
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	bc.Start(rt)
	t.Cleanup(func() {
		once.Do(func() { close(release) })
		bc.Stop()
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		_ = rt.Stop(sctx)
	})

	// A client's malformed task (dead-lettered by A) and a long task.
	client := s.connect(t, "client-C", nil)
	if _, err := client.JetStream().Publish(ctx, s.topo.TaskSubject("A", envelope.TaskRequest), []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	long, _ := envelope.New("C", "A", envelope.TaskRequest, "work")
	long.TaskID = "long-1"
	if _, err := bus.NewPublisher(client.JetStream()).PublishEnvelope(ctx, s.topo.TaskSubject("A", envelope.TaskRequest), long); err != nil {
		t.Fatal(err)
	}

	// The console, as the operator user.
	opConn := s.connect(t, "replay", []nats.Option{recordDenied})
	srv, err := console.New(console.Config{Conn: opConn, Topology: s.topo, Addr: "127.0.0.1:0",
		SampleInterval: 200 * time.Millisecond, LiveInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		_ = srv.Stop(sctx)
	})
	web := newWebClient(t, srv.URL())

	admin := dlq.NewStore(s.admin.JetStream(), s.topo)
	var seq uint64
	pollUntil(ctx, t, "the malformed task's dead letter", func() bool {
		es, err := admin.List(ctx, dlq.Filter{Agent: "A"})
		if err == nil && len(es) == 1 {
			seq = es[0].Seq
		}
		return seq != 0
	})
	kv, err := snapshot.NewKV(s.admin.JetStream(), s.topo)
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the long task's first checkpoint", func() bool {
		sn, err := kv.Load(ctx, "A", "long-1")
		return err == nil && sn.Step == 1
	})
	pollUntil(ctx, t, "A's status report in the console", func() bool {
		_, body := web.get("/agents/A")
		return strings.Contains(body, "jetagent.tasks.A.task.request") && strings.Contains(body, ">closed<")
	})

	id := strconv.FormatUint(seq, 10)
	for _, p := range []string{"/", "/agents", "/agents/A", "/dlq", "/dlq?agent=A&reason=malformed", "/dlq/" + id,
		"/dlq/replay?id=" + id, "/dlq/purge?id=" + id, "/tasks", "/tasks?agent=A", "/tasks/A/long-1", "/jobs", "/live", "/audit"} {
		code, body := web.get(p)
		if code != http.StatusOK {
			t.Errorf("GET %s: %d", p, code)
		}
		if i := strings.Index(body, `class="error"`); i >= 0 {
			t.Errorf("GET %s shows an error: %.300s", p, body[i:])
		}
	}
	if _, body := web.get("/tasks?agent=A"); !strings.Contains(body, "long-1") {
		t.Error("the tasks page does not list A's task")
	}

	// Replay the dead letter, cancel the long task, purge the entry.
	replayed := web.job("/dlq/replay", url.Values{"id": {id}, "up_to": {id}, "would": {"1"}})
	if !strings.Contains(replayed, "replayed 1, already replayed 0, failed 0") {
		t.Errorf("replay job: %s", replayed)
	}
	if code, body := web.post("/tasks/A/long-1/cancel", url.Values{}); code != http.StatusSeeOther {
		t.Errorf("cancel: %d %.300s", code, body)
	}
	pollUntil(ctx, t, "the cancelled snapshot", func() bool {
		sn, err := kv.Load(ctx, "A", "long-1")
		return err == nil && sn.Status == snapshot.Cancelled
	})
	if purged := web.job("/dlq/purge", url.Values{"id": {id}, "up_to": {id}, "count": {"1"}, "confirm": {"1"}}); !strings.Contains(purged, "purged 1 of 1") {
		t.Errorf("purge job: %s", purged)
	}
	if _, err := admin.Get(ctx, seq); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("the entry after the purge: %v", err)
	}
	denied.Range(func(k, _ any) bool {
		t.Errorf("refused: %s", k)
		return true
	})
}

// webClient is a browser-like HTTP client: cookies, CSRF tokens from forms.
type webClient struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newWebClient(t *testing.T, base string) *webClient {
	jar, _ := cookiejar.New(nil)
	return &webClient{t: t, base: base, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *webClient) send(req *http.Request) (int, string, string) {
	c.t.Helper()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

func (c *webClient) get(path string) (int, string) {
	c.t.Helper()
	req, _ := http.NewRequest("GET", c.base+path, nil)
	code, body, _ := c.send(req)
	return code, body
}

var formToken = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// post sends form to path with the CSRF token of the audit page's forms
// (every page carries the cookie; the job pages carry a form).
func (c *webClient) post(path string, form url.Values) (int, string) {
	c.t.Helper()
	code, body, _ := c.postLoc(path, form)
	return code, body
}

func (c *webClient) postLoc(path string, form url.Values) (int, string, string) {
	c.t.Helper()
	_, page := c.get("/dlq/purge?scope=all")
	m := formToken.FindStringSubmatch(page)
	if m == nil {
		c.t.Fatal("no CSRF token in the purge form")
	}
	form.Set("csrf", m[1])
	req, _ := http.NewRequest("POST", c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.send(req)
}

// job starts a job with a POST and returns its page once it ended.
func (c *webClient) job(path string, form url.Values) string {
	c.t.Helper()
	code, body, loc := c.postLoc(path, form)
	if code != http.StatusSeeOther || !strings.HasPrefix(loc, "/jobs/") {
		c.t.Fatalf("POST %s: %d %.300s", path, code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, page := c.get(loc)
		if !strings.Contains(page, `<b id="state">running</b>`) {
			return page
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("job %s still running", loc)
		}
		time.Sleep(50 * time.Millisecond) // the job runs in the console
	}
}
