package replaycli

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/jetagent/jetagent/internal/testio"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type result struct {
	code        int
	out, stderr string
}

func run(t *testing.T, stdin string, terminal bool, args ...string) result {
	t.Helper()
	var out, errb testio.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := Main(ctx, args, IO{In: strings.NewReader(stdin), Out: &out, Err: &errb, InIsTerminal: terminal})
	return result{code, out.String(), errb.String()}
}

var topo = bus.Topology{}

// server starts a listening embedded server, provisioned, and returns its
// URL and a connection.
func server(t *testing.T) (string, *bus.Conn) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{Listen: true})
	conn := natstest.Connect(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	return srv.ClientURL(), conn
}

// fill stores n dead letters for agent, alternating the reasons given.
func fill(t *testing.T, conn *bus.Conn, agent string, n int, firstSeq uint64, reasons ...dlq.Reason) {
	t.Helper()
	store := dlq.NewStore(conn.JetStream(), topo)
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		env, err := envelope.New("tester", agent, envelope.TaskRequest, i)
		if err != nil {
			t.Fatal(err)
		}
		m, err := bus.EnvelopeMsg(topo.TaskSubject(agent, envelope.TaskRequest), env)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		rec := &dlq.Record{Data: m.Data, Header: m.Header, Reason: reasons[i%len(reasons)], Error: "it broke",
			Agent: agent, Subject: m.Subject, Stream: topo.TasksStream(), Sequence: firstSeq + uint64(i),
			Deliveries: 1, FirstFailure: now, LastFailure: now}
		msgs[i] = rec.Msg(store.Subject(rec))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := bus.NewPublisher(conn.JetStream()).PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyDLQAndUnreachableServer(t *testing.T) {
	url, _ := server(t)
	r := run(t, "", false, "list", "--nats", url)
	if r.code != cliexit.OK || r.out != "no dead letters match\n" {
		t.Fatalf("empty list: %+v", r)
	}
	r = run(t, "", false, "replay", "--nats", url)
	if r.code != cliexit.OK || !strings.Contains(r.out, "nothing to replay") {
		t.Fatalf("empty replay: %+v", r)
	}
	r = run(t, "", false, "stats", "--nats", url)
	if r.code != cliexit.OK || !strings.HasPrefix(r.out, "total 0") {
		t.Fatalf("empty stats: %+v", r)
	}
	r = run(t, "", false, "list", "--nats", "nats://127.0.0.1:1", "--timeout", "2s")
	if r.code != cliexit.Failure || !strings.HasPrefix(r.stderr, "replay: cannot reach NATS at nats://127.0.0.1:1") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("unreachable: %+v", r)
	}
	r = run(t, "", false, "list", "--data-dir", t.TempDir())
	if r.code != cliexit.Failure || !strings.Contains(r.stderr, "no jetagent data in") {
		t.Fatalf("empty data dir: %+v", r)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"list", "--reason", "nope"},
		{"list", "--since", "yesterday"},
		{"list", "--limit", "-1"},
		{"show"},
		{"show", "x"},
		{"replay", "0"},
		{"replay", "--to", "a.*"},
		{"replay", "--rate", "-3"},
		{"list", "--bogus"},
		{"frobnicate"},
	} {
		r := run(t, "", false, append(args, "--nats", "nats://127.0.0.1:1")...)
		if r.code != cliexit.Usage || !strings.HasPrefix(r.stderr, "replay: ") {
			t.Errorf("%v: %+v, want exit 2 and one error line", args, r)
		}
	}
}

func TestListShowStatsFilters(t *testing.T) {
	url, conn := server(t)
	fill(t, conn, "echo", 4, 1, dlq.ReasonPermanent, dlq.ReasonMaxAttempts)
	fill(t, conn, "billing", 2, 100, dlq.ReasonMalformed)

	r := run(t, "", false, "list", "--nats", url, "--agent", "echo", "--reason", "permanent", "--json")
	var got []summary
	if err := json.Unmarshal([]byte(r.out), &got); err != nil || r.code != 0 {
		t.Fatalf("list --json: %v %+v", err, r)
	}
	if len(got) != 2 || got[0].ID != 1 || got[1].ID != 3 || got[0].EnvelopeID == "" {
		t.Fatalf("filtered list = %+v", got)
	}
	r = run(t, "", false, "list", "--nats", url, "--limit", "2")
	if lines := strings.Count(r.out, "\n"); lines != 3 || !strings.HasPrefix(r.out, "ID ") {
		t.Fatalf("table with 2 rows:\n%s", r.out)
	}
	r = run(t, "", false, "show", "5", "--nats", url)
	for _, want := range []string{"ID:             5", "Agent:          billing", "Reason:         malformed", `"payload_type": "task.request"`, "Jetagent-Dlq-Reason: malformed"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("show output lacks %q:\n%s", want, r.out)
		}
	}
	r = run(t, "", false, "show", "99", "--nats", url)
	if r.code != cliexit.Failure || !strings.Contains(r.stderr, "entry not found: 99") {
		t.Fatalf("show 99: %+v", r)
	}
	r = run(t, "", false, "stats", "--nats", url, "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.out), &st); err != nil {
		t.Fatal(err)
	}
	if st["total"] != float64(6) || st["by_agent"].(map[string]any)["billing"] != float64(2) {
		t.Fatalf("stats = %v", st)
	}
}

func TestPurgeRemovesExactlyTheMatchingEntries(t *testing.T) {
	url, conn := server(t)
	fill(t, conn, "echo", 10, 1, dlq.ReasonPermanent, dlq.ReasonMaxAttempts)
	r := run(t, "", false, "purge", "--nats", url, "--reason", "max_attempts")
	if r.code != cliexit.Aborted || !strings.Contains(r.stderr, "pass --yes") {
		t.Fatalf("purge without --yes on a pipe: %+v", r)
	}
	r = run(t, "n\n", true, "purge", "--nats", url, "--reason", "max_attempts")
	if r.code != cliexit.Aborted {
		t.Fatalf("declined purge: %+v", r)
	}
	r = run(t, "y\n", true, "purge", "--nats", url, "--reason", "max_attempts")
	if r.code != cliexit.OK || r.out != "purged 5 entries\n" {
		t.Fatalf("confirmed purge: %+v", r)
	}
	left, err := dlq.NewStore(conn.JetStream(), topo).List(context.Background(), dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 5 {
		t.Fatalf("%d entries left, want 5", len(left))
	}
	for _, e := range left {
		if e.Reason != dlq.ReasonPermanent {
			t.Fatalf("entry %d (%s) should have been purged", e.Seq, e.Reason)
		}
	}
}

// 10,000 entries replayed with a rate limit run once each; a second replay
// without --force replays none.
func TestReplayTenThousandOnceWithRateLimit(t *testing.T) {
	const n = 10000
	url, conn := server(t)
	fill(t, conn, "echo", n, 1, dlq.ReasonMaxAttempts)

	r := run(t, "", false, "replay", "--nats", url)
	if r.code != cliexit.Aborted {
		t.Fatalf("replay of %d without --yes on a pipe: %+v", n, r)
	}
	start := time.Now()
	r = run(t, "", false, "replay", "--nats", url, "--rate", "4000", "--yes", "--quiet")
	took := time.Since(start)
	if r.code != cliexit.OK || r.out != fmt.Sprintf("replayed %d, already replayed 0, would replay 0, failed 0\n", n) {
		t.Fatalf("replay: %+v", r)
	}
	t.Logf("replayed %d entries at --rate 4000 in %v (%.0f/s)", n, took, n/took.Seconds())
	if took < (n-200)*time.Second/4000 { // the limiter allows a burst of 50ms (200)
		t.Errorf("replayed %d entries in %v: faster than --rate 4000 allows", n, took)
	}
	r = run(t, "", false, "replay", "--nats", url, "--yes", "--quiet")
	if r.code != cliexit.OK || !strings.HasPrefix(r.out, fmt.Sprintf("replayed 0, already replayed %d", n)) {
		t.Fatalf("second replay: %+v", r)
	}
	if got := tasksStored(t, conn); got != n {
		t.Fatalf("tasks stream holds %d after the second replay, want %d", got, n)
	}
	// Each entry became exactly one task.
	seen := replayedTasks(t, conn, n)
	if len(seen) != n {
		t.Fatalf("%d distinct entries replayed, want %d", len(seen), n)
	}
}

func tasksStored(t *testing.T, conn *bus.Conn) uint64 {
	t.Helper()
	st, err := conn.JetStream().Stream(context.Background(), topo.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// replayedTasks reads the tasks stream and returns the DLQ entry each task
// was replayed from.
func replayedTasks(t *testing.T, conn *bus.Conn, n int) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The agent's side: a work-queue consumer that takes every task.
	cons, err := conn.JetStream().CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "echo", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: n,
	})
	if err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool, n)
	for got := 0; got < n; {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for m := range batch.Messages() {
			k++
			id := m.Headers().Get(dlq.HeaderReplayOf)
			if seen[id] {
				t.Fatalf("entry %s replayed twice", id)
			}
			if _, err := strconv.Atoi(id); err != nil {
				t.Fatalf("task without a replay header: %v", m.Headers())
			}
			seen[id] = true
			_ = m.Ack()
		}
		if k == 0 {
			break
		}
		got += k
	}
	return seen
}
