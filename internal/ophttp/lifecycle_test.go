package ophttp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/internal/lifecycle/lifecycletest"
	"github.com/jetagent/jetagent/internal/ophttp"
)

func TestServerKeepsTheLifecycleContract(t *testing.T) {
	lifecycletest.Run(t, func(t *testing.T) lifecycle.Service {
		srv, err := ophttp.New(ophttp.Config{Addr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop(context.Background()) })
		return srv
	})
}

// part is a lifecycle part that ends when told to.
type part struct{ end lifecycle.End }

func (p *part) Done() <-chan struct{} { return p.end.Done() }
func (p *part) Err() error            { return p.end.Err() }

// /healthz answers 200 while every part runs, and after a part was
// stopped (the process is shutting down), 503 naming it once a part
// ended on its own.
func TestHealthzSaysWhenAPartDied(t *testing.T) {
	running, stopped, dying := &part{}, &part{}, &part{}
	stopped.end.Close(nil)
	srv := startOps(t, ophttp.Config{Health: []ophttp.Check{
		ophttp.Alive("agent a", running), ophttp.Alive("agent b", stopped), ophttp.Alive("agent c", dying),
	}})
	if code, body := get(t, srv, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz with every part alive = %d %q", code, body)
	}
	dying.end.Close(errors.New("runtime c: pull ended: consumer gone"))
	if code, body := get(t, srv, "/healthz"); code != http.StatusServiceUnavailable || body != "dead: agent c: runtime c: pull ended: consumer gone\n" {
		t.Errorf("/healthz with a dead part = %d %q, want 503 naming it", code, body)
	}
	if _, err := ophttp.New(ophttp.Config{Health: []ophttp.Check{{Name: "x"}}}); err == nil {
		t.Error("a health check without a func was accepted")
	}
}

// When the listener breaks (shut down from outside the server), Done is
// closed with the serving error, and Stop still returns nil.
func TestServerEndsWhenItsListenerBreaks(t *testing.T) {
	srv := startOps(t, ophttp.Config{})
	if err := shutdownOwnListener(srv); err != nil {
		t.Skipf("cannot break the listener from outside on this system: %v", err)
	}
	select {
	case <-srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done still open 10s after the listener broke")
	}
	if err := srv.Err(); err == nil || !strings.HasPrefix(err.Error(), "ophttp: serving 127.0.0.1:") {
		t.Errorf("Err = %v, want the serving error", err)
	}
	if err := srv.Stop(context.Background()); err != nil {
		t.Errorf("Stop after the listener broke = %v", err)
	}
	if srv.Err() == nil {
		t.Error("Stop cleared the serving error")
	}
}
