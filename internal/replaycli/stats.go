package replaycli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newStatsCmd(g *globals, stdio IO) *cobra.Command {
	var sel selection
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "stats [flags]",
		Short:   "Count dead letters by agent, subject and reason, and show the oldest",
		Example: "  replay stats\n  replay stats --since 24h --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := sel.filter(nil, time.Now())
			if err != nil {
				return err
			}
			return g.run(cmd, func(ctx context.Context, s *session) error {
				st, err := s.store.Stats(ctx, f)
				if err != nil {
					return err
				}
				if asJSON {
					out := map[string]any{"total": st.Total, "replayed": st.Replayed, "by_agent": st.ByAgent,
						"by_subject": st.BySubject, "by_reason": st.ByReason}
					if st.Oldest != nil {
						out["oldest"] = summarise(st.Oldest)
					}
					return writeJSON(stdio.Out, out)
				}
				w := stdio.Out
				fmt.Fprintf(w, "total %d (replayed %d)\n", st.Total, st.Replayed)
				if st.Oldest != nil {
					fmt.Fprintf(w, "oldest: ID %d, stored %s (%s ago), %s, %s\n", st.Oldest.Seq,
						st.Oldest.Stored.UTC().Format(time.RFC3339), age(time.Since(st.Oldest.Stored)), st.Oldest.Subject, st.Oldest.Reason)
				}
				counts(w, "AGENT", st.ByAgent)
				counts(w, "SUBJECT", st.BySubject)
				byReason := make(map[string]int, len(st.ByReason))
				for r, n := range st.ByReason {
					byReason[string(r)] = n
				}
				counts(w, "REASON", byReason)
				return nil
			})
		},
	}
	sel.register(cmd)
	registerCompletions(g, cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	return cmd
}

// counts prints a two-column table, largest first.
func counts(w io.Writer, title string, m map[string]int) {
	if len(m) == 0 {
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\tENTRIES\n", title)
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d\n", k, m[k])
	}
	_ = tw.Flush()
}
