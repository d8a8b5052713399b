package agentcli

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetagent/jetagent/internal/lifecycle"
)

// The group returns as soon as its first actor does: nil for the signal
// (ctx), a dead part's error, errPartStopped for a part stopped from
// elsewhere; the other actors return too (no goroutine is left: goleak).
func TestRunUntilOneEnds(t *testing.T) {
	boom := errors.New("runtime echo: pull ended")
	cases := []struct {
		name string
		end  func(cancel context.CancelFunc, parts []*lifecycle.End)
		want error
	}{
		{"signal", func(cancel context.CancelFunc, _ []*lifecycle.End) { cancel() }, nil},
		{"a part dies", func(_ context.CancelFunc, parts []*lifecycle.End) { parts[1].Close(boom) }, boom},
		{"a part is stopped", func(_ context.CancelFunc, parts []*lifecycle.End) { parts[0].Close(nil) }, errPartStopped},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ends := []*lifecycle.End{{}, {}, {}}
			parts := make([]part, len(ends))
			for i, e := range ends {
				parts[i] = e
			}
			got := make(chan error, 1)
			go func() { got <- runUntilOneEnds(ctx, parts) }()
			tc.end(cancel, ends)
			select {
			case err := <-got:
				if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
					t.Errorf("runUntilOneEnds = %v, want %v", err, tc.want)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the group did not end")
			}
		})
	}
}
