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
	want := `== resilience.Fallback ==
result: map[message:using cached/default result status:fallback]
== falling back to a backup agent ==
reply from worker-backup: "done by backup: resize images" (3 attempts in all)
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
