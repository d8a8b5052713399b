package main

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"
)

// TestMain lets the test binary act as the worker process the example
// starts (it starts itself).
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" || os.Getenv(parentEnvForTest) != "" {
		main()
		return
	}
	os.Exit(m.Run())
}

// parentEnvForTest makes the test binary run the example itself.
const parentEnvForTest = "JETAGENT_EXAMPLE_PARENT"

func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, &out, 10, 3); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	want := `worker 1: step 1
worker 1: step 2
worker 1: step 3
worker 1: checkpointed 3
worker 1 killed (SIGKILL) after step 3
worker 2: resuming after step 3
worker 2: step 4
worker 2: step 5
worker 2: step 6
worker 2: step 7
worker 2: step 8
worker 2: step 9
worker 2: step 10
reply: "report of 10 steps"
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
