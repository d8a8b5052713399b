package handlers_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
)

// Statuses that say something about the service, not the task (a token
// expired, a route not deployed yet), are transient by default: the
// breaker holds tasks instead of dead-lettering them all in seconds.
// Each status's kind can be configured.
func TestHTTPOperationalStatusesAreTransientByDefault(t *testing.T) {
	for _, status := range []int{401, 403, 404} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.WriteHeader(status)
		}))
		_, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL})(testkit.ContextFor(t, 10*time.Second), task(t, nil))
		srv.Close()
		if k := resilience.Classify(err); k != resilience.KindTransient {
			t.Errorf("%d: kind %v (err %v), want transient", status, k, err)
		}
	}
}

func TestHTTPStatusKindsAreConfigurable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/404":
			w.WriteHeader(404)
		case "/409":
			w.WriteHeader(409)
		}
	}))
	defer srv.Close()
	cfg := handlers.HTTPConfig{Statuses: map[int]resilience.Kind{404: resilience.KindPermanent, 409: resilience.KindTransient}}
	for path, want := range map[string]resilience.Kind{"/404": resilience.KindPermanent, "/409": resilience.KindTransient} {
		cfg.URL = srv.URL + path
		_, err := httpHandler(t, cfg)(testkit.ContextFor(t, 10*time.Second), task(t, nil))
		if k := resilience.Classify(err); k != want {
			t.Errorf("%s: kind %v (err %v), want %v", path, k, err, want)
		}
	}
	for _, bad := range []map[int]resilience.Kind{{99: resilience.KindTransient}, {200: resilience.KindPermanent}, {500: resilience.KindTimeout}} {
		if _, err := handlers.HTTP(handlers.HTTPConfig{URL: srv.URL, Statuses: bad}); err == nil {
			t.Errorf("HTTP accepted Statuses %v", bad)
		}
	}
}

// A service that accepts the request and never answers is given up on
// after ResponseHeaderTimeout (a timeout, so transient), not at the
// handler's deadline.
func TestHTTPResponseHeaderTimeout(t *testing.T) {
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
	_, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL, ResponseHeaderTimeout: 200 * time.Millisecond})(testkit.ContextFor(t, 30*time.Second), task(t, nil))
	if k := resilience.Classify(err); k != resilience.KindTimeout {
		t.Fatalf("kind %v (err %v), want timeout", k, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v", took)
	}
}

// Header values the task carries that HTTP cannot send (CR, LF, NUL...)
// fail the task permanently before anything is sent: bad input, not a
// broken service.
func TestHTTPUnsendableHeaderIsPermanent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("the request was sent")
	}))
	defer srv.Close()
	for _, id := range []string{"a\r\nX: y", "a\x00", "a\n"} {
		tk := task(t, nil)
		tk.Envelope.TaskID = id
		_, err := httpHandler(t, handlers.HTTPConfig{URL: srv.URL})(testkit.ContextFor(t, 10*time.Second), tk)
		if k := resilience.Classify(err); k != resilience.KindPermanent {
			t.Errorf("task id %q: kind %v (err %v), want permanent", id, k, err)
		}
	}
}

// With EnvInherit, the program sees only the listed variables of the
// agent's environment (plus Env and the JETAGENT_* of the task), not the
// agent's credentials.
func TestExecInheritsOnlyListedVariables(t *testing.T) {
	t.Setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
	t.Setenv("KEEP_ME", "kept")
	h := execHandler(t, handlers.ExecConfig{
		Command:    []string{"/bin/sh", "-c", `cat >/dev/null; printf '{"secret":"%s","keep":"%s","agent":"%s","path":"%s"}' "$AWS_SECRET_ACCESS_KEY" "$KEEP_ME" "$JETAGENT_AGENT" "${PATH:+set}"`},
		EnvInherit: []string{"PATH", "KEEP_ME"},
	})
	res, err := h(testkit.ContextFor(t, 10*time.Second), task(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"agent":"sidecar","keep":"kept","path":"set","secret":""}`; payloadJSON(t, res) != want {
		t.Errorf("payload %s, want %s", payloadJSON(t, res), want)
	}
	// An empty, non-nil list inherits nothing.
	h = execHandler(t, handlers.ExecConfig{
		Command:    []string{"/bin/sh", "-c", `cat >/dev/null; printf '{"n":"%s"}' "$(env | grep -cv '^JETAGENT_\|^PWD=\|^SHLVL=\|^_=\|^GORACE=')"`},
		Env:        map[string]string{"GORACE": "atexit_sleep_ms=0"},
		EnvInherit: []string{},
	})
	if res, err = h(testkit.ContextFor(t, 10*time.Second), task(t, nil)); err != nil {
		t.Fatal(err)
	}
	if got := payloadJSON(t, res); got != `{"n":"0"}` {
		t.Errorf("with EnvInherit empty the program saw other variables: %s (environment has %d)", got, len(os.Environ()))
	}
}
