package cliexit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/spf13/cobra"
)

// tree is a small command line with every kind of check cobra makes.
func tree(ran *[]string) *cobra.Command {
	root := &cobra.Command{Use: "tool", SilenceErrors: true, SilenceUsage: true,
		Args: cobra.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	send := &cobra.Command{Use: "send", Args: cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error { *ran = append(*ran, "pre-run"); return nil },
		RunE:    func(*cobra.Command, []string) error { *ran = append(*ran, "run"); return nil }}
	send.Flags().String("to", "", "")
	send.Flags().Int("count", 1, "")
	_ = send.MarkFlagRequired("to")
	pick := &cobra.Command{Use: "pick", Args: cobra.MaximumNArgs(1),
		PreRun: func(*cobra.Command, []string) { *ran = append(*ran, "plain pre-run") },
		Run:    func(*cobra.Command, []string) { *ran = append(*ran, "run") }}
	pick.Flags().Bool("a", false, "")
	pick.Flags().Bool("b", false, "")
	pick.MarkFlagsMutuallyExclusive("a", "b")
	fail := &cobra.Command{Use: "fail", RunE: func(*cobra.Command, []string) error {
		return fmt.Errorf("the server said: %w", errors.New("accepts 1 arg(s), invalid argument"))
	}}
	root.AddCommand(send, pick, fail)
	cliexit.MarkUsageErrors(root)
	return root
}

func TestCobraErrorsAreUsageErrorsAtTheirSource(t *testing.T) {
	cases := []struct {
		args []string
		code int
		ran  string // what of the command ran
	}{
		{[]string{"send", "--to", "x"}, cliexit.OK, "pre-run run"},
		{[]string{"--nope"}, cliexit.Usage, ""},
		{[]string{"send", "--count", "many"}, cliexit.Usage, ""},
		{[]string{"send", "--to"}, cliexit.Usage, ""},
		{[]string{"send", "extra", "--to", "x"}, cliexit.Usage, ""},
		{[]string{"send"}, cliexit.Usage, "pre-run"}, // required flags are checked after the pre-run, as cobra does
		{[]string{"pick", "1", "2"}, cliexit.Usage, ""},
		{[]string{"pick", "--a", "--b"}, cliexit.Usage, "plain pre-run"},
		{[]string{"pick", "--a"}, cliexit.OK, "plain pre-run run"},
		{[]string{"completion", "bash", "extra"}, cliexit.Usage, ""},
		// A command's failure is one, whatever its message says.
		{[]string{"fail"}, cliexit.Failure, ""},
	}
	for _, c := range cases {
		var ran []string
		root := tree(&ran)
		root.SetArgs(c.args)
		root.SetOut(&strings.Builder{})
		_, err := root.ExecuteC()
		if got := cliexit.Code(err); got != c.code || strings.Join(ran, " ") != c.ran {
			t.Errorf("%v: code %d (%v), ran %q; want %d, ran %q", c.args, got, err, ran, c.code, c.ran)
		}
	}
}

func TestReportFoldsTheErrorOntoOneLine(t *testing.T) {
	root := &cobra.Command{Use: "tool"}
	sub := &cobra.Command{Use: "sub"}
	root.AddCommand(sub)
	var b strings.Builder
	code := cliexit.Report(&b, sub, cliexit.Usagef("two\n  lines"))
	if want := "tool: two lines\nRun 'tool sub --help' for usage.\n"; code != cliexit.Usage || b.String() != want {
		t.Fatalf("code %d, stderr %q, want %q", code, b.String(), want)
	}
	b.Reset()
	if code := cliexit.Report(&b, sub, nil); code != cliexit.OK || b.Len() != 0 {
		t.Fatalf("nil: code %d, stderr %q", code, b.String())
	}
}

func TestWithCodeKeepsNilAndTheMessage(t *testing.T) {
	if cliexit.WithCode(cliexit.Partial, nil) != nil || cliexit.UsageError(nil) != nil {
		t.Fatal("nil was marked")
	}
	inner := errors.New("3 entries not replayed")
	err := cliexit.WithCode(cliexit.Partial, inner)
	if err.Error() != inner.Error() || !errors.Is(err, inner) {
		t.Fatalf("%v does not read as or wrap %v", err, inner)
	}
	// The outermost mark wins: an interrupt while asking is not a usage error.
	if got := cliexit.Code(cliexit.WithCode(cliexit.Interrupted, cliexit.Usagef("x"))); got != cliexit.Interrupted {
		t.Fatalf("code %d", got)
	}
}

// A command whose context was cancelled (Ctrl-C or SIGTERM, through
// signal.NotifyContext) and that failed for it ends Interrupted, whichever
// CLI it belongs to: replay used to exit 1 where agent send exits 130. An
// error with a code of its own keeps it, and a failure with the context
// alive stays Failure.
func TestReportSaysInterruptedWhenTheContextWasCancelled(t *testing.T) {
	run := func(cancelled bool, err error) int {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cmd := &cobra.Command{Use: "tool", SilenceErrors: true, SilenceUsage: true,
			RunE: func(*cobra.Command, []string) error {
				if cancelled {
					cancel()
				}
				return err
			}}
		cmd.SetArgs(nil)
		c, got := cmd.ExecuteContextC(ctx)
		return cliexit.Report(io.Discard, c, got)
	}
	stopped := fmt.Errorf("replay: stopped (1 replayed, 0 in doubt): %w", context.Canceled)
	if got := run(true, stopped); got != cliexit.Interrupted {
		t.Errorf("cancelled, plain error: exit %d, want %d", got, cliexit.Interrupted)
	}
	if got := run(true, cliexit.WithCode(cliexit.Partial, stopped)); got != cliexit.Partial {
		t.Errorf("cancelled, error with its own code: exit %d, want %d", got, cliexit.Partial)
	}
	if got := run(false, errors.New("server unreachable")); got != cliexit.Failure {
		t.Errorf("not cancelled: exit %d, want %d", got, cliexit.Failure)
	}
	if got := run(true, nil); got != cliexit.OK {
		t.Errorf("cancelled, no error: exit %d, want %d", got, cliexit.OK)
	}
}
