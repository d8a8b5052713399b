package replaycli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newPurgeCmd(g *globals, stdio IO) *cobra.Command {
	var sel selection
	var yes, replayedOnly bool
	cmd := &cobra.Command{
		Use:   "purge [ID...] [flags]",
		Short: "Delete dead letters for good",
		Long: `purge deletes the selected entries (by ID, or with the filters; all entries
when none is given) after asking for confirmation, unless --yes.`,
		Example: `  replay purge 42
  replay purge --agent billing --replayed --yes`,
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := sel.filter(args, time.Now())
			if err != nil {
				return err
			}
			return g.run(cmd, func(ctx context.Context, s *session) error {
				entries, err := s.store.List(ctx, f)
				if err != nil {
					return err
				}
				if replayedOnly {
					kept := entries[:0]
					for _, e := range entries {
						if e.Replays > 0 {
							kept = append(kept, e)
						}
					}
					entries = kept
				}
				if len(entries) == 0 {
					fmt.Fprintln(stdio.Out, "no dead letters match: nothing to purge")
					return nil
				}
				if !yes {
					if err := confirm(stdio, "delete "+entriesN(len(entries))+" for good"); err != nil {
						return err
					}
				}
				n, err := s.store.Delete(ctx, entries)
				fmt.Fprintf(stdio.Out, "purged %s\n", entriesN(n))
				return err
			})
		},
	}
	sel.register(cmd)
	registerCompletions(g, cmd, true)
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&replayedOnly, "replayed", false, "only entries that were replayed")
	return cmd
}
