package replaycli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/spf13/cobra"
)

func newListCmd(g *globals, stdio IO) *cobra.Command {
	var sel selection
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list [flags]",
		Short: "List dead letters, oldest first",
		Example: `  replay list
  replay list --agent billing --reason max_attempts --since 24h
  replay list --json | jq '.[].id'
  replay list --limit 100 --after 4200`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := sel.filter(nil, time.Now())
			if err != nil {
				return err
			}
			limit := f.Limit
			if limit > 0 {
				f.Limit++ // one more tells whether there is a next page
			}
			return g.run(cmd, func(ctx context.Context, s *session) error {
				entries, err := s.store.List(ctx, f)
				if err != nil {
					return err
				}
				if limit > 0 && len(entries) > limit {
					entries = entries[:limit]
					if !asJSON {
						defer fmt.Fprintf(stdio.Err, "more entries: replay list --after %d --limit %d\n", entries[limit-1].Seq, limit)
					}
				}
				if asJSON {
					return writeJSON(stdio.Out, summaries(entries))
				}
				if len(entries) == 0 {
					fmt.Fprintln(stdio.Out, "no dead letters match")
					return nil
				}
				return writeTable(stdio.Out, entries, time.Now())
			})
		},
	}
	sel.register(cmd)
	registerCompletions(g, cmd, false)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON array instead of a table")
	return cmd
}

// summary is an entry in list --json.
type summary struct {
	ID           uint64    `json:"id"`
	Stored       time.Time `json:"stored"`
	Agent        string    `json:"agent"`
	Subject      string    `json:"subject"`
	Reason       string    `json:"reason"`
	Error        string    `json:"error"`
	Deliveries   uint64    `json:"deliveries"`
	Stream       string    `json:"stream"`
	Sequence     uint64    `json:"sequence"`
	FirstFailure time.Time `json:"first_failure"`
	LastFailure  time.Time `json:"last_failure"`
	TraceID      string    `json:"trace_id,omitempty"`
	EnvelopeID   string    `json:"envelope_id,omitempty"`
	Replays      int       `json:"replays"`
}

func summarise(e *dlq.Entry) summary {
	s := summary{ID: e.Seq, Stored: e.Stored, Agent: e.Agent, Subject: e.Subject, Reason: string(e.Reason),
		Error: e.Error, Deliveries: e.Deliveries, Stream: e.Stream, Sequence: e.Sequence,
		FirstFailure: e.FirstFailure, LastFailure: e.LastFailure, TraceID: e.TraceID, Replays: e.Replays}
	var env envelope.Envelope
	if envelope.Unmarshal(e.Data, &env) == nil {
		s.EnvelopeID = env.ID
	}
	return s
}

func summaries(es []*dlq.Entry) []summary {
	out := make([]summary, len(es))
	for i, e := range es {
		out[i] = summarise(e)
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeTable(w io.Writer, es []*dlq.Entry, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGE\tAGENT\tSUBJECT\tREASON\tDELIVERIES\tREPLAYS\tERROR")
	for _, e := range es {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", e.Seq, age(now.Sub(e.Stored)), e.Agent, e.Subject,
			e.Reason, e.Deliveries, e.Replays, clip(oneLine(e.Error), 60))
	}
	return tw.Flush()
}

func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}
