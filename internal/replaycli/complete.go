package replaycli

import (
	"context"
	"sort"
	"strconv"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/spf13/cobra"
)

// Shell completion (replay completion bash|zsh|fish|powershell): entry IDs
// for show, replay and purge, agent names for --agent, reasons for
// --reason. IDs and agents are read from the server the flags name, within
// a few seconds; when it cannot be reached, nothing is offered.

const completeTimeout = 3 * time.Second

// completeEntries offers the IDs of the newest entries, each described by
// its agent and reason.
func completeEntries(g *globals, cmd *cobra.Command, toComplete string) ([]string, cobra.ShellCompDirective) {
	var out []string
	_ = g.complete(cmd, func(ctx context.Context, s *session) error {
		return s.store.Each(ctx, dlq.Filter{}, func(e *dlq.Entry) error {
			id := strconv.FormatUint(e.Seq, 10)
			if len(id) >= len(toComplete) && id[:len(toComplete)] == toComplete {
				out = append(out, id+"\t"+e.Agent+" "+string(e.Reason))
			}
			if len(out) > 200 {
				out = out[1:] // keep the newest
			}
			return nil
		})
	})
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeAgents offers the agents that have dead letters.
func completeAgents(g *globals, cmd *cobra.Command) ([]string, cobra.ShellCompDirective) {
	var out []string
	_ = g.complete(cmd, func(ctx context.Context, s *session) error {
		st, err := s.store.Stats(ctx, dlq.Filter{})
		if err != nil {
			return err
		}
		for a, n := range st.ByAgent {
			out = append(out, a+"\t"+entriesN(n))
		}
		sort.Strings(out)
		return nil
	})
	return out, cobra.ShellCompDirectiveNoFileComp
}

// complete runs fn in a short session; errors are dropped (a shell
// completion cannot report them).
func (g *globals) complete(cmd *cobra.Command, fn func(context.Context, *session) error) error {
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, completeTimeout)
	defer cancel()
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer s.close()
	return fn(ctx, s)
}

// registerCompletions adds the completions of the selection flags and, for
// commands taking IDs, of the arguments.
func registerCompletions(g *globals, cmd *cobra.Command, ids bool) {
	_ = cmd.RegisterFlagCompletionFunc("agent", func(c *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
		return completeAgents(g, c)
	})
	if ids {
		cmd.ValidArgsFunction = func(c *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			return completeEntries(g, c, toComplete)
		}
	}
}
