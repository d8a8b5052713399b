package integration

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// The seed's chaos table and what a message system must survive, against
// NATS in a container and agents as real processes. Each test asserts the
// exact outcome and logs the figures the issue asks for.

func ledgerAgent(t *testing.T, url, ledger string, args ...string) *agentProcess {
	t.Helper()
	bin := buildHostBinary(t, "./integration/testdata/ledgeragent")
	return startAgentProcessBin(t, bin, append([]string{"--nats", url, "--ledger", ledger}, args...)...)
}

// Message loss: an agent dies holding messages (frozen, then SIGKILL). The
// server redelivers them after AckWait; the next agent processes each once.
func TestChaosAgentDiesHoldingMessages(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	ledger := filepath.Join(t.TempDir(), "ledger")
	const ackWait = 2 * time.Second
	// A pull request that outlives the freeze: the frozen agent cannot
	// renew one that expires before the tasks arrive.
	a := ledgerAgent(t, srv.URL(), ledger, "--ack-wait", ackWait.String(), "--pull-expiry", "1m")
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	const n = 200
	replyTo := topo.ReplySubject("loss")
	msgs, ids := taskMsgs(t, "ledger", replyTo, n, nil)
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, topo.TasksStream(), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the frozen agent to hold every task", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == n
	})
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	lost := time.Now()
	<-a.done
	ledgerAgent(t, srv.URL(), ledger, "--ack-wait", ackWait.String())
	replies := readReplies(ctx, t, js, topo, replyTo, n)
	done := time.Since(lost)
	counts := ledgerCounts(t, ledger)
	for _, id := range ids {
		if counts[id] != 1 {
			t.Errorf("task %s processed %d times", id, counts[id])
		}
	}
	if len(replies) != n {
		t.Errorf("%d replies, want %d", len(replies), n)
	}
	t.Logf("agent died holding %d tasks: all answered %v later (AckWait %v), each processed once", n, done.Round(time.Millisecond), ackWait)
	if done < ackWait {
		t.Errorf("redelivered after %v, before AckWait %v?", done, ackWait)
	}
}

// Server crash: the container is killed mid-run and started again on its
// volume. Publishers and agents reconnect and resume; no acknowledged task
// is lost.
func TestChaosServerCrashLosesNoAcknowledgedTask(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	ledger := filepath.Join(t.TempDir(), "ledger")
	a := ledgerAgent(t, srv.URL(), ledger)
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)

	const n = 2000
	replyTo := topo.ReplySubject("crash")
	msgs, _ := taskMsgs(t, "ledger", replyTo, n, nil)
	pub := bus.NewPublisher(js)
	acked := make([]bool, n)
	var mu sync.Mutex
	var firstAfter time.Time
	restarted := make(chan time.Time, 1)
	go func() { // the publisher: ~400/s, retrying each task until acknowledged
		var restartAt time.Time
		for i, m := range msgs {
			for {
				pctx, pcancel := context.WithTimeout(ctx, time.Second)
				_, err := pub.PublishMsg(pctx, m)
				pcancel()
				if err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
			}
			select {
			case restartAt = <-restarted:
			default:
			}
			mu.Lock()
			acked[i] = true
			if !restartAt.IsZero() && firstAfter.IsZero() {
				firstAfter = time.Now()
			}
			mu.Unlock()
			time.Sleep(2500 * time.Microsecond) // pacing the load, not synchronising
		}
	}()
	pollUntil(ctx, t, "a third of the tasks published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return acked[n/3]
	})
	killed := time.Now()
	if err := srv.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	restarted <- up
	pollUntil(ctx, t, "every task published", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return acked[n-1]
	})
	replies := readReplies(ctx, t, js, topo, replyTo, n)
	got := map[string]int{}
	for _, r := range replies {
		got[r.CorrelationID]++
	}
	counts := ledgerCounts(t, ledger)
	twice := 0
	for i, m := range msgs {
		id := m.Header.Get(bus.HeaderMsgID)
		if got[id] != 1 {
			t.Errorf("task %d: %d replies", i, got[id])
		}
		if counts[id] > 1 {
			twice++
		}
	}
	mu.Lock()
	recovery, outage := firstAfter.Sub(up), firstAfter.Sub(killed)
	mu.Unlock()
	t.Logf("server killed and restarted: ready %v after the kill, first publish acknowledged %v after it was ready (%v of outage in all); %d tasks, 0 lost, %d processed twice (acks lost with the crash)",
		up.Sub(killed).Round(time.Millisecond), recovery.Round(time.Millisecond), outage.Round(time.Millisecond), n, twice)
	if !a.running() {
		t.Fatal("the agent did not survive the server crash")
	}
}

// Network partition (the server's container paused): sends time out and
// are retried, the client's breaker opens after the threshold, and closes
// again through one probe once the partition heals.
func TestChaosPartitionOpensAndClosesTheClientBreaker(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	a := ledgerAgent(t, srv.URL(), filepath.Join(t.TempDir(), "ledger"))
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Retry: &runtime.RetryConfig{
		MaxRetries: 1, Backoff: resilience.Backoff{Base: 10 * time.Millisecond}, AttemptTimeout: 400 * time.Millisecond,
		Breaker: &resilience.BreakerSettings{Threshold: 3, OpenTimeout: 2 * time.Second},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	br := client.Breakers().Get(topo.TaskSubject("ledger", envelope.TaskRequest))
	send := func() error {
		env, _ := envelope.New("chaos", "ledger", envelope.TaskRequest, "ping")
		_, err := client.Send(ctx, env)
		return err
	}
	attempts := func() uint64 { return client.Stats().Attempts }
	if err := send(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	if err := send(); !errors.Is(err, resilience.ErrTimeout) || attempts() != 3 {
		t.Fatalf("send 1 in the partition: %v after %d attempts, want a timeout after 2", err, attempts()-1)
	}
	if err := send(); !errors.Is(err, resilience.ErrCircuitOpen) || attempts() != 4 || br.State() != resilience.StateOpen {
		t.Fatalf("send 2: %v, %d attempts, breaker %v: want the breaker open after the third failure", err, attempts(), br.State())
	}
	if err := send(); !errors.Is(err, resilience.ErrCircuitOpen) || attempts() != 4 {
		t.Fatalf("send 3: %v after %d attempts: want an immediate circuit-open error", err, attempts())
	}
	detected := time.Since(paused)
	if err := srv.Unpause(ctx); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	pollUntil(ctx, t, "the breaker to half-open", func() bool { return br.State() == resilience.StateHalfOpen })
	if err := send(); err != nil || br.State() != resilience.StateClosed || attempts() != 5 {
		t.Fatalf("probe: %v, breaker %v after %d attempts", err, br.State(), attempts())
	}
	t.Logf("partition: breaker open %v after it began; closed through one probe %v after it healed", detected.Round(time.Millisecond), time.Since(healed).Round(time.Millisecond))
}

// Transient failure storm: half of all attempts fail; every task is
// redelivered with backoff until it succeeds, and is processed once.
func TestChaosTransientFailureStorm(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	ledger := filepath.Join(t.TempDir(), "ledger")
	a := ledgerAgent(t, srv.URL(), ledger, "--fail-rate", "0.5", "--max-deliver", "20")
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)
	const n = 300
	replyTo := topo.ReplySubject("storm")
	msgs, ids := taskMsgs(t, "ledger", replyTo, n, nil)
	start := time.Now()
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	readReplies(ctx, t, js, topo, replyTo, n)
	counts := ledgerCounts(t, ledger)
	for _, id := range ids {
		if counts[id] != 1 {
			t.Errorf("task %s processed %d times", id, counts[id])
		}
	}
	cons, _ := js.Consumer(ctx, topo.TasksStream(), "ledger")
	info, _ := cons.Info(ctx)
	t.Logf("storm: %d tasks at a 50%% failure rate all answered in %v, after %d deliveries in all", n, time.Since(start).Round(time.Millisecond), info.Delivered.Consumer)
	if info.Delivered.Consumer <= n {
		t.Errorf("%d deliveries for %d tasks: nothing was retried?", info.Delivered.Consumer, n)
	}
	if got := streamCount(ctx, t, js, topo.DLQStream(), topo.AgentDLQ("ledger")); got != 0 {
		t.Errorf("%d tasks dead-lettered in a transient storm", got)
	}
}

// Clock skew: envelopes whose timestamp is outside the agent's window of
// the server's receive time are dead-lettered with that reason; those
// inside are processed.
func TestChaosClockSkew(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	ledger := filepath.Join(t.TempDir(), "ledger")
	a := ledgerAgent(t, srv.URL(), ledger, "--max-clock-skew", "3s")
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)
	offsets := []time.Duration{-30 * time.Second, -5 * time.Second, 5 * time.Second, 30 * time.Second, // outside
		-time.Second, 0, time.Second} // inside
	replyTo := topo.ReplySubject("skew")
	msgs, ids := taskMsgs(t, "ledger", replyTo, len(offsets), func(i int, e *envelope.Envelope) {
		e.Timestamp = time.Now().Add(offsets[i]).UTC()
	})
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	replies := readReplies(ctx, t, js, topo, replyTo, 3)
	store := dlq.NewStore(js, topo)
	var entries []*dlq.Entry
	pollUntil(ctx, t, "4 dead letters", func() bool {
		entries, _ = store.List(ctx, dlq.Filter{Agent: "ledger"})
		return len(entries) >= 4
	})
	bad := map[string]bool{ids[0]: true, ids[1]: true, ids[2]: true, ids[3]: true}
	for _, e := range entries {
		var env envelope.Envelope
		if err := envelope.Unmarshal(e.Data, &env); err != nil || !bad[env.ID] || e.Reason != dlq.ReasonBadTimestamp {
			t.Errorf("dead letter %s (%v): reason %s", env.ID, err, e.Reason)
		}
	}
	for _, r := range replies {
		if bad[r.CorrelationID] {
			t.Errorf("skewed task %s was processed", r.CorrelationID)
		}
	}
	if len(entries) != 4 || len(replies) != 3 {
		t.Fatalf("%d dead letters and %d replies, want 4 and 3", len(entries), len(replies))
	}
}
