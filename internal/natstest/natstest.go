// Package natstest starts embedded NATS servers for tests: one per test,
// in a temporary directory, shut down by t.Cleanup.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// Options adjusts Start.
type Options struct {
	// Listen opens a TCP listener on a free loopback port (for tests that
	// need a URL); otherwise only in-process connections reach the server.
	Listen bool
	// DataDir reuses a directory (to restart a server on the same store);
	// zero: a fresh t.TempDir().
	DataDir string
}

// Start starts an embedded server for t and registers its shutdown.
func Start(t testing.TB, o Options) *bus.EmbeddedServer {
	t.Helper()
	dir := o.DataDir
	if dir == "" {
		dir = t.TempDir()
	}
	eo := bus.EmbeddedOptions{DataDir: dir, DontListen: !o.Listen, MaxStore: 1 << 30}
	if o.Listen {
		eo.Listen = "127.0.0.1:0"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := bus.StartEmbedded(ctx, eo)
	if err != nil {
		t.Fatalf("start embedded NATS: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown embedded NATS: %v", err)
		}
	})
	return srv
}

// Connect opens an in-process connection to srv, closed by t.Cleanup.
func Connect(t testing.TB, srv *bus.EmbeddedServer) *bus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := srv.Connect(ctx)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// Provisioned starts a server, connects, provisions topo (in memory, unless
// topo says otherwise through its fields) and returns the connection.
func Provisioned(t testing.TB, topo bus.Topology) (*bus.EmbeddedServer, *bus.Conn) {
	t.Helper()
	srv := Start(t, Options{})
	conn := Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return srv, conn
}
