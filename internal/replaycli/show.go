package replaycli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/spf13/cobra"
)

func newShowCmd(g *globals, stdio IO) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "show ID",
		Short:   "Show one dead letter: its provenance, headers and decoded envelope",
		Example: "  replay show 42\n  replay show 42 --json",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var sel selection
			f, err := sel.filter(args, time.Now())
			if err != nil {
				return err
			}
			return g.run(cmd, func(ctx context.Context, s *session) error {
				e, err := s.store.Get(ctx, f.IDs[0])
				if err != nil {
					return err
				}
				detail := struct {
					summary
					Headers  map[string][]string `json:"headers"`
					Envelope json.RawMessage     `json:"envelope,omitempty"`
					RawBody  string              `json:"raw_body_base64,omitempty"`
					Decode   string              `json:"decode_error,omitempty"`
				}{summary: summarise(e), Headers: e.Header}
				var env envelope.Envelope
				if err := envelope.Unmarshal(e.Data, &env); err != nil {
					detail.RawBody = base64.StdEncoding.EncodeToString(e.Data)
					detail.Decode = err.Error()
				} else if detail.Envelope, err = env.MarshalJSON(); err != nil {
					detail.Decode = err.Error()
				}
				if asJSON {
					return writeJSON(stdio.Out, detail)
				}
				w := stdio.Out
				fmt.Fprintf(w, "ID:             %d (stored %s)\n", e.Seq, e.Stored.UTC().Format(time.RFC3339))
				fmt.Fprintf(w, "Agent:          %s\n", e.Agent)
				fmt.Fprintf(w, "Subject:        %s\n", e.Subject)
				fmt.Fprintf(w, "Original:       stream %s, sequence %d\n", e.Stream, e.Sequence)
				fmt.Fprintf(w, "Reason:         %s\n", e.Reason)
				fmt.Fprintf(w, "Error:          %s\n", e.Error)
				fmt.Fprintf(w, "Deliveries:     %d\n", e.Deliveries)
				fmt.Fprintf(w, "First failure:  %s\n", e.FirstFailure.UTC().Format(time.RFC3339Nano))
				fmt.Fprintf(w, "Last failure:   %s\n", e.LastFailure.UTC().Format(time.RFC3339Nano))
				if e.TraceID != "" {
					fmt.Fprintf(w, "Trace ID:       %s\n", e.TraceID)
				}
				fmt.Fprintf(w, "Replays:        %d\n", e.Replays)
				fmt.Fprintln(w, "Headers:")
				keys := make([]string, 0, len(e.Header))
				for k := range e.Header {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(e.Header[k], ", "))
				}
				if detail.Envelope != nil {
					var pretty bytes.Buffer
					if err := json.Indent(&pretty, detail.Envelope, "  ", "  "); err != nil {
						return err
					}
					fmt.Fprintf(w, "Envelope:\n  %s\n", pretty.String())
				} else {
					fmt.Fprintf(w, "Body (%d bytes, not an envelope: %s):\n%s\n", len(e.Data), detail.Decode, detail.RawBody)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON instead of text")
	cmd.ValidArgsFunction = func(c *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return completeEntries(g, c, toComplete)
	}
	return cmd
}
