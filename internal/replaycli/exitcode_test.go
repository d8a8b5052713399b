package replaycli

import (
	"path/filepath"
	"strings"
	"testing"
)

// What a user sees for each kind of mistake: the exit code and the whole
// of stderr. Scripts branch on the codes; the agent command's table
// (internal/agentcli) gives the same answers to the same mistakes.
func TestWrongInputExitCodesAndStderr(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	hint := func(path string) string { return "Run '" + path + " --help' for usage.\n" }
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown flag", []string{"--nope"}, 2, "replay: unknown flag: --nope\n" + hint("replay")},
		{"unknown flag of a subcommand", []string{"list", "--nope"}, 2, "replay: unknown flag: --nope\n" + hint("replay list")},
		{"unknown shorthand", []string{"-z"}, 2, "replay: unknown shorthand flag: 'z' in -z\n" + hint("replay")},
		{"unknown subcommand", []string{"nope"}, 2, "replay: unknown command \"nope\"\n" + hint("replay")},
		{"misspelt subcommand", []string{"lst"}, 2, "replay: unknown command \"lst\" (did you mean \"list\"?)\n" + hint("replay")},
		{"missing argument", []string{"show"}, 2, "replay: accepts 1 arg(s), received 0\n" + hint("replay show")},
		{"too many arguments", []string{"show", "1", "2"}, 2, "replay: accepts 1 arg(s), received 2\n" + hint("replay show")},
		{"argument where none is taken", []string{"list", "x"}, 2, "replay: unknown command \"x\" for \"replay list\"\n" + hint("replay list")},
		{"bad flag value", []string{"list", "--limit=abc"}, 2,
			"replay: invalid argument \"abc\" for \"--limit\" flag: strconv.ParseInt: parsing \"abc\": invalid syntax\n" + hint("replay list")},
		{"bad boolean", []string{"purge", "--yes=maybe"}, 2,
			"replay: invalid argument \"maybe\" for \"-y, --yes\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax\n" + hint("replay purge")},
		{"flag without its value", []string{"list", "--limit"}, 2, "replay: flag needs an argument: --limit\n" + hint("replay list")},
		{"bad value found by the command", []string{"list", "--limit", "-1"}, 2, "replay: --limit must not be negative\n" + hint("replay list")},
		// It exited 1, where agent exited 2: now both say "wrong arguments".
		{"argument to cobra's completion", []string{"completion", "bash", "extra"}, 2,
			"replay: unknown command \"extra\" for \"replay completion bash\"\n" + hint("replay completion bash")},
		{"runtime failure", []string{"show", "1", "--data-dir", missing}, 1,
			"replay: no jetagent data in " + missing + " (has 'agent run' ever run there? or pass --nats URL)\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, "", false, c.args...)
			if r.code != c.code || r.stderr != c.stderr || r.out != "" {
				t.Errorf("replay %s: exit %d, stderr %q, stdout %q\nwant exit %d, stderr %q", strings.Join(c.args, " "), r.code, r.stderr, r.out, c.code, c.stderr)
			}
		})
	}
}
