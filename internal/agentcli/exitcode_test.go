package agentcli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetagent/jetagent/internal/testio"
)

// What a user sees for each kind of mistake: the exit code and the whole
// of stderr. Scripts branch on the codes; the replay command's table
// (internal/replaycli) gives the same answers to the same mistakes.
func TestWrongInputExitCodesAndStderr(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.json")
	hint := func(path string) string { return "Run '" + path + " --help' for usage.\n" }
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown flag", []string{"--nope"}, 2, "agent: unknown flag: --nope\n" + hint("agent")},
		{"unknown flag of a subcommand", []string{"run", "--nope"}, 2, "agent: unknown flag: --nope\n" + hint("agent run")},
		{"unknown shorthand", []string{"-z"}, 2, "agent: unknown shorthand flag: 'z' in -z\n" + hint("agent")},
		{"unknown subcommand", []string{"nope"}, 2, "agent: unknown command \"nope\"\n" + hint("agent")},
		{"misspelt subcommand", []string{"rn"}, 2, "agent: unknown command \"rn\" (did you mean \"run\"?)\n" + hint("agent")},
		{"unknown subcommand of a group", []string{"task", "nope"}, 2, "agent: unknown command \"nope\" for \"agent task\"\n" + hint("agent task")},
		{"missing argument", []string{"task", "show"}, 2, "agent: accepts 1 arg(s), received 0\n" + hint("agent task show")},
		{"too many arguments", []string{"status", "a", "b"}, 2, "agent: accepts at most 1 arg(s), received 2\n" + hint("agent status")},
		{"argument where none is taken", []string{"ls", "a"}, 2, "agent: unknown command \"a\" for \"agent ls\"\n" + hint("agent ls")},
		{"bad flag value", []string{"run", "--concurrency=abc"}, 2,
			"agent: invalid argument \"abc\" for \"--concurrency\" flag: strconv.ParseInt: parsing \"abc\": invalid syntax\n" + hint("agent run")},
		{"bad boolean", []string{"status", "--watch=maybe"}, 2,
			"agent: invalid argument \"maybe\" for \"-w, --watch\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax\n" + hint("agent status")},
		{"flag without its value", []string{"run", "--concurrency"}, 2, "agent: flag needs an argument: --concurrency\n" + hint("agent run")},
		{"required flag missing", []string{"send"}, 2, "agent: required flag(s) \"to\" not set\n" + hint("agent send")},
		{"bad value found by the command", []string{"run", "--log-level", "loud"}, 2,
			"agent: --log-level: \"loud\": want debug, info, warn, error\n" + hint("agent run")},
		{"argument to cobra's completion", []string{"completion", "bash", "extra"}, 2,
			"agent: unknown command \"extra\" for \"agent completion bash\"\n" + hint("agent completion bash")},
		{"runtime failure", []string{"config", "validate", missing}, 1,
			missing + ": cannot read: no such file or directory\nagent: " + missing + ": 1 problem\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := runMain(t, c.args...)
			if code != c.code || stderr != c.stderr || stdout != "" {
				t.Errorf("agent %s: exit %d, stderr %q, stdout %q\nwant exit %d, stderr %q", strings.Join(c.args, " "), code, stderr, stdout, c.code, c.stderr)
			}
		})
	}
}

// A command that waits and is interrupted exits 130, as a shell does for
// a process ended by SIGINT.
func TestInterruptedSendExits130(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out, errb testio.Buffer
	code := Main(ctx, []string{"send", "--to", "echo", "--nats", "nats://127.0.0.1:1"}, &out, &errb)
	if code != 130 || errb.String() != "agent: interrupted before the task was sent\n" {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}

// Each root's help lists the exit codes its commands use (docs/errors.md).
func TestHelpListsTheExitCodes(t *testing.T) {
	_, stdout, _ := runMain(t, "--help")
	for _, code := range []string{"0", "1", "2", "130"} {
		if !strings.Contains(stdout, "\n  "+code+" ") {
			t.Errorf("agent --help lists no exit code %s:\n%s", code, stdout)
		}
	}
}
