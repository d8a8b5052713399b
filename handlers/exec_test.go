package handlers_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/vmihailenco/msgpack/v5"
)

// task returns a delivery of a task.request for agent "sidecar".
func task(t *testing.T, payload any) *runtime.Task {
	t.Helper()
	env, err := envelope.New("tester", "sidecar", envelope.TaskRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	return &runtime.Task{Envelope: env, Attempt: 1}
}

// payloadJSON renders a handler result (a reply payload) as JSON.
func payloadJSON(t *testing.T, result any) string {
	t.Helper()
	if result == nil {
		return "<none>"
	}
	raw, ok := result.(msgpack.RawMessage)
	if !ok {
		t.Fatalf("result is %T, want msgpack.RawMessage", result)
	}
	b, err := envelope.PayloadJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func execHandler(t *testing.T, cfg handlers.ExecConfig) runtime.Handler {
	t.Helper()
	if cfg.Env == nil {
		cfg.Env = childVars
	}
	h, err := handlers.Exec(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestExecRequiresACommand(t *testing.T) {
	for _, cmd := range [][]string{nil, {}, {""}} {
		if _, err := handlers.Exec(handlers.ExecConfig{Command: cmd}); !errors.Is(err, handlers.ErrNoCommand) {
			t.Errorf("Exec(%q) error = %v, want ErrNoCommand", cmd, err)
		}
	}
}

func TestExecSuccessRepliesWithStdoutAsPayload(t *testing.T) {
	t.Setenv("JETAGENT_SECRET", "must not leak")
	h := execHandler(t, handlers.ExecConfig{
		Command: childCommand("reply"),
		Env:     map[string]string{childEnv: "1", "GORACE": "atexit_sleep_ms=0", "EXTRA": "x"},
	})
	tk := task(t, map[string]any{"n": 1, "s": "é"})
	tk.Attempt = 2
	tk.Header = map[string][]string{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	res, err := h(testkit.ContextFor(t, 10*time.Second), tk)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Got     map[string]any    `json:"got"`
		ID      string            `json:"id"`
		Attempt int               `json:"attempt"`
		Env     map[string]string `json:"env"`
	}
	if err := json.Unmarshal([]byte(payloadJSON(t, res)), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != tk.Envelope.ID || got.Got["s"] != "é" || got.Got["n"] != 1.0 || got.Attempt != 2 {
		t.Errorf("child saw %+v", got)
	}
	if got.Env["JETAGENT_AGENT"] != "sidecar" || got.Env["JETAGENT_ENVELOPE_ID"] != tk.Envelope.ID || got.Env["EXTRA"] != "x" {
		t.Errorf("child environment %v", got.Env)
	}
	if _, err := time.Parse(time.RFC3339Nano, got.Env["JETAGENT_DEADLINE"]); err != nil {
		t.Errorf("JETAGENT_DEADLINE: %v", err)
	}
	if got.Env["TRACEPARENT"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" {
		t.Errorf("TRACEPARENT %q, want the task's", got.Env["TRACEPARENT"])
	}
	if _, leaked := got.Env["JETAGENT_SECRET"]; leaked {
		t.Error("the agent's JETAGENT_* variables reached the program")
	}
}

func TestExecOutcomes(t *testing.T) {
	cases := []struct {
		name    string
		cmd     []string
		kind    resilience.Kind
		errHas  string
		payload string
	}{
		{name: "exit 75 is transient", cmd: childCommand("exit", "75"), kind: resilience.KindTransient, errHas: "exit status 75 (EX_TEMPFAIL): stderr: failing with 75"},
		{name: "exit 3 is permanent", cmd: childCommand("exit", "3"), kind: resilience.KindPermanent, errHas: "exit status 3: stderr: failing with 3"},
		{name: "exit 1 is permanent", cmd: childCommand("exit", "1"), kind: resilience.KindPermanent, errHas: "exit status 1"},
		{name: "SIGKILL is permanent", cmd: childCommand("kill9"), kind: resilience.KindPermanent, errHas: "killed by SIGKILL"},
		{name: "SIGSEGV is permanent", cmd: []string{"/bin/sh", "-c", "kill -SEGV $$"}, kind: resilience.KindPermanent, errHas: "killed by SIGSEGV"},
		{name: "garbage stdout is permanent", cmd: childCommand("garbage"), kind: resilience.KindPermanent, errHas: `answer is not one JSON value: exec ` + os.Args[0] + `: stdout: invalid character 'h' looking for beginning of value (starts with "hello, I am not JSON")`},
		{name: "a program that cannot start is transient", cmd: []string{"/no/such/program"}, kind: resilience.KindTransient, errHas: "cannot start"},
		{name: "a program that reads no stdin succeeds", cmd: childCommand("no-stdin"), kind: resilience.KindNone, payload: `{"ok":true}`},
		{name: "empty stdout is no payload", cmd: []string{"/bin/sh", "-c", "cat >/dev/null; echo"}, kind: resilience.KindNone, payload: "<none>"},
		{name: "null is no payload", cmd: []string{"/bin/sh", "-c", "echo null"}, kind: resilience.KindNone, payload: "<none>"},
		{name: "a scalar is a payload", cmd: []string{"/bin/sh", "-c", "echo 42"}, kind: resilience.KindNone, payload: "42"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := execHandler(t, handlers.ExecConfig{Command: c.cmd})
			// a payload larger than a pipe buffer: the program reading
			// none of it must not block anything
			res, err := h(testkit.ContextFor(t, 10*time.Second), task(t, strings.Repeat("x", 200<<10)))
			if k := resilience.Classify(err); k != c.kind {
				t.Fatalf("kind %v, want %v (err %v)", k, c.kind, err)
			}
			if c.errHas != "" && !strings.Contains(fmt.Sprint(err), c.errHas) {
				t.Errorf("error %q does not contain %q", err, c.errHas)
			}
			if c.kind == resilience.KindNone && payloadJSON(t, res) != c.payload {
				t.Errorf("payload %s, want %s", payloadJSON(t, res), c.payload)
			}
			var ee *handlers.ExitError
			if strings.Contains(c.errHas, "exit status 3") && (!errors.As(err, &ee) || ee.Code != 3) {
				t.Errorf("error %v is not an ExitError with code 3", err)
			}
		})
	}
}

// alive reports whether pid is a live process (a zombie is dead).
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// "pid (comm) S ...": the state follows the last ')'
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func readPids(t *testing.T, file string) []int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, p)
	}
	return pids
}

// waitFile waits (up to 20s) until file exists.
func waitFile(file string) {
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) { // polling the file system
		if _, err := os.Stat(file); err == nil {
			return
		}
	}
}

func waitDead(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still alive", pid)
			}
			time.Sleep(10 * time.Millisecond) // polling the kernel's process table
		}
	}
}

func TestExecDeadlineKillsTheProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	h := execHandler(t, handlers.ExecConfig{Command: childCommand("hang", pidFile)})
	const timeout = 2 * time.Second // time enough for the program to start its child
	start := time.Now()
	_, err := h(testkit.ContextFor(t, timeout), task(t, nil))
	took := time.Since(start)
	if k := resilience.Classify(err); k != resilience.KindTimeout || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("kind %v, err %v; want a timeout", k, err)
	}
	if took > timeout+2*time.Second {
		t.Errorf("returned %v after the deadline", took-timeout)
	}
	pids := readPids(t, pidFile)
	if len(pids) != 2 {
		t.Fatalf("pids %v", pids)
	}
	waitDead(t, pids) // the program and its child
}

func TestExecKillsWhatTheProgramLeftBehind(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	h := execHandler(t, handlers.ExecConfig{Command: childCommand("leave-behind", pidFile)})
	start := time.Now()
	res, err := h(testkit.ContextFor(t, 20*time.Second), task(t, "x"))
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v: waited for the grandchild holding stdout", took)
	}
	if !strings.Contains(payloadJSON(t, res), `"got":"x"`) {
		t.Errorf("payload %s", payloadJSON(t, res))
	}
	waitDead(t, readPids(t, pidFile))
}

func TestExecShutdownCancellationIsNotATimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	h := execHandler(t, handlers.ExecConfig{Command: childCommand("hang", pidFile)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the runtime stops once the program and its child run
		waitFile(pidFile)
		cancel()
	}()
	_, err := h(ctx, task(t, nil))
	if !errors.Is(err, context.Canceled) || errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	waitDead(t, readPids(t, pidFile))
}

func TestExecStdoutIsCapped(t *testing.T) {
	h := execHandler(t, handlers.ExecConfig{Command: childCommand("flood-stdout", strconv.Itoa(64<<20)), MaxOutput: 4096})
	start := time.Now()
	_, err := h(testkit.ContextFor(t, 20*time.Second), task(t, nil))
	if !errors.Is(err, handlers.ErrAnswerTooLarge) || resilience.Classify(err) != resilience.KindPermanent {
		t.Fatalf("err %v, want a permanent ErrAnswerTooLarge", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v: the program was not killed on overflow", took)
	}
}

func TestExecStderrIsLoggedAndCapped(t *testing.T) {
	var logs testio.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	const maxStderr = 8 << 10
	h := execHandler(t, handlers.ExecConfig{Command: childCommand("flood-stderr", strconv.Itoa(1<<20)), MaxStderr: maxStderr, Logger: logger})
	tk := task(t, nil)
	if _, err := h(testkit.ContextFor(t, 20*time.Second), tk); err != nil {
		t.Fatal(err)
	}
	var lines, logged int
	var truncated map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatal(err)
		}
		if rec["agent"] != "sidecar" || rec["envelope_id"] != tk.Envelope.ID {
			t.Fatalf("log record without agent and envelope id: %s", l)
		}
		switch rec["msg"] {
		case "exec stderr":
			lines++
			logged += len(rec["line"].(string)) + 1
		case "exec stderr truncated":
			truncated = rec
		}
	}
	if logged > maxStderr || lines < maxStderr/100-1 {
		t.Errorf("logged %d lines, %d bytes; cap %d", lines, logged, maxStderr)
	}
	if truncated == nil || truncated["dropped_bytes"].(float64) < (1<<20)-maxStderr {
		t.Errorf("truncation record %v", truncated)
	}
	if len(logs.String()) > 4*maxStderr {
		t.Errorf("%d bytes of logs for a cap of %d", len(logs.String()), maxStderr)
	}
}

func TestExecEnvironmentAndDir(t *testing.T) {
	dir := t.TempDir()
	h := execHandler(t, handlers.ExecConfig{
		Command: []string{"/bin/sh", "-c", `cat >/dev/null; printf '{"dir":"%s","v":"%s"}' "$(pwd)" "$V"`},
		Env:     map[string]string{"V": "set"},
		Dir:     dir,
	})
	res, err := h(testkit.ContextFor(t, 10*time.Second), task(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(dir)
	if want := `{"dir":"` + real + `","v":"set"}`; payloadJSON(t, res) != want {
		t.Errorf("payload %s, want %s", payloadJSON(t, res), want)
	}
}
