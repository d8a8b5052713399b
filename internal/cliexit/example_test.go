package cliexit_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/spf13/cobra"
)

// A command marks its tree once, runs, and reports: cobra's own complaint
// about the command line is a usage error (exit 2, with a hint), the
// command's failure exit 1.
func Example() {
	root := &cobra.Command{Use: "tool", SilenceErrors: true, SilenceUsage: true}
	root.AddCommand(&cobra.Command{
		Use:  "greet NAME",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "nobody" {
				return errors.New("nobody to greet")
			}
			fmt.Fprintln(cmd.OutOrStdout(), "hello", args[0])
			return nil
		},
	})
	cliexit.MarkUsageErrors(root)

	for _, args := range [][]string{{"greet", "ann"}, {"greet"}, {"greet", "nobody"}} {
		root.SetArgs(args)
		cmd, err := root.ExecuteC()
		fmt.Println("exit", cliexit.Report(os.Stdout, cmd, err))
	}
	// Output:
	// hello ann
	// exit 0
	// tool: accepts 1 arg(s), received 0
	// Run 'tool greet --help' for usage.
	// exit 2
	// tool: nobody to greet
	// exit 1
}

// A command's own outcomes carry their codes; wrapping keeps them.
func ExampleCode() {
	declined := cliexit.WithCode(cliexit.Aborted, errors.New("aborted: not confirmed"))
	fmt.Println(cliexit.Code(nil), cliexit.Code(errors.New("boom")), cliexit.Code(cliexit.Usagef("--limit must not be negative")),
		cliexit.Code(fmt.Errorf("purge: %w", declined)))
	// Output:
	// 0 1 2 3
}
