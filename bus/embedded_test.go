package bus_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
)

func TestEmbeddedServerListensOnLoopback(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{Listen: true})
	url := srv.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") {
		t.Fatalf("ClientURL = %q, want a loopback URL", url)
	}
	// Another process would join by URL.
	conn, err := bus.Connect(ctxT(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := bus.Provision(ctxT(t), conn.JetStream(), bus.Topology{}); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedServerLocksItsDataDir(t *testing.T) {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	_, err = bus.StartEmbedded(ctxT(t), bus.EmbeddedOptions{DataDir: t.TempDir(), Listen: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "cannot listen on "+ln.Addr().String()) {
		t.Fatalf("err = %v, want a clear listen error", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("took %v to report a taken address; want it at once", time.Since(start))
	}
}

func TestEmbeddedOptionsRejectBadListen(t *testing.T) {
	for _, addr := range []string{"nohost", "127.0.0.1:99999", "127.0.0.1:x"} {
		_, err := bus.StartEmbedded(ctxT(t), bus.EmbeddedOptions{DataDir: t.TempDir(), Listen: addr})
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("Listen %q: err = %v, want an error naming it", addr, err)
		}
	}
}

func TestConnectReportsUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = bus.Connect(ctxT(t), "nats://"+addr)
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want a connect error naming %s", err, addr)
	}
}
