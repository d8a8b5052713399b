package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"go.opentelemetry.io/otel/trace"
)

func httpHandler(t *testing.T, cfg handlers.HTTPConfig) runtime.Handler {
	t.Helper()
	h, err := handlers.HTTP(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHTTPRequiresAnHTTPURL(t *testing.T) {
	for _, u := range []string{"", "localhost:8080", "ftp://127.0.0.1/x", "/relative", "http://", "http://[::1"} {
		if _, err := handlers.HTTP(handlers.HTTPConfig{URL: u}); !errors.Is(err, handlers.ErrBadURL) {
			t.Errorf("HTTP(%q) error = %v, want ErrBadURL", u, err)
		}
	}
}

func TestHTTPSendsTheEnvelopeAndHeaders(t *testing.T) {
	var mu sync.Mutex
	var gotHeader http.Header
	var gotBody map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		gotHeader = r.Header.Clone()
		_ = json.NewDecoder(r.Body).Decode(&gotBody)
		if r.Method != http.MethodPost {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"answer": 42}`)
	}))
	defer srv.Close()
	h := httpHandler(t, handlers.HTTPConfig{URL: srv.URL + "/task", Header: map[string]string{"Authorization": "Bearer t"}})
	tk := task(t, map[string]any{"q": "life"})
	tk.Envelope.TaskID = "task-1"
	tk.Attempt = 3
	tk.Header = map[string][]string{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	res, err := h(testkit.ContextFor(t, 10*time.Second), tk)
	if err != nil {
		t.Fatal(err)
	}
	if p := payloadJSON(t, res); p != `{"answer":42}` {
		t.Errorf("payload %s", p)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, want := range map[string]string{
		"Content-Type":             "application/json",
		"Authorization":            "Bearer t",
		handlers.HeaderAgent:       "sidecar",
		handlers.HeaderAttempt:     "3",
		handlers.HeaderTaskID:      "task-1",
		handlers.HeaderTraceID:     tk.Envelope.TraceID,
		"Idempotency-Key":          tk.Envelope.ID,
		handlers.HeaderEnvelopeID:  tk.Envelope.ID,
		"Traceparent":              "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		handlers.HeaderPayloadType: "task.request",
	} {
		if got := gotHeader.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if _, err := time.Parse(time.RFC3339Nano, gotHeader.Get(handlers.HeaderDeadline)); err != nil {
		t.Errorf("%s: %v", handlers.HeaderDeadline, err)
	}
	if gotBody["id"] != tk.Envelope.ID || gotBody["payload"].(map[string]any)["q"] != "life" {
		t.Errorf("body %v", gotBody)
	}
}

// When the runtime traces, the service gets the handler span's context,
// so that its own spans are children of it.
func TestHTTPPropagatesTheHandlerSpan(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("traceparent")
	}))
	defer srv.Close()
	traceID, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID, _ := trace.SpanIDFromHex("1111111111111111")
	ctx := trace.ContextWithSpanContext(testkit.ContextFor(t, 10*time.Second),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled}))
	tk := task(t, nil)
	tk.Header = map[string][]string{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	if _, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL})(ctx, tk); err != nil {
		t.Fatal(err)
	}
	if tp := <-got; tp != "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01" {
		t.Errorf("traceparent %q, want the handler span's", tp)
	}
}

func TestHTTPOutcomes(t *testing.T) {
	future := time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		name    string
		status  int
		header  map[string]string
		body    string
		kind    resilience.Kind
		delay   time.Duration // retry-after: at least, and at most +2s
		errHas  string
		payload string
	}{
		{name: "200 with JSON", status: 200, body: `[1, "two"]`, payload: `[1,"two"]`},
		{name: "200 empty", status: 200, payload: "<none>"},
		{name: "204", status: 204, payload: "<none>"},
		{name: "201 null", status: 201, body: "null", payload: "<none>"},
		{name: "200 not JSON", status: 200, body: "<html>oops</html>", kind: resilience.KindPermanent, errHas: `answer is not one JSON value`},
		{name: "429 with seconds", status: 429, header: map[string]string{"Retry-After": "7"}, kind: resilience.KindRetryAfter, delay: 7 * time.Second, errHas: "429 Too Many Requests"},
		{name: "429 with a date", status: 429, header: map[string]string{"Retry-After": future}, kind: resilience.KindRetryAfter, delay: 88 * time.Second},
		{name: "503 with seconds", status: 503, header: map[string]string{"Retry-After": "2"}, kind: resilience.KindRetryAfter, delay: 2 * time.Second},
		{name: "503 capped", status: 503, header: map[string]string{"Retry-After": "86400"}, kind: resilience.KindRetryAfter, delay: handlers.DefaultMaxRetryAfter},
		{name: "503 without Retry-After", status: 503, body: "busy", kind: resilience.KindTransient, errHas: `503 Service Unavailable: "busy"`},
		{name: "429 with a bad Retry-After", status: 429, header: map[string]string{"Retry-After": "soon"}, kind: resilience.KindTransient},
		{name: "500", status: 500, body: "boom", kind: resilience.KindTransient, errHas: `500 Internal Server Error: "boom"`},
		{name: "502", status: 502, kind: resilience.KindTransient},
		{name: "408", status: 408, kind: resilience.KindTransient},
		{name: "404", status: 404, body: "no such route", kind: resilience.KindTransient, errHas: `404 Not Found: "no such route"`},
		{name: "401", status: 401, kind: resilience.KindTransient},
		{name: "403 with Retry-After", status: 403, header: map[string]string{"Retry-After": "3"}, kind: resilience.KindRetryAfter, delay: 3 * time.Second},
		{name: "400", status: 400, kind: resilience.KindPermanent},
		{name: "422", status: 422, body: "no such sku", kind: resilience.KindPermanent, errHas: `422 Unprocessable Entity: "no such sku"`},
		{name: "400 with Retry-After", status: 400, header: map[string]string{"Retry-After": "3"}, kind: resilience.KindPermanent},
		{name: "redirect not followed", status: 302, header: map[string]string{"Location": "/elsewhere"}, kind: resilience.KindPermanent, errHas: "302 Found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.body)
			}))
			defer srv.Close()
			res, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL})(testkit.ContextFor(t, 10*time.Second), task(t, "hi"))
			if k := resilience.Classify(err); k != c.kind {
				t.Fatalf("kind %v, want %v (err %v)", k, c.kind, err)
			}
			if c.errHas != "" && (err == nil || !strings.Contains(err.Error(), c.errHas)) {
				t.Errorf("error %v does not contain %q", err, c.errHas)
			}
			if c.kind == resilience.KindNone && payloadJSON(t, res) != c.payload {
				t.Errorf("payload %s, want %s", payloadJSON(t, res), c.payload)
			}
			if c.kind == resilience.KindRetryAfter {
				d, _ := resilience.RetryDelay(err)
				if d < c.delay || d > c.delay+2*time.Second {
					t.Errorf("retry after %v, want about %v", d, c.delay)
				}
			}
			var se *handlers.StatusError
			if c.status >= 300 && (!errors.As(err, &se) || se.Code != c.status) {
				t.Errorf("error %v is not a StatusError %d", err, c.status)
			}
		})
	}
}

func TestHTTPSlowServerTimesOutAtTheDeadline(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	start := time.Now()
	_, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL})(testkit.ContextFor(t, 300*time.Millisecond), task(t, nil))
	if k := resilience.Classify(err); k != resilience.KindTimeout {
		t.Fatalf("kind %v (err %v), want timeout", k, err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v", took)
	}
}

func TestHTTPOversizedBodyIsPermanent(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body := `"` + strings.Repeat("x", 5000) + `"`
			if chunked {
				w.(http.Flusher).Flush() // no Content-Length
			}
			_, _ = io.WriteString(w, body)
		}))
		_, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL, MaxResponse: 1000})(testkit.ContextFor(t, 10*time.Second), task(t, nil))
		srv.Close()
		if !errors.Is(err, handlers.ErrAnswerTooLarge) || resilience.Classify(err) != resilience.KindPermanent {
			t.Errorf("chunked=%v: err %v, want a permanent ErrAnswerTooLarge", chunked, err)
		}
	}
}

func TestHTTPConnectionRefusedIsAConnectionError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	_, err = httpHandler(t, handlers.HTTPConfig{URL: url})(testkit.ContextFor(t, 10*time.Second), task(t, nil))
	if k := resilience.Classify(err); k != resilience.KindConnection {
		t.Fatalf("kind %v (err %v), want connection", k, err)
	}
}

func TestHTTPShutdownCancellation(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the server notices a gone client only once the body is read
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	_, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL})(ctx, task(t, nil))
	if !errors.Is(err, context.Canceled) || errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}
