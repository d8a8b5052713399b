package main

import (
	"bytes"
	"context"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, true, true); err != nil {
		t.Fatal(err)
	}
	want := `== a standalone breaker ==
call 1: 503 service unavailable
call 2: 503 service unavailable
breaker payments-api: closed -> open
call 3: 503 service unavailable
call 4: breaker payments-api: circuit open
breaker payments-api: open -> half-open
after 200ms: state half-open
breaker payments-api: half-open -> closed
probe: <nil>, state closed
== the client's breaker for one target ==
send 1: timeout (attempts so far: 1)
send 2: timeout (attempts so far: 2)
send 3: circuit_open, at once (attempts so far: 2)
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
