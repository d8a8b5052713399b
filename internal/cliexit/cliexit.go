package cliexit

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes of jetagent's commands. Each command's help and
// docs/errors.md list the ones it uses.
const (
	OK          = 0   // done
	Failure     = 1   // failed: server unreachable, entry not found, task failed, ...
	Usage       = 2   // wrong flags or arguments
	Aborted     = 3   // a confirmation declined, or needed with stdin not a terminal (replay)
	Partial     = 4   // some of the work was not done (replay: entries not replayed)
	Interrupted = 130 // a command that waits was interrupted (128 + SIGINT, as shells report it)
)

// Error is an error with the exit code it ends its command with. Its
// message is Err's: the code adds nothing to what users read.
type Error struct {
	Code int
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// WithCode returns err marked to end its command with code; nil stays nil.
func WithCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: err}
}

// UsageError marks err as a mistake in how the command was called (exit
// code Usage); nil stays nil.
func UsageError(err error) error { return WithCode(Usage, err) }

// Usagef is UsageError(fmt.Errorf(format, a...)).
func Usagef(format string, a ...any) error { return UsageError(fmt.Errorf(format, a...)) }

// Code returns the exit code err ends a command with: OK for nil, the
// code of the outermost *Error in its chain, else Failure.
func Code(err error) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Failure
}

// Report ends a run of cmd's tree, given what ExecuteC returned: for an
// error, it writes one line "<root name>: <error>" to stderr (the error's
// white space, new lines included, folded to single spaces), and after a
// usage error the line "Run '<command path> --help' for usage.". It
// returns Code(err), except that an error without a code of its own ends
// Interrupted when cmd's context was cancelled (Ctrl-C or SIGTERM, through
// signal.NotifyContext): the command failed because it was stopped.
func Report(stderr io.Writer, cmd *cobra.Command, err error) int {
	code := Code(err)
	if err == nil {
		return code
	}
	var coded *Error
	if ctx := cmd.Context(); ctx != nil && ctx.Err() != nil && !errors.As(err, &coded) {
		code = Interrupted
	}
	fmt.Fprintf(stderr, "%s: %s\n", cmd.Root().Name(), strings.Join(strings.Fields(err.Error()), " "))
	if code == Usage {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// MarkUsageErrors makes cobra's own errors about a command line of root's
// tree usage errors, where cobra returns them: flag parsing (unknown flags,
// bad or missing values), each command's Args check, required flags and
// flag groups. Give the root an Args check: without one, cobra finds an
// unknown command before any check runs, and that error stays unmarked.
//
// Call it once, when the tree has all its commands; it adds cobra's
// completion command first, so that its errors are marked too. It sets
// root's flag error function, and wraps each command's Args and PreRunE
// (running PreRun in it when only that is set); the commands keep their
// own checks and order.
func MarkUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError(err) })
	root.InitDefaultCompletionCmd()
	markTree(root)
}

func markTree(c *cobra.Command) {
	if c.Args != nil {
		c.Args = usageArgs(c.Args)
	}
	if c.Runnable() {
		c.PreRunE = checkFlagsAfter(c.PreRunE, c.PreRun)
	}
	for _, sub := range c.Commands() {
		markTree(sub)
	}
}

func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		return UsageError(check(cmd, args))
	}
}

// checkFlagsAfter runs a command's own pre-run, then the checks cobra
// makes after it (required flags, flag groups), marking theirs usage
// errors.
func checkFlagsAfter(preRunE func(*cobra.Command, []string) error, preRun func(*cobra.Command, []string)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case preRunE != nil:
			if err := preRunE(cmd, args); err != nil {
				return err
			}
		case preRun != nil:
			preRun(cmd, args)
		}
		if err := cmd.ValidateRequiredFlags(); err != nil {
			return UsageError(err)
		}
		return UsageError(cmd.ValidateFlagGroups())
	}
}
