package ophttp_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"

	"github.com/jetagent/jetagent/internal/ophttp"
)

// /readyz names every check that fails; /healthz only says the process is
// up. (Start serves the same handler on Config.Addr.)
func ExampleServer_Handler() {
	srv, err := ophttp.New(ophttp.Config{Checks: []ophttp.Check{
		{Name: "nats", Func: func(context.Context) error { return nil }},
		{Name: "agent echo", Func: func(context.Context) error { return errors.New("runtime: not started") }},
	}})
	if err != nil {
		panic(err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		fmt.Printf("%s %d %s", path, rec.Code, rec.Body.String())
	}
	// Output:
	// /healthz 200 ok
	// /readyz 503 not ready: agent echo: runtime: not started
}
