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
	if err := run(ctx, &out, true, true, true); err != nil {
		t.Fatal(err)
	}
	want := `== the client re-sends (RetryConfig) ==
reply "ping" after 2 attempts; the agent ran the task 1 time (re-sends share its id)
== an agent retried by the bus ==
attempt 1: 503 service unavailable (transient)
attempt 2: 503 service unavailable (transient)
attempt 3: ok
reply: "report ready" after 2 redeliveries
== resilience.Retry around a function ==
attempt 1 failed (connection reset by peer); retrying
attempt 2 failed (connection reset by peer); retrying
result: 42 rows after 3 calls
permanent error: permanent failure: table does not exist after 1 call (not retried)
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
