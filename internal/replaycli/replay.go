package replaycli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func newReplayCmd(g *globals, stdio IO) *cobra.Command {
	var sel selection
	var o dlq.ReplayOptions
	var yes, quiet bool
	var confirmAbove int
	cmd := &cobra.Command{
		Use:   "replay [ID...] [flags]",
		Short: "Publish dead letters again as new tasks",
		Long: `replay publishes the selected entries' original messages again, to their
original subject or --to, as new tasks: they carry a new message id (so the
server's duplicate window does not drop them) and the header
Jetagent-Replay-Of naming the entry. Entries stay in the DLQ; purge them when
you are satisfied. An entry is replayed at most once, even by operators
running replay at the same time, unless --force: its mark is reserved before
its task is published. Stopped early (--timeout, Ctrl-C), replay waits a few
seconds for the server's answers and reports what it did publish; the rest
stay unreplayed, and a rerun replays them.

Select entries by ID, or with the filters (all of them when none is given).
Above --confirm-above entries, replay asks for confirmation unless --yes.`,
		Example: `  replay replay 42 43
  replay replay --agent billing --reason max_attempts --dry-run
  replay replay --reason permanent --to jetagent.tasks.billing-v2.task.request --rate 50 --yes`,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := sel.filter(args, time.Now())
			if err != nil {
				return err
			}
			if o.Rate < 0 || math.IsNaN(o.Rate) || math.IsInf(o.Rate, 0) {
				return cliexit.Usagef("--rate %v: want a number of entries per second, 0 or more", o.Rate)
			}
			if err := checkDestination(o.To, bus.Topology{Prefix: g.prefix}); err != nil {
				return err
			}
			return g.run(cmd, func(ctx context.Context, s *session) error {
				entries, err := s.store.List(ctx, f)
				if err != nil {
					return err
				}
				if len(entries) == 0 {
					fmt.Fprintln(stdio.Out, "no dead letters match: nothing to replay")
					return nil
				}
				action := "replay " + entriesN(len(entries))
				if o.To != "" {
					action += " to " + o.To
				}
				if !o.DryRun && len(entries) > confirmAbove && !yes {
					if err := confirm(stdio, action); err != nil {
						return err
					}
				}
				if o.To != "" && !quiet {
					fmt.Fprintf(stdio.Err, "destination: %s (not the entries' original subjects)\n", o.To)
				}
				report := progress(stdio, len(entries), quiet, o.DryRun, o.To)
				o.Progress = report.entry
				res, err := s.store.Replay(ctx, entries, o)
				report.done()
				fmt.Fprintln(stdio.Out, summaryLine(res, o.Force))
				if err != nil && res.Failed > 0 && ctx.Err() == nil {
					return cliexit.WithCode(cliexit.Partial, err)
				}
				return err
			})
		},
	}
	sel.register(cmd)
	registerCompletions(g, cmd, true)
	fl := cmd.Flags()
	fl.StringVar(&o.To, "to", "", "publish to this subject instead of each entry's original one")
	fl.BoolVar(&o.DryRun, "dry-run", false, "show what would be replayed; publish nothing")
	fl.Float64Var(&o.Rate, "rate", 0, "at most this many entries per second (0: as fast as the server acknowledges)")
	fl.BoolVar(&o.Force, "force", false, "replay entries that were replayed before")
	fl.BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	fl.IntVar(&confirmAbove, "confirm-above", 10, "ask for confirmation when more entries than this are selected")
	fl.BoolVarP(&quiet, "quiet", "q", false, "print only the summary")
	return cmd
}

// summaryLine is the last line of a replay: what happened to each entry,
// with the hint to --force only where it would change something.
func summaryLine(res dlq.ReplayResult, forced bool) string {
	skipped := fmt.Sprintf("already replayed %d", res.Skipped)
	if res.Skipped > 0 && !forced {
		skipped += " (use --force to replay again)"
	}
	line := fmt.Sprintf("replayed %d, %s, would replay %d, failed %d", res.Replayed, skipped, res.WouldReplay, res.Failed)
	if res.InDoubt > 0 {
		line += fmt.Sprintf(", in doubt %d (published, never confirmed: marked replayed, so a rerun skips them; check the agent, --force any that did not run)", res.InDoubt)
	}
	return line
}

// checkDestination refuses a --to subject that is not one a task can be
// published to: wildcards and empty tokens, and the subjects of the
// server and of jetagent itself that are not task subjects ($KV., $JS.,
// $SYS. and any "$" subject, _INBOX., the DLQ and the replies), where a
// replay would write what list and stats then never show.
func checkDestination(to string, topo bus.Topology) error {
	if to == "" {
		return nil
	}
	if strings.ContainsAny(to, "*> \t\r\n") || strings.HasPrefix(to, ".") || strings.HasSuffix(to, ".") || strings.Contains(to, "..") {
		return cliexit.Usagef("--to %q is not a subject a task can be published to", to)
	}
	prefix := topo.Prefix
	if prefix == "" {
		prefix = bus.DefaultPrefix
	}
	for _, internal := range []string{"$", "_INBOX", prefix + ".dlq.", prefix + ".replies."} {
		if strings.HasPrefix(to, internal) {
			return cliexit.Usagef("--to %q is an internal subject (%s...), not a task subject: give one like %s", to, internal, topo.TaskSubject("AGENT", "task.request"))
		}
	}
	return nil
}

// confirm asks whether to go ahead with action on a terminal; without one
// it refuses.
func confirm(stdio IO, action string) error {
	if !stdio.InIsTerminal {
		return cliexit.WithCode(cliexit.Aborted, fmt.Errorf("%s needs confirmation, and stdin is not a terminal: pass --yes", action))
	}
	fmt.Fprintf(stdio.Err, "%s%s? [y/N] ", strings.ToUpper(action[:1]), action[1:])
	line, err := bufio.NewReader(stdio.In).ReadString('\n')
	if err != nil && line == "" {
		return cliexit.WithCode(cliexit.Aborted, errors.New("aborted: no answer"))
	}
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return nil
	default:
		return cliexit.WithCode(cliexit.Aborted, errors.New("aborted: not confirmed"))
	}
}

// reporter shows replay progress: a bar on a terminal, else a line per
// entry on stdout.
type reporter struct {
	entry func(e *dlq.Entry, o dlq.Outcome, err error)
	done  func()
}

func progress(stdio IO, total int, quiet, dryRun bool, to string) reporter {
	switch {
	case quiet:
		return reporter{entry: func(*dlq.Entry, dlq.Outcome, error) {}, done: func() {}}
	case stdio.ErrIsTerminal:
		desc := "replaying"
		if dryRun {
			desc = "checking"
		}
		bar := progressbar.NewOptions(total,
			progressbar.OptionSetWriter(stdio.Err),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("entries"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
		return reporter{
			entry: func(e *dlq.Entry, o dlq.Outcome, err error) {
				if err != nil {
					_ = bar.Clear()
					fmt.Fprintf(stdio.Err, "entry %d: %v\n", e.Seq, err)
				}
				_ = bar.Add(1)
			},
			done: func() { _ = bar.Finish() },
		}
	default:
		return reporter{
			entry: func(e *dlq.Entry, o dlq.Outcome, err error) {
				if err != nil {
					fmt.Fprintf(stdio.Out, "%d %s: %v\n", e.Seq, o, err)
					return
				}
				dest := e.Subject
				if to != "" {
					dest = to
				}
				fmt.Fprintf(stdio.Out, "%d %s %s\n", e.Seq, o, dest)
			},
			done: func() {},
		}
	}
}
