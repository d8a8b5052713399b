package console

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
)

var topo = bus.Topology{Memory: true}

// fixture is a console on an embedded server.
type fixture struct {
	conn  *bus.Conn
	srv   *Server
	store *dlq.Store
	url   string
}

// startConsole starts a server, provisions it and serves a console with
// auth (zero: none) on a free loopback port.
func startConsole(t testing.TB, auth Auth) *fixture {
	t.Helper()
	_, conn := natstest.Provisioned(t, topo)
	return startConsoleOn(t, conn, auth)
}

func startConsoleOn(t testing.TB, conn *bus.Conn, auth Auth) *fixture {
	t.Helper()
	srv, err := New(Config{Conn: conn, Topology: topo, Addr: "127.0.0.1:0", Auth: auth,
		SampleInterval: 200 * time.Millisecond, LiveInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("console stop: %v", err)
		}
	})
	return &fixture{conn: conn, srv: srv, store: dlq.NewStore(conn.JetStream(), topo), url: srv.URL()}
}

// deadLetter stores a dead letter of agent with payload and error text,
// as if the agent had given up on task sequence seq.
func (f *fixture) deadLetter(t testing.TB, agent string, seq uint64, reason dlq.Reason, payload any, errText string) uint64 {
	t.Helper()
	env, err := envelope.New("test", agent, envelope.TaskRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	m, err := bus.EnvelopeMsg(topo.TaskSubject(agent, envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	id, err := f.store.Publish(testkit.Context(t), &dlq.Record{Data: m.Data, Header: m.Header, Reason: reason, Error: errText,
		Agent: agent, Subject: m.Subject, Stream: topo.TasksStream(), Sequence: seq, Deliveries: 1, FirstFailure: now, LastFailure: now})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// client is an HTTP client with a cookie jar and optional basic auth.
type client struct {
	t          testing.TB
	base       string
	hc         *http.Client
	user, pass string
}

func (f *fixture) client(t testing.TB, user, pass string) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: f.url, user: user, pass: pass, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (c *client) do(method, path string, form url.Values) (int, string, http.Header) {
	c.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if c.user != "" || c.pass != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (c *client) get(path string) (int, string) {
	c.t.Helper()
	code, body, _ := c.do("GET", path, nil)
	return code, body
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf loads path and returns the CSRF token of its form.
func (c *client) csrf(path string) string {
	c.t.Helper()
	code, body := c.get(path)
	m := csrfField.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil {
		c.t.Fatalf("GET %s: %d, no CSRF token in the page", path, code)
	}
	return m[1]
}

// poll waits for cond, failing after 30 seconds.
func poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling another goroutine's result
	}
}
