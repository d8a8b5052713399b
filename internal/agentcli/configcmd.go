package agentcli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// newConfigCmd is `agent config`, with its subcommand validate.
func newConfigCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check agent config files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageError{fmt.Errorf("%s needs a subcommand: validate", cmd.CommandPath())}
		},
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file and list every problem with its line and column",
		Long: `validate reads a config file of "agent run --config" and reports every
problem it finds, not only the first, each as FILE:LINE:COLUMN: key: what is
wrong: unknown keys (typos), invalid values and durations, rates out of range,
names that cannot be NATS subject tokens, duplicate agents, an exec handler
without a command, an http handler without an http:// URL. It checks the file
alone: JETAGENT_* variables and flags, which override it at run time, are not
applied.

Exit status: 0 and "ok: N agents" when the file is valid; 1 with the list of
problems on stderr when it is not; 2 on a usage error.`,
		Example: `  agent config validate agents.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return validateConfigFile(args[0], stdout, stderr)
		},
	})
	return cmd
}

// validateConfigFile checks file alone (no environment, no flags).
func validateConfigFile(file string, stdout, stderr io.Writer) error {
	cfg, probs := loadConfig(configSources{file: file})
	if len(probs) > 0 {
		return problemsError(stderr, file, probs) // all in the file: listed, exit 1
	}
	names := make([]string, len(cfg.agents))
	for i, a := range cfg.agents {
		names[i] = a.name
	}
	plural := "s"
	if len(names) == 1 {
		plural = ""
	}
	_, err := fmt.Fprintf(stdout, "ok: %d agent%s (%s)\n", len(names), plural, strings.Join(names, ", "))
	return err
}
