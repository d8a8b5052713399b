package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/jetagent/jetagent/internal/didyoumean"
	"github.com/jetagent/jetagent/internal/version"
	"github.com/spf13/cobra"
)

// Main runs the agent command line with args (without the program name)
// and returns the process exit code: 0 on success, 1 on failure (after one
// line "agent: <error>" on stderr), 2 on a usage error, 130 when a command
// that waits was interrupted (ctx ended: Ctrl-C, SIGTERM).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "agent: %s\n", oneLine(err.Error()))
	var intr interrupted
	var fail failure
	switch {
	case errors.As(err, &intr):
		return 130
	case errors.As(err, &fail):
		return 1
	case isUsageError(cmd, err):
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return 2
	}
	return 1
}

// interrupted marks the error of a command stopped by an interrupt; Main
// exits 130 (128 + SIGINT), as shells do.
type interrupted struct{ error }

func (e interrupted) Unwrap() error { return e.error }

// failure marks an error of a command that ran (a part of `agent run`
// died): exit 1, whatever its text says (an "invalid argument" from the
// kernel is no usage error).
type failure struct{ error }

func (e failure) Unwrap() error { return e.error }

// usageError marks errors in how the command was called.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func isUsageError(cmd *cobra.Command, err error) bool {
	if _, ok := err.(usageError); ok {
		return true
	}
	// cobra's own flag and argument errors
	msg := err.Error()
	return strings.Contains(msg, "unknown flag") || strings.Contains(msg, "unknown command") ||
		strings.Contains(msg, "flag needs an argument") || strings.Contains(msg, "invalid argument") ||
		strings.Contains(msg, "required flag") || strings.Contains(msg, " arg(s)") || strings.Contains(msg, "unknown shorthand")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "agent",
		Short: "Run jetagent agents and send them tasks over NATS JetStream",
		Long: `agent runs jetagent agents: processes that take task envelopes off a NATS
JetStream stream, do the work, and answer, with redelivery, backoff and a
dead-letter queue when things break.

Without --nats, "agent run" starts an embedded NATS server (JetStream on disk
under --data-dir, listening on 127.0.0.1:4222), so other commands on this
machine, like "agent send", can join it.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			var names []string
			for _, c := range cmd.Commands() {
				names = append(names, c.Name())
			}
			if near := didyoumean.Closest(args[0], names); near != "" {
				return usageError{fmt.Errorf("unknown command %q (did you mean %q?)", args[0], near)}
			}
			return usageError{fmt.Errorf("unknown command %q", args[0])}
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newRunCmd(stderr), newSendCmd(stdout, stderr), newConfigCmd(stdout, stderr), newDemoCmd(stdout),
		newLsCmd(stdout), newStatusCmd(stdout), newTaskCmd(stdout, stderr), newConsoleCmd(stderr))
	version.SetOn(root)
	return root
}

// logFlags are the logging flags shared by commands that log.
type logFlags struct {
	level  string
	format string
}

func (f *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&f.format, "log-format", "text", "log format: text or json")
}

func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", f.level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("--log-format %q: want text or json", f.format)}
	}
}

// NewCommand returns the agent command tree, for tools that check command
// lines against it (the docs' examples are). Main is how to run it.
func NewCommand(stdout, stderr io.Writer) *cobra.Command { return newRoot(stdout, stderr) }
