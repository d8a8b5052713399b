package integration

import (
	"context"
	"errors"
	"fmt"
	"github.com/jetagent/jetagent/internal/testio"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
)

// supervisor restarts a program whenever it exits, like systemd would,
// until stopped; it counts the exits and keeps the output.
type supervisor struct {
	bin  string
	args []string
	logs testio.Buffer

	mu    sync.Mutex
	cmd   *exec.Cmd
	exits []int
	stop  chan struct{}
	done  chan struct{}
}

func supervise(t *testing.T, bin string, args ...string) *supervisor {
	s := &supervisor{bin: bin, args: args, stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	t.Cleanup(func() {
		s.shutdown()
		if t.Failed() {
			t.Logf("supervised output:\n%s", s.logs.String())
		}
	})
	return s
}

func (s *supervisor) loop() {
	defer close(s.done)
	for {
		cmd := exec.Command(s.bin, s.args...)
		cmd.Stdout, cmd.Stderr = &s.logs, &s.logs
		if err := cmd.Start(); err != nil {
			fmt.Fprintf(&s.logs, "supervisor: %v\n", err)
			return
		}
		s.mu.Lock()
		s.cmd = cmd
		s.mu.Unlock()
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		s.mu.Lock()
		s.exits = append(s.exits, code)
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		default: // restart at once
		}
	}
}

func (s *supervisor) crashes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.exits {
		if c == 3 {
			n++
		}
	}
	return n
}

func (s *supervisor) shutdown() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	s.mu.Lock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
	s.mu.Unlock()
	<-s.done
}

// TestPoisonMessageThatKillsItsAgentEndsInTheDLQ runs a real agent process
// whose handler kills the process on one specific task, restarted each
// time like a service manager would. The poison task never reaches a
// disposition; after MaxDeliver crashes the server stops delivering it,
// and the sweeper dead-letters it. Every other task is answered.
func TestPoisonMessageThatKillsItsAgentEndsInTheDLQ(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo := bus.Topology{}
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	const n, poisonAt, maxDeliver = 40, 12, 3
	replyTo := topo.ReplySubject("ledger")
	msgs := make([]*nats.Msg, n)
	ids := make(map[string]int, n)
	for i := range msgs {
		payload := fmt.Sprint("task ", i)
		if i == poisonAt {
			payload = "poison"
		}
		env, err := envelope.New("test", "worker", envelope.TaskRequest, payload)
		if err != nil {
			t.Fatal(err)
		}
		env.ReplyTo = replyTo
		ids[env.ID] = i
		if msgs[i], err = bus.EnvelopeMsg(topo.TaskSubject("worker", envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bus.NewPublisher(conn.JetStream()).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	bin := buildHostBinary(t, "./integration/testdata/poisonagent")
	sup := supervise(t, bin, "--nats", srv.URL(), "--ack-wait", "1s", "--max-deliver", fmt.Sprint(maxDeliver))

	store := dlq.NewStore(conn.JetStream(), topo)
	var entries []*dlq.Entry
	for len(entries) == 0 {
		var err error
		if entries, err = store.List(ctx, dlq.Filter{}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the poison task never reached the DLQ (%d crashes)", sup.crashes())
		case <-time.After(100 * time.Millisecond): // polling the server
		}
	}
	e := entries[0]
	var env envelope.Envelope
	if err := envelope.Unmarshal(e.Data, &env); err != nil || ids[env.ID] != poisonAt {
		t.Fatalf("dead letter is not the poison task: %v %+v", err, e.Record)
	}
	if e.Reason != dlq.ReasonMaxDeliveries || e.Deliveries != maxDeliver {
		t.Fatalf("dead letter reason %s after %d deliveries", e.Reason, e.Deliveries)
	}
	replies := readReplies(ctx, t, conn.JetStream(), topo, replyTo, n-1)
	got := map[int]bool{}
	for _, r := range replies {
		i, ok := ids[r.CorrelationID]
		if !ok || i == poisonAt || got[i] {
			t.Fatalf("unexpected reply to task %d (known %v, duplicate %v)", i, ok, got[i])
		}
		got[i] = true
	}
	if len(got) != n-1 {
		t.Fatalf("%d tasks answered, want %d", len(got), n-1)
	}
	if c := sup.crashes(); c != maxDeliver {
		t.Errorf("the agent crashed %d times, want MaxDeliver = %d", c, maxDeliver)
	}
	if all, _ := store.List(ctx, dlq.Filter{}); len(all) != 1 {
		t.Errorf("%d dead letters, want only the poison task", len(all))
	}
}
