package bus_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
)

func TestEmbeddedServerListensOnLoopback(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{Listen: true})
	url := srv.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ClientURL = %q, want a loopback URL", url)
	}
	// Another process would join by URL.
	conn, err := bus.Connect(testkit.Context(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := bus.Provision(testkit.Context(t), conn.JetStream(), bus.Topology{}); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedServerLocksItsDataDir(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: srv.DataDir(), DontListen: true})
	if !errors.Is(err, bus.ErrDataDirLocked) {
		t.Fatalf("second server on the same dir: err = %v, want ErrDataDirLocked", err)
	}
	// Released on shutdown: a new server can take it.
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	again := natstest.Start(t, natstest.Options{DataDir: srv.DataDir()})
	if again.DataDir() != srv.DataDir() {
		t.Fatal("unexpected data dir")
	}
}

func TestEmbeddedServerReportsTakenAddress(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = bus.StartEmbedded(testkit.Context(t), bus.EmbeddedOptions{DataDir: t.TempDir(), Listen: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "cannot listen on "+ln.Addr().String()) {
		t.Fatalf("err = %v, want a clear listen error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v to report a taken address; want it at once", time.Since(start))
	}
}

func TestEmbeddedOptionsRejectBadListen(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"nohost", "127.0.0.1:99999", "127.0.0.1:x"} {
		_, err := bus.StartEmbedded(testkit.Context(t), bus.EmbeddedOptions{DataDir: t.TempDir(), Listen: addr})
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Listen %q: err = %v, want an error naming it", addr, err)
		}
	}
}

func TestConnectReportsUnreachableServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = bus.Connect(testkit.Context(t), "nats://"+addr)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want a connect error naming %s", err, addr)
	}
}

func TestEmbeddedServerRecordsItsOwnerInTheLock(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{Listen: true})
	_, err := bus.StartEmbedded(testkit.Context(t), bus.EmbeddedOptions{DataDir: srv.DataDir(), DontListen: true})
	var locked *bus.DataDirLockedError
	if !errors.As(err, &locked) || !errors.Is(err, bus.ErrDataDirLocked) {
		t.Fatalf("err = %v, want a *DataDirLockedError", err)
	}
	if locked.Owner.URL != srv.ClientURL() || locked.Owner.PID != os.Getpid() || locked.Owner.Started.IsZero() {
		t.Fatalf("owner = %+v, want this process with URL %s", locked.Owner, srv.ClientURL())
	}
	if !strings.Contains(err.Error(), srv.ClientURL()) {
		t.Errorf("error %q does not name the owner's URL", err)
	}
}

func TestEmbeddedServerListensOnLoopbackOnly(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:0", "example.com:0"} {
		_, err := bus.StartEmbedded(testkit.Context(t), bus.EmbeddedOptions{DataDir: t.TempDir(), Listen: addr})
		if !errors.Is(err, bus.ErrListenNotLoopback) {
			t.Errorf("Listen %q: err = %v, want ErrListenNotLoopback", addr, err)
		}
	}
	for host, want := range map[string]bool{"localhost": true, "127.0.0.2": true, "::1": true, "[::1]": true,
		"": false, "0.0.0.0": false, "::": false, "10.0.0.1": false, "nats.internal": false} {
		if got := bus.IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
	srv, err := bus.StartEmbedded(testkit.Context(t), bus.EmbeddedOptions{DataDir: t.TempDir(), Listen: "0.0.0.0:0", InsecureListenWithoutAuth: true})
	if err != nil {
		t.Fatalf("with InsecureListenWithoutAuth: %v", err)
	}
	_ = srv.Shutdown(testkit.Context(t))
}
