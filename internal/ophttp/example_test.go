package ophttp_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/internal/ophttp"
)

// /readyz names every check that fails; /healthz every part of the
// process that died. (Start serves the same handler on Config.Addr.)
func ExampleServer_Handler() {
	var sweeper, agent lifecycle.End // the Done and Err of two parts
	agent.Close(errors.New("runtime echo: pull ended"))
	srv, err := ophttp.New(ophttp.Config{
		Checks: []ophttp.Check{
			{Name: "nats", Func: func(context.Context) error { return nil }},
			{Name: "agent echo", Func: func(context.Context) error { return errors.New("runtime: not started") }},
		},
		Health: []ophttp.Check{ophttp.Alive("sweeper", &sweeper), ophttp.Alive("agent echo", &agent)},
	})
	if err != nil {
		panic(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		fmt.Printf("%s %d %s", path, rec.Code, rec.Body.String())
	}
	// Output:
	// /healthz 503 dead: agent echo: runtime echo: pull ended
	// /readyz 503 not ready: agent echo: runtime: not started
}
