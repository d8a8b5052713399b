package integration

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
)

// kill SIGKILLs the supervised process; the supervisor starts it again.
func (s *supervisor) kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGKILL)
	}
}

// TestSoakLedger pushes 50,000 envelopes through two agent replicas with
// 10% transient and 1% permanent failures while the replicas are killed
// (SIGKILL) several times, then checks the ledger: every envelope ends in
// exactly one of {answered, DLQ}, none is lost, and the side effects run
// twice are counted. Then, as after a fix is deployed, the DLQ is replayed
// with cmd/replay and those envelopes are answered too.
func TestSoakLedger(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	srv, conn := containerServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	topo, js := bus.Topology{}, conn.JetStream()
	ledger := filepath.Join(t.TempDir(), "ledger")
	bin := buildHostBinary(t, "./integration/testdata/ledgeragent")
	args := []string{"--nats", srv.URL(), "--ledger", ledger, "--name", "soak", "--fail-rate", "0.1",
		"--permanent-rate", "0.01", "--permanent-unless-replay", "--ack-wait", "2s", "--concurrency", "8"}
	replicas := []*supervisor{supervise(t, bin, args...), supervise(t, bin, args...)}

	const n = 50000
	replyTo := topo.ReplySubject("soak")
	msgs, ids := taskMsgs(t, "soak", replyTo, n, nil)
	start := time.Now()
	pub := bus.NewPublisher(js)
	killed := 0
	for i := 0; i < n; i += 5000 {
		if _, err := pub.PublishBatch(ctx, msgs[i:i+5000]); err != nil {
			t.Fatal(err)
		}
		if i%10000 == 5000 && killed < 4 { // kill a replica every 10,000 published
			replicas[killed%2].kill()
			killed++
		}
	}
	published := time.Since(start)
	answered := func() uint64 { return streamCount(ctx, t, js, topo.RepliesStream(), replyTo) }
	deadLettered := func() uint64 { return streamCount(ctx, t, js, topo.DLQStream(), topo.AgentDLQ("soak")) }
	pollUntil(ctx, t, "every envelope answered or dead-lettered", func() bool { return answered()+deadLettered() >= n })
	settled := time.Since(start)

	replies := readReplies(ctx, t, js, topo, replyTo, int(answered()))
	got := make(map[string]bool, n)
	for _, r := range replies {
		if got[r.CorrelationID] {
			t.Errorf("envelope %s answered twice", r.CorrelationID)
		}
		got[r.CorrelationID] = true
	}
	entries, err := dlq.NewStore(js, topo).List(ctx, dlq.Filter{Agent: "soak"})
	if err != nil {
		t.Fatal(err)
	}
	inDLQ := make(map[string]dlq.Reason, len(entries))
	for _, e := range entries {
		var env envelope.Envelope
		if err := envelope.Unmarshal(e.Data, &env); err != nil {
			t.Fatalf("dead letter %d does not decode: %v", e.Seq, err)
		}
		if got[env.ID] {
			t.Errorf("envelope %s both answered and dead-lettered (%s)", env.ID, e.Reason)
		}
		inDLQ[env.ID] = e.Reason
	}
	lost := 0
	for _, id := range ids {
		if !got[id] && inDLQ[id] == "" {
			lost++
		}
	}
	counts := ledgerCounts(t, ledger)
	twice := 0
	for _, id := range ids {
		if counts[id] > 1 {
			twice++
		}
	}
	reasons := map[dlq.Reason]int{}
	for _, r := range inDLQ {
		reasons[r]++
	}
	crashes := 0
	for _, r := range replicas {
		r.mu.Lock()
		crashes += len(r.exits)
		r.mu.Unlock()
	}
	t.Logf("soak: %d envelopes published in %v, all settled %v after the start; %d answered, %d dead-lettered %v, %d lost; %d processed twice (in flight when a replica was SIGKILLed: processed, not yet acknowledged); %d replica restarts",
		n, published.Round(time.Millisecond), settled.Round(time.Millisecond), len(got), len(inDLQ), reasons, lost, twice, crashes)
	if lost != 0 {
		t.Fatalf("%d envelopes lost", lost)
	}
	if len(inDLQ) < n/200 || reasons[dlq.ReasonPermanent] == 0 {
		t.Fatalf("%d dead letters for a 1%% permanent failure rate", len(inDLQ))
	}

	// The fix is deployed (replays no longer fail): replay the DLQ.
	replayStart := time.Now()
	out, err := exec.CommandContext(ctx, buildHostBinary(t, "./cmd/replay"), "replay", "--nats", srv.URL(), "--agent", "soak", "--yes", "--quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out)
	}
	if want := fmt.Sprintf("replayed %d,", len(inDLQ)); !strings.Contains(string(out), want) {
		t.Fatalf("replay said %q, want %q", out, want)
	}
	pollUntil(ctx, t, "the replayed envelopes answered", func() bool { return answered() >= n })
	t.Logf("replayed %d dead letters with cmd/replay; all answered %v later", len(inDLQ), time.Since(replayStart).Round(time.Millisecond))
}
