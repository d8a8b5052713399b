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
	want := `== retry + circuit breaker (client) ==
send: circuit_open after 2 attempts: 2 timeouts opened the breaker, the 3rd retry was refused
== circuit breaker + fallback ==
answer: cached stock (2 minutes old) (<nil>)
== retry inside a fallback ==
answer: default answer (<nil>) after 3 primary calls
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
