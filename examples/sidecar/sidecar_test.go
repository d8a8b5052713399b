// Package sidecar_test runs the sidecar example end to end: `agent run
// --config agents.yaml` on an embedded server, a Python agent and a shell
// agent answering tasks through the exec handler.
package sidecar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/agentcli"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/runtime"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// needPython skips without python3, except in CI, where it must be there.
func needPython(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("python3 is required in CI for the sidecar example: install it (Debian: apt-get install python3)")
		}
		t.Skip("python3 not found in PATH: the sidecar example needs it (Debian: apt-get install python3)")
	}
}

func TestConfigIsValid(t *testing.T) {
	var out, errb bytes.Buffer
	code := agentcli.Main(context.Background(), []string{"run", "--config", "agents.yaml", "--concurrency", "0"}, &out, &errb)
	// the file itself is valid: only the flag is refused (a usage error)
	if code != 2 || !strings.Contains(errb.String(), "--concurrency") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

// The example runs its programs with an environment allow-list, so that
// the agent's own credentials never reach them (handler.env_inherit).
func TestExampleProgramsInheritAnAllowList(t *testing.T) {
	data, err := os.ReadFile("agents.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Agents []struct {
			Name    string
			Handler map[string]any
		}
	}
	if err := yaml.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	for _, a := range file.Agents {
		if a.Handler["kind"] != "exec" {
			continue
		}
		list, ok := a.Handler["env_inherit"].([]any)
		if !ok || len(list) == 0 {
			t.Errorf("agent %s: exec handler without an env_inherit allow-list", a.Name)
		}
		for _, v := range list {
			if s, _ := v.(string); strings.Contains(s, "AWS") || strings.Contains(s, "OTEL") || s == "*" {
				t.Errorf("agent %s: env_inherit lets %q through", a.Name, s)
			}
		}
	}
}

func TestSidecarAgentsAnswerThroughTheRuntime(t *testing.T) {
	needPython(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	// As the README says, plus a port and a directory of the test's own
	// (flags win over the file).
	ctx, cancel := context.WithCancel(context.Background())
	var logs testio.Buffer
	done := make(chan int, 1)
	go func() {
		done <- agentcli.Main(ctx, []string{"run", "--config", "agents.yaml", "--listen", addr, "--data-dir", t.TempDir()}, &bytes.Buffer{}, &logs)
	}()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "ready;") {
		select {
		case code := <-done:
			stopped = true
			t.Fatalf("agent run exited %d: %s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents never became ready: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond) // polling the agent's log
	}

	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	conn, err := bus.Connect(cctx, "nats://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client, err := runtime.NewClient(conn, runtime.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ask := func(agent, payload string) map[string]any {
		t.Helper()
		env, err := envelope.New(client.Name(), agent, envelope.TaskRequest, nil)
		if err != nil {
			t.Fatal(err)
		}
		if env.Payload, err = envelope.PayloadFromJSON([]byte(payload)); err != nil {
			t.Fatal(err)
		}
		reply, err := client.Send(cctx, env)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", agent, payload, err, logs.String())
		}
		b, _ := envelope.PayloadJSON(reply.Payload)
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s answered %s: %v", agent, b, err)
		}
		return got
	}

	got := ask("wordcount", `{"text": "hello sidecar world"}`)
	if got["words"] != 3.0 || got["upper"] != "HELLO SIDECAR WORLD" || got["attempt"] != 1.0 {
		t.Errorf("wordcount answered %v", got)
	}
	// exit 75 on deliveries 1 and 2: redelivered with backoff, answered on 3
	if got := ask("wordcount", `{"text": "patience", "busy_until": 3}`); got["attempt"] != 3.0 {
		t.Errorf("busy_until 3: answered %v", got)
	}
	if got := ask("shell", `"hi"`); got["agent"] != "shell" || got["attempt"] != 1.0 || got["envelope_length"].(float64) < 100 {
		t.Errorf("shell answered %v", got)
	}

	// a task the program refuses (exit 2) is dead-lettered at once
	bad, err := envelope.New("tester", "wordcount", envelope.TaskRequest, map[string]any{"no_text": true})
	if err != nil {
		t.Fatal(err)
	}
	topo := bus.Topology{}
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(cctx, topo.TaskSubject("wordcount", envelope.TaskRequest), bad); err != nil {
		t.Fatal(err)
	}
	store := dlq.NewStore(conn.JetStream(), topo)
	var entries []*dlq.Entry
	for len(entries) == 0 {
		if entries, err = store.List(cctx, dlq.Filter{Agent: "wordcount"}); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatal("the bad task was not dead-lettered")
		}
		time.Sleep(20 * time.Millisecond) // polling the DLQ stream
	}
	if e := entries[0]; e.Reason != dlq.ReasonPermanent || e.Deliveries != 1 || !strings.Contains(e.Error, `exit status 2: stderr: payload needs a "text" string`) {
		t.Errorf("dead letter: reason %s, deliveries %d, error %q", e.Reason, e.Deliveries, e.Error)
	}
	if !strings.Contains(logs.String(), `msg="exec stderr" agent=wordcount envelope_id=`+bad.ID) {
		t.Errorf("the program's stderr is not in the log:\n%s", logs.String())
	}

	cancel()
	stopped = true
	if code := <-done; code != 0 {
		t.Fatalf("agent run exited %d: %s", code, logs.String())
	}
	for _, agent := range []string{"wordcount", "shell"} {
		if !strings.Contains(logs.String(), "msg=stopped agent="+agent) {
			t.Errorf("%s did not stop gracefully:\n%s", agent, logs.String())
		}
	}
}
