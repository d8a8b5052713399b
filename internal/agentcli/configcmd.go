package agentcli

import (
	"fmt"
	"io"
	"strings"

	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/spf13/cobra"
)

// newConfigCmd is `agent config`, with its subcommand validate.
func newConfigCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check agent config files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cliexit.UsageError(fmt.Errorf("%s needs a subcommand: validate", cmd.CommandPath()))
		},
	}
	var asJSON bool
	validate := &cobra.Command{
		Use:   "validate FILE",
		Short: "Check a config file and list every problem with its line and column",
		Long: `validate reads a config file of "agent run --config" and reports every
problem it finds, not only the first, each as FILE:LINE:COLUMN: key: what is
wrong: unknown keys (typos), invalid values and durations, rates out of range,
names that cannot be NATS subject tokens, duplicate agents, an exec handler
without a command, an http handler without an http:// URL. It checks the file
alone: JETAGENT_* variables and flags, which override it at run time, are not
applied.

With --json it prints one JSON object on stdout instead, for CI annotations:
{"file", "valid", "agents": [names], "problems": [{"file", "line", "column",
"path", "message"}]} (line and column 0 when unknown).

Exit status: 0 and "ok: N agents" when the file is valid; 1 with the list of
problems on stderr when it is not; 2 on a usage error.`,
		Example: `  agent config validate agents.yaml
  agent config validate --json agents.yaml | jq -r '.problems[] | "::error file=\(.file),line=\(.line),col=\(.column)::\(.path): \(.message)"'`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if asJSON {
				return validateConfigJSON(args[0], stdout)
			}
			return validateConfigFile(args[0], stdout, stderr)
		},
	}
	validate.Flags().BoolVar(&asJSON, "json", false, "print the result as one JSON object on stdout")
	cmd.AddCommand(validate)
	return cmd
}

// jsonProblem is a problem in config validate --json.
type jsonProblem struct {
	File    string `json:"file"`
	Line    int    `json:"line"`
	Column  int    `json:"column"`
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// validateConfigJSON is validateConfigFile's JSON form; it fails (exit 1)
// when there are problems, after printing them.
func validateConfigJSON(file string, stdout io.Writer) error {
	cfg, probs := loadConfig(configSources{file: file})
	out := struct {
		File     string        `json:"file"`
		Valid    bool          `json:"valid"`
		Agents   []string      `json:"agents"`
		Problems []jsonProblem `json:"problems"`
	}{File: file, Valid: len(probs) == 0, Agents: []string{}, Problems: []jsonProblem{}}
	for _, p := range probs {
		out.Problems = append(out.Problems, jsonProblem{File: p.at.file, Line: p.at.line, Column: p.at.col, Path: p.path, Message: p.msg})
	}
	if cfg != nil {
		for _, a := range cfg.agents {
			out.Agents = append(out.Agents, a.name)
		}
	}
	if err := writeJSON(stdout, out); err != nil {
		return err
	}
	if len(probs) == 1 {
		return fmt.Errorf("%s: 1 problem", file)
	}
	if len(probs) > 0 {
		return fmt.Errorf("%s: %d problems", file, len(probs))
	}
	return nil
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
