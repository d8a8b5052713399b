package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// connectNATS connects to url with a client that never gives up reconnecting (every 100ms),
// and closes it when the test ends. It ignores the server URLs a cluster gossips (container
// addresses): the client stays on the published 127.0.0.1 port it was given. reconnects
// counts reconnections; reconnected receives one value per reconnection (it never blocks
// the client: values beyond its buffer of 16 are dropped, the count still goes up).
func connectNATS(t testing.TB, url string) (nc *nats.Conn, reconnects *atomic.Int64, reconnected <-chan struct{}) {
	t.Helper()
	reconnects = new(atomic.Int64)
	signal := make(chan struct{}, 16)
	nc, err := nats.Connect(url,
		nats.Name(t.Name()),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.IgnoreDiscoveredServers(),
		nats.ReconnectHandler(func(*nats.Conn) {
			reconnects.Add(1)
			select {
			case signal <- struct{}{}:
			default:
			}
		}),
	)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc, reconnects, signal
}

// waitFor blocks until ch yields or ctx ends.
func waitFor(ctx context.Context, ch <-chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
	}
}

// waitForRoutes polls the monitoring endpoint /routez until the server has at least want
// routes, or ctx ends.
func waitForRoutes(ctx context.Context, srv *NATSContainer, want int) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	var last string
	for {
		n, err := routeCount(ctx, srv.MonitorURL())
		if err == nil && n >= want {
			return nil
		}
		last = fmt.Sprintf("%d routes (err: %v)", n, err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d routes, last saw %s: %w", want, last, context.Cause(ctx))
		case <-ticker.C:
		}
	}
}

func routeCount(ctx context.Context, monitorURL string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, monitorURL+"/routez", nil)
	if err != nil {
		return 0, err
	}
	// No keep-alive: an idle connection would outlive the test as two goroutines.
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var routez struct {
		NumRoutes int `json:"num_routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&routez); err != nil {
		return 0, err
	}
	return routez.NumRoutes, nil
}
