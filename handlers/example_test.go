package handlers_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/vmihailenco/msgpack/v5"
)

// A program run per task: it reads the envelope JSON on stdin and answers
// on stdout; exit 75 asks for a retry. Registered with rt.Handle like any
// handler; here it is called directly.
func ExampleExec() {
	h, err := handlers.Exec(handlers.ExecConfig{
		Command: []string{"/bin/sh", "-c", `
			read -r envelope
			case "$envelope" in
			*'"payload":"later"'*) echo "busy, try again" >&2; exit 75 ;;
			esac
			echo '{"answered": true}'`},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, payload := range []string{"now", "later"} {
		env, _ := envelope.New("client", "sh-agent", envelope.TaskRequest, payload)
		result, err := h(context.Background(), &runtime.Task{Envelope: env, Attempt: 1})
		if err != nil {
			fmt.Printf("%s: %s, %v\n", payload, resilience.Classify(err), err)
			continue
		}
		answer, _ := envelope.PayloadJSON(result.(msgpack.RawMessage))
		fmt.Printf("%s: %s\n", payload, answer)
	}
	// Output:
	// now: {"answered":true}
	// later: transient, transient failure: exec /bin/sh: exit status 75 (EX_TEMPFAIL): stderr: busy, try again
}

// A local service answering each task's POST; a 503 with Retry-After
// becomes a redelivery after that delay.
func ExampleHTTP() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if len(body) > 0 && r.Header.Get("Jetagent-Attempt") == "1" {
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, `{"attempt": %s}`, r.Header.Get("Jetagent-Attempt"))
	}))
	defer srv.Close()
	h, err := handlers.HTTP(handlers.HTTPConfig{URL: srv.URL})
	if err != nil {
		fmt.Println(err)
		return
	}
	env, _ := envelope.New("client", "web-agent", envelope.TaskRequest, "hello")
	for attempt := 1; attempt <= 2; attempt++ {
		result, err := h(context.Background(), &runtime.Task{Envelope: env, Attempt: attempt})
		if d, ok := resilience.RetryDelay(err); ok {
			fmt.Printf("attempt %d: retry after %v\n", attempt, d)
			continue
		}
		answer, _ := envelope.PayloadJSON(result.(msgpack.RawMessage))
		fmt.Printf("attempt %d: %s\n", attempt, answer)
	}
	// Output:
	// attempt 1: retry after 30s
	// attempt 2: {"attempt":2}
}
