package logsample_test

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/internal/logsample"
)

func TestBurstThenCountThenSummary(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	var held int
	h := logsample.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{ReplaceAttr: noTime}), logsample.Options{
		Burst: 2, Window: time.Second, Now: func() time.Time { return now }, Suppressed: func(slog.Level) { held++ },
	})
	log := slog.New(h)
	for range 10 {
		log.With("agent", "a").Warn("dead-lettered", "seq", 1)
	}
	log.With("agent", "b").Warn("dead-lettered") // another agent: its own burst
	log.Debug("debug is never sampled")
	now = now.Add(time.Second)
	log.With("agent", "a").Warn("dead-lettered", "seq", 2)
	for range 3 {
		log.Info("stopping")
	}
	h.Flush(context.Background())
	want := `level=WARN msg=dead-lettered agent=a seq=1
level=WARN msg=dead-lettered agent=a seq=1
level=WARN msg=dead-lettered agent=b
level=WARN msg="log lines suppressed" agent=a like=dead-lettered suppressed=8 within=1s
level=WARN msg=dead-lettered agent=a seq=2
level=INFO msg=stopping
level=INFO msg=stopping
level=INFO msg="log lines suppressed" like=stopping suppressed=1 within=0s
`
	if buf.String() != want {
		t.Fatalf("log:\n%s\nwant:\n%s", buf.String(), want)
	}
	if held != 9 {
		t.Errorf("Suppressed called %d times, want 9", held)
	}
	if strings.Contains(buf.String(), "debug") {
		t.Error("a debug record passed a handler at info")
	}
}

func noTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

// A flood of one warning writes its burst, then one count.
func ExampleNew() {
	start := time.Now()
	clock := func() time.Time { return start } // a second would pass unnoticed here
	h := logsample.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{ReplaceAttr: noTime}), logsample.Options{Burst: 1, Now: clock})
	log := slog.New(h)
	for range 1000 {
		log.Warn("dead-lettered", "reason", "malformed")
	}
	h.Flush(context.Background())
	// Output:
	// level=WARN msg=dead-lettered reason=malformed
	// level=WARN msg="log lines suppressed" like=dead-lettered suppressed=999 within=0s
}
