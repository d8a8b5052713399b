package replaycli

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/testio"
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

// A replay stopped by Ctrl-C (its context ends) exits 130, as agent send
// does, after its summary line: it used to exit 1, as if it had failed.
func TestInterruptedReplayExits130AfterItsSummary(t *testing.T) {
	url, conn := server(t)
	fill(t, conn, "echo", 3, 1, dlq.ReasonPermanent)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() { // Ctrl-C once the first entry is replayed; the rate keeps the others waiting
		defer cancel()
		for ctx.Err() == nil {
			st, err := conn.JetStream().Stream(ctx, topo.TasksStream())
			if err == nil {
				if info, err := st.Info(ctx); err == nil && info.State.Msgs >= 1 {
					return
				}
			}
			time.Sleep(5 * time.Millisecond) // polling the tasks stream
		}
	}()
	var out, errb testio.Buffer
	code := Main(ctx, []string{"--nats", url, "replay", "--yes", "-q", "--rate", "0.01"}, IO{In: strings.NewReader(""), Out: &out, Err: &errb})
	if code != 130 {
		t.Fatalf("exit %d, want 130; stdout %q, stderr %q", code, out.String(), errb.String())
	}
	if !strings.HasPrefix(out.String(), "replayed 1, ") {
		t.Errorf("stdout %q, want the summary of one replayed entry", out.String())
	}
}

// Each root's help lists the exit codes its commands use (docs/errors.md).
func TestHelpListsTheExitCodes(t *testing.T) {
	r := run(t, "", false, "--help")
	for _, code := range []string{"0", "1", "2", "3", "4", "130"} {
		if !strings.Contains(r.out, "\n  "+code+" ") {
			t.Errorf("replay --help lists no exit code %s:\n%s", code, r.out)
		}
	}
}
