package console

import (
	"context"
	"testing"

	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/internal/lifecycle/lifecycletest"
	"github.com/jetagent/jetagent/internal/natstest"
)

func TestConsoleKeepsTheLifecycleContract(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	lifecycletest.Run(t, func(t *testing.T) lifecycle.Service {
		srv, err := New(Config{Conn: conn, Topology: topo, Addr: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Stop(context.Background()) })
		return srv
	})
}
