package agentcli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/runtime"
)

// validateMain runs `agent config validate` with args through Main and
// returns the exit code and output.
func validateMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runMain(t, append([]string{"config", "validate"}, args...)...)
}

func TestConfigValidateExitCodes(t *testing.T) {
	good := writeConfig(t, twoAgents)
	code, stdout, stderr := validateMain(t, good)
	if code != 0 || stdout != "ok: 2 agents (upper, web)\n" || stderr != "" {
		t.Errorf("valid file: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	bad := writeConfig(t, `
agents:
	- name: a
		ack_wiat: 30s
	- name: a
`)
	code, stdout, stderr = validateMain(t, bad)
	want := bad + `:4:5: agents[0].ack_wiat: unknown key (did you mean "ack_wait"?)
` + bad + `:5:11: agents[1].name: agent "a" is declared twice (first at ` + bad + `:3:11)
agent: ` + bad + `: 2 problems
`
	if code != 1 || stdout != "" || stderr != want {
		t.Errorf("invalid file: exit %d, stdout %q, stderr:\n%s\nwant:\n%s", code, stdout, stderr, want)
	}

	code, _, stderr = validateMain(t, filepath.Join(t.TempDir(), "missing.yaml"))
	if code != 1 || !strings.Contains(stderr, "missing.yaml: cannot read: no such file or directory") {
		t.Errorf("missing file: exit %d, stderr %q", code, stderr)
	}
	if code, _, _ = validateMain(t); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
}

func TestRunWithAnInvalidConfigListsEveryProblem(t *testing.T) {
	bad := writeConfig(t, `
agents:
	- name: a
		concurrency: 0
		handler: {kind: http, url: "localhost:80"}
`)
	code, _, stderr := runMain(t, "run", "--config", bad)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != 1 || len(lines) != 3 || !strings.HasPrefix(lines[0], bad+":4:18: ") || !strings.HasPrefix(lines[1], bad+":5:32: ") ||
		lines[2] != "agent: "+bad+": 2 problems" {
		t.Errorf("exit %d, stderr:\n%s", code, stderr)
	}
	// a flag problem alone stays a usage error
	good := writeConfig(t, twoAgents)
	code, _, stderr = runMain(t, "run", "--config", good, "--concurrency", "0")
	if code != 2 || !strings.HasPrefix(stderr, "agent: --concurrency: must be 1..4096, got 0\n") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runMain(t, "run", "--handler", "exec", "--exec-command", "/no/such/program", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, "no such file or directory") {
		t.Errorf("missing program: exit %d, stderr %q", code, stderr)
	}
}

// Two agents from one file, in one process, on one embedded server; both
// answer; a stop (SIGTERM: ctx ends) stops both gracefully.
func TestRunTwoAgentsFromAFile(t *testing.T) {
	port, opsPort := freePort(t), freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	file := writeConfig(t, `
ops:
	listen: 127.0.0.1:`+strconv.Itoa(opsPort)+`
nats:
	embedded:
		listen: 127.0.0.1:`+strconv.Itoa(port)+`
		data_dir: `+t.TempDir()+`
agents:
	- name: alpha
	- name: beta
		concurrency: 2
		handler:
			kind: exec
			command: [sh, -c, 'cat >/dev/null; echo "{\"from\": \"$JETAGENT_AGENT\", \"pwd\": \"$(pwd)\"}"']
`)
	ctx, cancel := context.WithCancel(context.Background())
	var runErr testio.Buffer
	runDone := make(chan int, 1)
	go func() { runDone <- Main(ctx, []string{"run", "--config", file}, &bytes.Buffer{}, &runErr) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-runDone
		}
	}()
	waitUntilReady(t, url, &runErr)

	cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer ccancel()
	conn, err := bus.Connect(cctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, err := runtime.NewClient(conn, runtime.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	dir, _ := filepath.EvalSymlinks(filepath.Dir(file))
	for agent, want := range map[string]string{
		"alpha": `{"n":1}`,
		"beta":  `{"from":"beta","pwd":"` + dir + `"}`,
	} {
		env, err := envelope.New(client.Name(), agent, envelope.TaskRequest, map[string]any{"n": 1})
		if err != nil {
			t.Fatal(err)
		}
		reply, err := client.Send(cctx, env)
		if err != nil {
			t.Fatalf("%s: %v\n%s", agent, err, runErr.String())
		}
		if got, _ := envelope.PayloadJSON(reply.Payload); string(got) != want || reply.Sender != agent {
			t.Errorf("%s answered %s from %s, want %s", agent, got, reply.Sender, want)
		}
	}

	// one process serves the metrics and health of both
	ops := "http://127.0.0.1:" + strconv.Itoa(opsPort)
	if code, body := httpGet(t, ops+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %s", code, body)
	}
	_, body := httpGet(t, ops+"/metrics")
	for _, agent := range []string{"alpha", "beta"} {
		if !strings.Contains(body, `jetagent_deliveries_total{agent="`+agent+`",subject="jetagent.tasks.`+agent+`.task.request"} 1`) {
			t.Errorf("/metrics has no delivery of %s:\n%s", agent, body)
		}
	}

	cancel()
	stopped = true
	select {
	case code := <-runDone:
		if code != 0 {
			t.Fatalf("run exited %d: %s", code, runErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
	log := runErr.String()
	for _, agent := range []string{"alpha", "beta"} {
		if !strings.Contains(log, "msg=stopped agent="+agent+" succeeded=1") {
			t.Errorf("no graceful stop of %s in the log:\n%s", agent, log)
		}
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestExamplesInTheDocsAreValid(t *testing.T) {
	doc, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(doc), "```yaml\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("no yaml examples in docs/configuration.md")
	}
	for i, b := range blocks {
		text, _, _ := strings.Cut(b, "```")
		path := filepath.Join(t.TempDir(), "example.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, probs := loadConfig(configSources{file: path}); probs != nil {
			t.Errorf("example %d: %v\n%s", i+1, probs, text)
		}
	}
}
