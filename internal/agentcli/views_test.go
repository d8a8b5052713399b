package agentcli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
)

// runningEcho starts "agent run" (the echo agent) on a free port and
// returns its URL and data directory.
func runningEcho(t *testing.T) (url, dir string) {
	t.Helper()
	port := freePort(t)
	dir = t.TempDir()
	startRun(t, "--data-dir", dir, "--listen", "127.0.0.1:"+strconv.Itoa(port))
	return "nats://127.0.0.1:" + strconv.Itoa(port), dir
}

func TestLsShowsEveryAgentAndTasksNobodyConsumes(t *testing.T) {
	url, dir := runningEcho(t)
	if code, _, stderr := runMain(t, "send", "-s", url, "--to", "echo"); code != 0 {
		t.Fatalf("send: %s", stderr)
	}
	code, _, stderr := runMain(t, "send", "-s", url, "--to", "ehco", "--no-wait")
	if code != 0 || !strings.Contains(stderr, `no agent named ehco has consumed here (known: echo; did you mean "echo"?)`) {
		t.Fatalf("send to a typo: exit %d, stderr %q; want a warning", code, stderr)
	}
	code, out, stderr := runMain(t, "ls", "-s", url, "--json")
	var views []agentView
	if err := json.Unmarshal([]byte(out), &views); code != 0 || err != nil {
		t.Fatalf("ls --json: exit %d, %v, %s", code, err, stderr)
	}
	if len(views) != 2 || views[0].Name != "echo" || !views[0].Consumer || views[0].Pullers < 1 || views[0].LastDelivery == nil ||
		views[1].Name != "ehco" || views[1].Consumer || views[1].Pending != 1 || views[1].Oldest == nil {
		t.Fatalf("ls --json = %s", out)
	}
	// The same through the data directory: the owner's recorded URL.
	code, out, _ = runMain(t, "ls", "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "no consumer: nobody named ehco has consumed here") || !strings.HasPrefix(out, "AGENT ") {
		t.Fatalf("ls --data-dir: exit %d\n%s", code, out)
	}
	code, out, _ = runMain(t, "status", "echo", "-s", url)
	if code != 0 || !strings.Contains(out, "agent echo\n") || !strings.Contains(out, "breakers:") {
		t.Fatalf("status echo: exit %d\n%s", code, out)
	}
	code, _, stderr = runMain(t, "status", "ecoh", "-s", url)
	if code != 1 || !strings.Contains(stderr, `did you mean "echo"?`) {
		t.Fatalf("status ecoh: exit %d, %q", code, stderr)
	}
}

func TestLsWatchRedrawsUntilInterrupted(t *testing.T) {
	url, _ := runningEcho(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out testio.Buffer
	done := make(chan int, 1)
	go func() {
		done <- Main(ctx, []string{"ls", "-s", url, "--watch", "--interval", "100ms"}, &out, &bytes.Buffer{})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(out.String(), "AGENT ") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling the command's output
	}
	cancel()
	if code := <-done; code != 0 || strings.Count(out.String(), "AGENT ") < 2 {
		t.Fatalf("ls --watch: exit %d, output:\n%s", code, out.String())
	}
}

func TestTaskShowDecodesTheCheckpointAndLsFilters(t *testing.T) {
	url, _ := runningEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	topo := bus.Topology{}
	if err := bus.ProvisionAgent(ctx, conn.JetStream(), topo, "report"); err != nil { // each agent has its own snapshot bucket
		t.Fatal(err)
	}
	store, err := snapshot.NewKV(conn.JetStream(), topo)
	if err != nil {
		t.Fatal(err)
	}
	rev := uint64(0)
	for step := 1; step <= 3; step++ {
		state, _ := envelope.EncodePayload(map[string]any{"pages": step * 10})
		if rev, err = store.Save(ctx, &snapshot.Snapshot{Agent: "report", TaskID: "q3", Step: step, Status: snapshot.Working, State: state, Updated: time.Now().UTC()}, rev); err != nil {
			t.Fatal(err)
		}
	}
	// an agent "report" that has consumed here
	if _, err := conn.JetStream().CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "report", FilterSubject: topo.AgentTasks("report"), AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runMain(t, "task", "show", "q3", "-s", url)
	for _, want := range []string{"task q3 of agent report: checkpointed", "status:   working", "step:     3", `state:    {"pages":30}`, "history (newest first)"} {
		if !strings.Contains(out, want) {
			t.Errorf("task show lacks %q: exit %d\n%s%s", want, code, out, stderr)
		}
	}
	code, out, _ = runMain(t, "task", "show", "q3", "-s", url, "--json")
	var views []taskView
	if err := json.Unmarshal([]byte(out), &views); code != 0 || err != nil || len(views) != 1 || len(views[0].History) != 3 || views[0].History[2].Step != 1 {
		t.Fatalf("task show --json: %v\n%s", err, out)
	}
	code, out, _ = runMain(t, "task", "ls", "-s", url, "--status", "working")
	if code != 0 || !strings.Contains(out, "report  q3    working  3") {
		t.Fatalf("task ls --status working: exit %d\n%s", code, out)
	}
	code, out, _ = runMain(t, "task", "ls", "-s", url, "--status", "completed")
	if code != 0 || !strings.Contains(out, "no checkpointed tasks match") {
		t.Fatalf("task ls --status completed: exit %d\n%s", code, out)
	}
	if code, _, stderr = runMain(t, "task", "ls", "-s", url, "--status", "wroking"); code != 2 || !strings.Contains(stderr, `did you mean "working"`) {
		t.Fatalf("--status wroking: exit %d %q", code, stderr)
	}
}

func TestTaskCancelAndSendOptions(t *testing.T) {
	url, _ := runningEcho(t)
	code, out, stderr := runMain(t, "task", "cancel", "t-9", "--agent", "echo", "-s", url)
	if code != 0 || !strings.Contains(out, `"payload_type": "task.update"`) || !strings.Contains(out, `"status": "cancelled"`) {
		t.Fatalf("task cancel: exit %d\n%s%s", code, out, stderr)
	}
	// a payload of ~900 KiB, from a file and from stdin
	big := `{"blob":"` + strings.Repeat("x", 900<<10) + `"}`
	file := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(file, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = runMain(t, "send", "-s", url, "--to", "echo", "--payload-file", file, "--idempotency-key", "k1",
		"--header", "tenant=acme", "--deadline", "1m")
	if code != 0 || !strings.Contains(out, strings.Repeat("x", 1000)) {
		t.Fatalf("send --payload-file: exit %d, %.300s %s", code, out, stderr)
	}
	var sout, serr testio.Buffer
	root := newRoot(&sout, &serr)
	root.SetIn(strings.NewReader(`[1,2,3]`))
	root.SetArgs([]string{"send", "-s", url, "--to", "echo", "--payload-file", "-"})
	if err := root.ExecuteContext(context.Background()); err != nil || !strings.Contains(sout.String(), "\"payload\": [\n    1,") {
		t.Fatalf("send --payload-file -: %v\n%s", err, sout.String())
	}
	// a task dead-lettered at once fails fast, with the reason
	start := time.Now()
	code, _, stderr = runMain(t, "send", "-s", url, "--to", "echo", "--type", "message.send", "--timeout", "20s")
	if code != 1 || !strings.Contains(stderr, "dead-lettered") || !strings.Contains(stderr, "unknown_type") || time.Since(start) > 10*time.Second {
		t.Fatalf("unknown type: exit %d after %v, %q", code, time.Since(start), stderr)
	}
	for _, args := range [][]string{
		{"--deadline", "-5m"}, {"--deadline", "2001-01-01T00:00:00Z"}, {"--deadline", "soon"},
		{"--payload", "1", "--payload-file", file}, {"--header", "novalue"},
	} {
		code, _, stderr := runMain(t, append([]string{"send", "--to", "echo", "-s", "nats://127.0.0.1:1"}, args...)...)
		if code != 2 {
			t.Errorf("send %v: exit %d, %q; want a usage error", args, code, stderr)
		}
	}
	if code, _, stderr := runMain(t, "send", "--to", "echo", "-s", "nats://127.0.0.1:1", "--payload-file", "/no/such/file"); code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing payload file: exit %d, %q", code, stderr)
	}
}

func TestRunHelpGroupsItsFlags(t *testing.T) {
	code, out, _ := runMain(t, "run", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	last := -1
	for _, g := range runGroups {
		i := strings.Index(out, "\n"+g.title+" flags:\n")
		if i < 0 || i < last {
			t.Errorf("run --help: group %q missing or out of order", g.title)
		}
		last = i
	}
	sub, _, _ := newRoot(&bytes.Buffer{}, &bytes.Buffer{}).Find([]string{"run"})
	sub.Flags().VisitAll(func(f *pflag.Flag) {
		if n := len(regexp.MustCompile(`(?m)^\s+(-\w, )?--`+regexp.QuoteMeta(f.Name)+` `).FindAllString(out, -1)); n != 1 {
			t.Errorf("--%s is listed %d times", f.Name, n)
		}
	})
	if strings.Contains(out, "(env ") || strings.Contains(out, "\nOther flags:\n      --") && !strings.Contains(out, "--help") {
		t.Errorf("run --help mixes variable notations or loses --help:\n%s", out)
	}
}

// TestRunJoinsWhatTheNATSCLIWouldJoin: -s, $NATS_URL and --context name the
// server (one without JetStream here, so that joining it shows).
func TestRunJoinsWhatTheNATSCLIWouldJoin(t *testing.T) {
	url := startPlainServer(t)
	if code, _, stderr := runMain(t, "run", "-s", url); code != 1 || !strings.Contains(stderr, url+": natsflags: JetStream is not enabled") {
		t.Errorf("run -s: exit %d, %q", code, stderr)
	}
	t.Setenv("NATS_URL", url)
	if code, _, stderr := runMain(t, "run"); code != 1 || !strings.Contains(stderr, "JetStream is not enabled") {
		t.Errorf("run with $NATS_URL: exit %d, %q", code, stderr)
	}
	t.Setenv("NATS_URL", "")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	dir := filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain.json"), []byte(`{"url":"`+url+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, stderr := runMain(t, "run", "--context", "plain"); code != 1 || !strings.Contains(stderr, "JetStream is not enabled") {
		t.Errorf("run --context: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runMain(t, "ls", "--context", "plain"); code != 1 || !strings.Contains(stderr, "JetStream is not enabled") {
		t.Errorf("ls --context: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runMain(t, "run", "--context", "nope"); code != 2 || !strings.Contains(stderr, "known: plain") {
		t.Errorf("run --context nope: exit %d, %q", code, stderr)
	}
}

func TestConfigValidateJSON(t *testing.T) {
	bad := writeConfig(t, "agents:\n\t- name: a\n\t\tack_wiat: 30s\n")
	code, out, _ := validateMain(t, "--json", bad)
	var got struct {
		Valid    bool
		Agents   []string
		Problems []jsonProblem
	}
	if err := json.Unmarshal([]byte(out), &got); code != 1 || err != nil || got.Valid || len(got.Problems) != 1 {
		t.Fatalf("exit %d, %v:\n%s", code, err, out)
	}
	if p := got.Problems[0]; p.File != bad || p.Line != 3 || p.Column != 5 || p.Path != "agents[0].ack_wiat" || !strings.Contains(p.Message, `did you mean "ack_wait"`) {
		t.Errorf("problem = %+v", p)
	}
	good := writeConfig(t, twoAgents)
	code, out, _ = validateMain(t, "--json", good)
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || !got.Valid || len(got.Agents) != 2 || len(got.Problems) != 0 {
		t.Fatalf("valid file: exit %d, %v:\n%s", code, err, out)
	}
}
