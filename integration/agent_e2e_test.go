package integration

import (
	"context"
	"errors"
	"github.com/jetagent/jetagent/internal/testio"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// agentProcess is `agent run` running as a real OS process.
type agentProcess struct {
	cmd  *exec.Cmd
	logs *testio.Buffer
	done chan error
}

// startAgentProcess runs the agent binary with args and stops it (SIGTERM,
// then SIGKILL after 15s) when the test ends, logging its output on failure.
func startAgentProcess(t *testing.T, args ...string) *agentProcess {
	t.Helper()
	return startAgentProcessBin(t, buildHostBinary(t, "./cmd/agent"), args...)
}

// startAgentProcessBin runs the agent program bin with args, as
// startAgentProcess does.
func startAgentProcessBin(t *testing.T, bin string, args ...string) *agentProcess {
	t.Helper()
	p := &agentProcess{cmd: exec.Command(bin, args...), logs: &testio.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start agent: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if err := p.stop(15 * time.Second); err != nil {
			t.Errorf("agent did not stop cleanly: %v", err)
		}
		if t.Failed() {
			t.Logf("agent output:\n%s", p.logs.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a clean exit; it kills after timeout.
func (p *agentProcess) stop(timeout time.Duration) error {
	if p.cmd.ProcessState != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // in case a test froze it
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err // keep it for a second call
		return err
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return errors.New("killed after SIGTERM timeout")
	}
}

// running reports whether the process is still alive.
func (p *agentProcess) running() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// waitForConsumer polls until the agent has bound its durable consumer and
// its pull request waits at the server: from then on a published task is
// delivered to it, even if it is frozen at once. The consumer alone is not
// enough; the runtime creates it a few round trips before it first pulls.
// Every caller starts its first agent on an empty stream, where the pull
// waits until tasks come.
func waitForConsumer(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, durable string, p *agentProcess) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if c, err := js.Consumer(ctx, stream, durable); err == nil {
			if info, err := c.Info(ctx); err == nil && info.NumWaiting > 0 {
				return
			}
		}
		if !p.running() {
			t.Fatalf("agent exited before binding its consumer:\n%s", p.logs.String())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent never bound consumer %s: %v", durable, ctx.Err())
		case <-tick.C:
		}
	}
}

// TestAgentProcessSurvivesServerRestart runs `agent run --nats` as a real
// process against NATS in a container, restarts the container (JetStream
// on a volume) while tasks are queued, and checks that every task whose
// publish was acknowledged got exactly one reply, none lost.
func TestAgentProcessSurvivesServerRestart(t *testing.T) {
	srv := startNATS(t, NATSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	agent := startAgentProcess(t, "run", "--nats", srv.URL(), "--name", "echo", "--ack-wait", "3s", "--log-format", "json")
	conn, err := bus.Connect(ctx, srv.URL(), nats.IgnoreDiscoveredServers(), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	topo := bus.Topology{}
	js := conn.JetStream()
	waitForConsumer(ctx, t, js, topo.TasksStream(), "echo", agent)

	// 1. The agent answers through the client.
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Name: "e2e-client"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ask := func(payload string) {
		t.Helper()
		env, err := envelope.New("e2e", "echo", envelope.TaskRequest, payload)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		defer scancel()
		rep, err := client.Send(sctx, env)
		if err != nil {
			t.Fatalf("send %q: %v", payload, err)
		}
		var got string
		if err := rep.DecodePayload(&got); err != nil || got != payload || rep.CorrelationID != env.ID {
			t.Fatalf("reply to %q: %q (%v), correlation %s", payload, got, err, rep.CorrelationID)
		}
	}
	ask("before restart")

	// 2. Freeze the agent (SIGSTOP: it holds whatever it had pulled),
	// queue tasks (each publish acknowledged, so stored), restart the
	// server, then let the agent go on. The tasks are certainly in flight
	// or queued across the restart.
	if err := agent.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const n = 300
	replyTo := topo.ReplySubject("e2e-ledger")
	ids := make(map[string]bool, n)
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		env, err := envelope.New("e2e", "echo", envelope.TaskRequest, i)
		if err != nil {
			t.Fatal(err)
		}
		env.ReplyTo = replyTo
		ids[env.ID] = false
		if msgs[i], err = bus.EnvelopeMsg(topo.TaskSubject("echo", envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatalf("publish tasks: %v", err)
	}
	// n, or n+1 when the frozen agent had not yet acked the first task.
	if queued := streamMsgs(ctx, t, js, topo.TasksStream()); queued < n {
		t.Fatalf("%d tasks queued before the restart, want all %d", queued, n)
	}
	restartStart := time.Now()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("server restart took %v", time.Since(restartStart))
	resumed := time.Now()
	if err := agent.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !agent.running() {
		t.Fatalf("agent exited when the server went away:\n%s", agent.logs.String())
	}

	// 3. Every acknowledged task gets exactly one reply (the replies
	// stream keeps them; reply ids derive from task ids, so a redelivered
	// task's second reply is dropped as a duplicate).
	replies := readReplies(ctx, t, js, topo, replyTo, n)
	t.Logf("all %d replies stored %v after the agent resumed", n, time.Since(resumed))
	dups := 0
	for _, r := range replies {
		seen, ok := ids[r.CorrelationID]
		if !ok {
			t.Fatalf("reply to unknown task %s", r.CorrelationID)
		}
		if seen {
			dups++
		}
		ids[r.CorrelationID] = true
	}
	for id, seen := range ids {
		if !seen {
			t.Errorf("task %s lost: no reply", id)
		}
	}
	if dups != 0 {
		t.Errorf("%d duplicate replies stored", dups)
	}
	// 4. The work queue is empty and the agent still serves new work.
	waitStreamEmpty(ctx, t, js, topo.TasksStream())
	ask("after restart")
	if err := agent.stop(15 * time.Second); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v\n%s", err, agent.logs.String())
	}
}

// readReplies reads want replies from the replies stream for subject,
// waiting for them to arrive (up to ctx).
func readReplies(ctx context.Context, t *testing.T, js jetstream.JetStream, topo bus.Topology, subject string, want int) []*envelope.Envelope {
	t.Helper()
	cons, err := js.OrderedConsumer(ctx, topo.RepliesStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	var out []*envelope.Envelope
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			var env envelope.Envelope
			if err := envelope.Unmarshal(m.Data(), &env); err != nil {
				t.Fatalf("reply does not decode: %v", err)
			}
			out = append(out, &env)
		}
		if ctx.Err() != nil {
			t.Fatalf("only %d of %d replies arrived", len(out), want)
		}
	}
	// Anything beyond want is a duplicate: look once more without waiting long.
	extra, err := cons.Fetch(10, jetstream.FetchMaxWait(500*time.Millisecond))
	if err == nil {
		for m := range extra.Messages() {
			var env envelope.Envelope
			if envelope.Unmarshal(m.Data(), &env) == nil {
				out = append(out, &env)
			}
		}
	}
	return out
}

func streamMsgs(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func waitStreamEmpty(ctx context.Context, t *testing.T, js jetstream.JetStream, name string) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := js.Stream(ctx, name)
		if err == nil {
			if info, err := s.Info(ctx); err == nil && info.State.Msgs == 0 {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream %s never emptied", name)
		case <-tick.C:
		}
	}
}
