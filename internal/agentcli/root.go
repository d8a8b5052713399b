package agentcli

import (
	"context"
	"io"
	"log/slog"

	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/didyoumean"
	"github.com/jetagent/jetagent/internal/version"
	"github.com/spf13/cobra"
)

// Main runs the agent command line with args (without the program name)
// and returns the process exit code (internal/cliexit): 0 on success, 1
// on failure (after one line "agent: <error>" on stderr), 2 on a usage
// error (with a hint to --help), 130 when a command that waits was
// interrupted (ctx ended: Ctrl-C, SIGTERM).
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	return cliexit.Report(stderr, cmd, err)
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
machine, like "agent send", can join it.

Exit codes:
  0    done (agent run: stopped by Ctrl-C or SIGTERM, gracefully)
  1    failed (server unreachable, a part of "agent run" died, the task failed, ...)
  2    wrong flags or arguments
  130  interrupted (Ctrl-C or SIGTERM) before it finished (agent send says what became of its task)`,
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
				return cliexit.Usagef("unknown command %q (did you mean %q?)", args[0], near)
			}
			return cliexit.Usagef("unknown command %q", args[0])
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newRunCmd(stderr), newSendCmd(stdout, stderr), newConfigCmd(stdout, stderr), newDemoCmd(stdout),
		newLsCmd(stdout), newStatusCmd(stdout), newTaskCmd(stdout, stderr), newConsoleCmd(stderr))
	version.SetOn(root)
	cliexit.MarkUsageErrors(root)
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
		return nil, cliexit.Usagef("--log-level %q: want debug, info, warn or error", f.level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, cliexit.Usagef("--log-format %q: want text or json", f.format)
	}
}

// NewCommand returns the agent command tree, for tools that check command
// lines against it (the docs' examples are). Main is how to run it.
func NewCommand(stdout, stderr io.Writer) *cobra.Command { return newRoot(stdout, stderr) }
