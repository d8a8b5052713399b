package agentcli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagGroup is a titled group of flags in a command's help.
type flagGroup struct {
	title string
	flags []string
}

// groupFlags makes cmd's help list its flags in groups, in the order
// given; flags in no group come last, under "Other flags". Every flag's
// variable is shown the same way: [$NAME] at the end of its line.
func groupFlags(cmd *cobra.Command, groups []flagGroup) {
	cmd.SetHelpFunc(func(c *cobra.Command, _ []string) {
		w := c.OutOrStdout()
		if c.Long != "" {
			fmt.Fprintln(w, strings.TrimRight(c.Long, "\n"))
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Usage:\n  %s\n", c.UseLine())
		if c.Example != "" {
			fmt.Fprintf(w, "\nExamples:\n%s\n", c.Example)
		}
		writeGroups(w, c, groups)
	})
}

func writeGroups(w io.Writer, c *cobra.Command, groups []flagGroup) {
	all := c.Flags()
	placed := map[string]bool{}
	for _, g := range append(groups, flagGroup{title: "Other"}) {
		set := pflag.NewFlagSet(g.title, pflag.ContinueOnError)
		set.SortFlags = false
		names := g.flags
		if g.title == "Other" {
			names = nil
			all.VisitAll(func(f *pflag.Flag) {
				if !placed[f.Name] {
					names = append(names, f.Name)
				}
			})
			if h := c.Flags().Lookup("help"); h == nil {
				c.InitDefaultHelpFlag()
			}
		}
		for _, n := range names {
			if f := all.Lookup(n); f != nil && !placed[n] {
				placed[n] = true
				set.AddFlag(f)
			}
		}
		if !set.HasFlags() {
			continue
		}
		fmt.Fprintf(w, "\n%s flags:\n%s", g.title, set.FlagUsages())
	}
}
