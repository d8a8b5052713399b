// Package sandbox gives the examples a private NATS server: an embedded,
// in-process server on a temporary directory, provisioned and connected.
package sandbox

import (
	"context"
	"fmt"
	"os"

	"github.com/jetagent/jetagent/bus"
)

// Start starts the server and returns a provisioned connection and the
// function that stops everything and removes the directory.
func Start(ctx context.Context) (*bus.Conn, func(), error) {
	dir, err := os.MkdirTemp("", "jetagent-example-")
	if err != nil {
		return nil, nil, fmt.Errorf("sandbox: %w", err)
	}
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, nil, err
	}
	stop := func() {
		_ = srv.Shutdown(context.Background())
		_ = os.RemoveAll(dir)
	}
	conn, err := srv.Connect(ctx)
	if err != nil {
		stop()
		return nil, nil, err
	}
	if err := bus.Provision(ctx, conn.JetStream(), bus.Topology{}); err != nil {
		conn.Close()
		stop()
		return nil, nil, err
	}
	return conn, func() { conn.Close(); stop() }, nil
}
