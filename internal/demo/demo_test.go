package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestDemoTellsItsStory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"translator: attempt 2 -> 503",
		`got "BONJOUR"`,
		"the handler ran 1 time",
		"breaker payments: closed -> open",
		"breaker payments: half-open -> closed",
		"all 3 invoices paid, none dead-lettered",
		"reason permanent, after 1 delivery",
		"replayed 1 entry",
		"resuming after step 3",
		"steps run twice: 0",
		"summary: 7 tasks sent, 7 answered",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo did not say %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "reporter: step 2 of 6\n   reporter (a new worker)") {
		t.Error("steps ran again after the resume")
	}
}
