package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
)

// Isolation and liveness with real agent processes: a frozen replica, a
// rolling restart, two replicas sharing a backlog, and a subject whose
// downstream is down beside a healthy one, on one replica and on three.

// typedMsgs builds n envelopes of typ for agent.
func typedMsgs(t *testing.T, agent string, typ envelope.PayloadType, n int) ([]*nats.Msg, []string) {
	t.Helper()
	topo := bus.Topology{}
	msgs := make([]*nats.Msg, n)
	ids := make([]string, n)
	for i := range msgs {
		env, err := envelope.New("liveness", agent, typ, i)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = env.ID
		if msgs[i], err = bus.EnvelopeMsg(topo.TaskSubject(agent, typ), env); err != nil {
			t.Fatal(err)
		}
	}
	return msgs, ids
}

// ledgersCounts merges the ledgers of several processes.
func ledgersCounts(t *testing.T, paths ...string) map[string]int {
	t.Helper()
	all := map[string]int{}
	for _, p := range paths {
		for id, n := range ledgerCounts(t, p) {
			all[id] += n
		}
	}
	return all
}

// countLines counts the lines of path that start with prefix.
func countLines(t *testing.T, path, prefix string) int {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), prefix) {
			n++
		}
	}
	return n
}

func dlqEntries(ctx context.Context, t *testing.T, conn *bus.Conn) int {
	t.Helper()
	entries, err := dlq.NewStore(conn.JetStream(), bus.Topology{}).List(ctx, dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// Item 4: a replica frozen (SIGSTOP) for longer than AckWait, then thawed,
// does not run the deliveries it had buffered: the server redelivered them
// to the other replica meanwhile. Only the tasks its handlers were running
// at the freeze may run twice.
func TestFrozenReplicaRunsNoStaleDeliveries(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	dir := t.TempDir()
	const ackWait, concurrency, n = 2 * time.Second, 4, 400
	args := []string{"--ack-wait", ackWait.String(), "--concurrency", fmt.Sprint(concurrency), "--latency", "50ms"}
	la, lb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := ledgerAgent(t, srv.URL(), la, args...)
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)
	ledgerAgent(t, srv.URL(), lb, args...)
	msgs, ids := taskMsgs(t, "ledger", topo.ReplySubject("freeze"), n, nil)
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the frozen replica to be busy", func() bool { return len(ledgerCounts(t, la)) >= 20 })
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozenAt := len(ledgerCounts(t, la))
	time.Sleep(2*ackWait + time.Second) // the fault itself: frozen well beyond AckWait
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "every task", func() bool { return len(ledgersCounts(t, la, lb)) == n })
	twice := 0
	counts := ledgersCounts(t, la, lb)
	for _, id := range ids {
		if counts[id] > 1 {
			twice++
		}
	}
	t.Logf("frozen %v (AckWait %v) after %d tasks; after the thaw it ran %d more; %d tasks ran twice (at most %d were running at the freeze)",
		2*ackWait+time.Second, ackWait, frozenAt, len(ledgerCounts(t, la))-frozenAt, twice, concurrency)
	if twice > concurrency {
		t.Errorf("%d tasks ran twice after a freeze; only the %d running at the freeze may", twice, concurrency)
	}
}

// Item 5: ten rolling restarts of two replicas (SIGTERM one, start its
// successor, let it work a while, then the other: one restart every
// 1.5s) with a queued backlog and MaxDeliver 3: no task is dead-lettered,
// each runs once.
func TestRollingRestartsDeadLetterNothingAndRunEachTaskOnce(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	dir := t.TempDir()
	const n, restarts, pace = 6000, 10, 1500 * time.Millisecond
	args := []string{"--max-deliver", "3", "--ack-wait", "1s", "--concurrency", "4", "--latency", "20ms"}
	var ledgers []string
	start := func() *agentProcess {
		l := filepath.Join(dir, fmt.Sprint("ledger-", len(ledgers)))
		ledgers = append(ledgers, l)
		return ledgerAgent(t, srv.URL(), l, args...)
	}
	replicas := [2]*agentProcess{start(), start()}
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", replicas[0])
	msgs, ids := taskMsgs(t, "ledger", topo.ReplySubject("rolling"), n, nil)
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	for i := range restarts {
		if left := n - len(ledgersCounts(t, ledgers...)); left < 100 {
			t.Fatalf("restart %d: only %d tasks left; the backlog should outlast the restarts", i, left)
		}
		old := replicas[i%2]
		if err := old.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-old.done:
			old.done <- err
			if err != nil {
				t.Fatalf("restart %d: the stopped replica exited with %v", i, err)
			}
		case <-ctx.Done():
			t.Fatalf("restart %d: the replica did not stop", i)
		}
		started := time.Now()
		replicas[i%2] = start()
		fresh := ledgers[len(ledgers)-1]
		pollUntil(ctx, t, "the new replica to work", func() bool { return len(ledgerCounts(t, fresh)) > 0 })
		time.Sleep(time.Until(started.Add(pace))) // the operator's pace, not a synchronisation
	}
	pollUntil(ctx, t, "every task", func() bool { return len(ledgersCounts(t, ledgers...))+dlqEntries(ctx, t, conn) >= n })
	counts := ledgersCounts(t, ledgers...)
	wrong := 0
	for _, id := range ids {
		if counts[id] != 1 {
			wrong++
		}
	}
	dead := dlqEntries(ctx, t, conn)
	t.Logf("%d rolling restarts of 2 replicas over %d tasks: %d dead letters, %d tasks not run exactly once", restarts, n, dead, wrong)
	if dead != 0 || wrong != 0 {
		t.Errorf("%d dead letters and %d tasks not run exactly once; want 0 and 0", dead, wrong)
	}
}

// Item 3: two replicas of concurrency 1 and prefetch 10 split a backlog
// of 100 tasks no worse than 60/40.
func TestTwoReplicaProcessesShareABacklog(t *testing.T) {
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	dir := t.TempDir()
	const n = 100
	args := []string{"--concurrency", "1", "--prefetch", "10", "--latency", "20ms"}
	la, lb := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := ledgerAgent(t, srv.URL(), la, args...)
	waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", a)
	msgs, _ := taskMsgs(t, "ledger", "", n, nil)
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the first replica to work", func() bool { return len(ledgerCounts(t, la)) > 0 })
	ledgerAgent(t, srv.URL(), lb, args...)
	pollUntil(ctx, t, "every task", func() bool { return len(ledgersCounts(t, la, lb)) == n })
	na, nb := len(ledgerCounts(t, la)), len(ledgerCounts(t, lb))
	t.Logf("two replicas (concurrency 1, prefetch 10) split %d tasks %d/%d", n, na, nb)
	if min(na, nb) < 40 {
		t.Errorf("split %d/%d, worse than 60/40", na, nb)
	}
}

// Item 1: an agent with two subjects, one of whose downstream is down (its
// breaker opens) beside a backlog of 1500 of its tasks, more than
// MaxAckPending: the healthy subject keeps at least 80% of the throughput
// it has alone, on one replica and across three.
func TestHealthySubjectKeepsItsThroughputWhileAnotherBreakerIsOpen(t *testing.T) {
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprint(replicas, " replicas"), func(t *testing.T) {
			srv, conn := containerServer(t)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			topo, js := bus.Topology{}, conn.JetStream()
			dir := t.TempDir()
			events := filepath.Join(dir, "events")
			healthy := 300 * replicas
			args := []string{"--types", string(envelope.MessageSend), "--down-types", string(envelope.TaskRequest),
				"--breaker-threshold", "5", "--breaker-open", "1m", "--events", events,
				"--concurrency", "4", "--latency", "20ms"}
			var ledgers []string
			for i := range replicas {
				l := filepath.Join(dir, fmt.Sprint("ledger-", i))
				ledgers = append(ledgers, l)
				p := ledgerAgent(t, srv.URL(), l, args...)
				if i == 0 {
					waitForConsumer(ctx, t, js, topo.TasksStream(), "ledger", p)
				}
			}
			pub := bus.NewPublisher(js)
			run := func(what string, done int) time.Duration {
				msgs, _ := typedMsgs(t, "ledger", envelope.MessageSend, healthy)
				start := time.Now()
				if _, err := pub.PublishBatch(ctx, msgs); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(30 * time.Second)
				for len(ledgersCounts(t, ledgers...)) < done {
					if time.Now().After(deadline) {
						t.Logf("%s: only %d of %d healthy tasks done after 30s", what, len(ledgersCounts(t, ledgers...))-done+healthy, healthy)
						return 30 * time.Second
					}
					time.Sleep(20 * time.Millisecond) // polling the ledgers
				}
				return time.Since(start)
			}
			alone := run("alone", healthy)
			broken, _ := typedMsgs(t, "ledger", envelope.TaskRequest, 1500)
			if _, err := pub.PublishBatch(ctx, broken); err != nil {
				t.Fatal(err)
			}
			pollUntil(ctx, t, "every replica's breaker to open", func() bool {
				return countLines(t, events, "open "+topo.TaskSubject("ledger", envelope.TaskRequest)) >= replicas
			})
			open := run("beside an open breaker", 2*healthy)
			ratio := alone.Seconds() / open.Seconds()
			t.Logf("%d replicas: %d healthy tasks in %v alone, in %v beside an open breaker with 1500 of its tasks queued: %.2f of the throughput",
				replicas, healthy, alone.Round(time.Millisecond), open.Round(time.Millisecond), ratio)
			if ratio < 0.8 {
				t.Errorf("the healthy subject kept %.2f of its throughput, want at least 0.80", ratio)
			}
			if dead := dlqEntries(ctx, t, conn); dead != 0 {
				t.Errorf("%d tasks dead-lettered; an open breaker dead-letters nothing", dead)
			}
		})
	}
}
