package dlq_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var topo = bus.Topology{Memory: true}

// deadLetter stores a dead letter of agent's task (a valid envelope) with
// reason, as the runtime would, and returns the envelope.
func deadLetter(t testing.TB, store *dlq.Store, agent string, seq uint64, reason dlq.Reason) *envelope.Envelope {
	t.Helper()
	env, err := envelope.New("tester", agent, envelope.TaskRequest, fmt.Sprint("task ", seq))
	if err != nil {
		t.Fatal(err)
	}
	m, err := bus.EnvelopeMsg(topo.TaskSubject(agent, envelope.TaskRequest), env)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	_, err = store.Publish(testkit.Context(t), &dlq.Record{
		Data: m.Data, Header: m.Header, Reason: reason, Error: "boom " + string(reason), Agent: agent,
		Subject: m.Subject, Stream: topo.TasksStream(), Sequence: seq, Deliveries: 3,
		FirstFailure: now, LastFailure: now, TraceID: env.TraceID,
	})
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func newStore(t testing.TB) (*bus.Conn, *dlq.Store) {
	_, conn := natstest.Provisioned(t, topo)
	return conn, dlq.NewStore(conn.JetStream(), topo)
}

func TestPublishIsIdempotentPerOriginalMessage(t *testing.T) {
	t.Parallel()
	_, store := newStore(t)
	deadLetter(t, store, "echo", 7, dlq.ReasonPermanent)
	deadLetter(t, store, "echo", 7, dlq.ReasonPermanent) // the same delivery dead-lettered twice
	all, err := store.List(testkit.Context(t), dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 {
		t.Fatalf("%d entries, want 1", len(all))
	}
	e := all[0]
	if e.Seq != 1 || e.DLQSubject != "jetagent.dlq.echo.task.request" || e.Sequence != 7 || e.Reason != dlq.ReasonPermanent {
		t.Fatalf("entry = %+v", e)
	}
	got, err := store.Get(testkit.Context(t), 1)
	if err != nil || got.Sequence != 7 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if _, err := store.Get(testkit.Context(t), 99); !errors.Is(err, dlq.ErrNotFound) {
		t.Fatalf("Get(99) = %v, want ErrNotFound", err)
	}
}

func TestFiltersStatsAndPurge(t *testing.T) {
	t.Parallel()
	_, store := newStore(t)
	deadLetter(t, store, "echo", 1, dlq.ReasonPermanent)
	deadLetter(t, store, "echo", 2, dlq.ReasonMaxAttempts)
	deadLetter(t, store, "billing", 3, dlq.ReasonPermanent)
	mid := time.Now()
	deadLetter(t, store, "billing", 4, dlq.ReasonMalformed)
	count := func(f dlq.Filter) int {
		t.Helper()
		es, err := store.List(testkit.Context(t), f)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	cases := map[string]struct {
		f    dlq.Filter
		want int
	}{
		"all":      {dlq.Filter{}, 4},
		"agent":    {dlq.Filter{Agent: "billing"}, 2},
		"reason":   {dlq.Filter{Reason: dlq.ReasonPermanent}, 2},
		"subject":  {dlq.Filter{Subject: "jetagent.tasks.echo.>"}, 2},
		"type":     {dlq.Filter{Type: "task.request"}, 4},
		"error":    {dlq.Filter{Error: "malformed"}, 1},
		"since":    {dlq.Filter{Since: mid}, 1},
		"until":    {dlq.Filter{Until: mid}, 3},
		"limit":    {dlq.Filter{Limit: 3}, 3},
		"ids":      {dlq.Filter{IDs: []uint64{2, 4}}, 2},
		"ids+filt": {dlq.Filter{IDs: []uint64{2, 4}, Agent: "billing"}, 1},
		"none":     {dlq.Filter{Agent: "nobody"}, 0},
		"after":    {dlq.Filter{After: 2}, 2},
		"after+ag": {dlq.Filter{After: 1, Agent: "echo"}, 1},
		"after+id": {dlq.Filter{After: 3, IDs: []uint64{2, 4}}, 1},
		"page":     {dlq.Filter{After: 1, Limit: 2}, 2},
		"past end": {dlq.Filter{After: 4}, 0},
		// Paging: the server starts after the given sequence.
		"p:after":         {dlq.Filter{After: 1}, 3},
		"p:after+agent":   {dlq.Filter{After: 3, Agent: "billing"}, 1},
		"p:after+limit":   {dlq.Filter{After: 1, Limit: 2}, 2},
		"p:after the end": {dlq.Filter{After: 4}, 0},
		"p:after+ids":     {dlq.Filter{After: 2, IDs: []uint64{1, 2, 3}}, 1},
	}
	for name, c := range cases {
		if got := count(c.f); got != c.want {
			t.Errorf("%s: %d entries, want %d", name, got, c.want)
		}
	}
	st, err := store.Stats(testkit.Context(t), dlq.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Total != 4 || st.ByAgent["billing"] != 2 || st.ByReason[dlq.ReasonPermanent] != 2 || st.Oldest.Seq != 1 {
		t.Fatalf("stats = %+v", st)
	}
	n, err := store.Purge(testkit.Context(t), dlq.Filter{Agent: "billing", Reason: dlq.ReasonPermanent})
	if err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	left := list(t, store, dlq.Filter{})
	if len(left) != 3 {
		t.Fatalf("%d left after purging exactly one", len(left))
	}
	for _, e := range left {
		if e.Agent == "billing" && e.Reason == dlq.ReasonPermanent {
			t.Fatal("the purged entry is still there")
		}
	}
}

// consumeTasks counts the tasks agent's consumer receives.
func consumeTasks(t *testing.T, conn *bus.Conn, agent string) func() []jetstream.Msg {
	t.Helper()
	cons, err := conn.JetStream().CreateOrUpdateConsumer(testkit.Context(t), topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: agent, FilterSubject: topo.AgentTasks(agent), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []jetstream.Msg
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		mu.Lock()
		got = append(got, m)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return func() []jetstream.Msg {
		mu.Lock()
		defer mu.Unlock()
		return append([]jetstream.Msg(nil), got...)
	}
}

func waitLen(t *testing.T, what string, f func() []jetstream.Msg, n int) []jetstream.Msg {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := f()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d", what, len(got), n)
		}
		time.Sleep(5 * time.Millisecond) // polling another goroutine's result
	}
}

// TestPagesStartWhereTheLastEnded: After reads from the next sequence on,
// so that pages of a large DLQ cost their own size, not what precedes them.
func TestPagesStartWhereTheLastEnded(t *testing.T) {
	t.Parallel()
	_, store := newStore(t)
	for i := uint64(1); i <= 7; i++ {
		deadLetter(t, store, "echo", i, dlq.ReasonPermanent)
	}
	var seen []uint64
	after := uint64(0)
	for pages := 0; pages < 10; pages++ {
		es, err := store.List(testkit.Context(t), dlq.Filter{After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			seen = append(seen, e.Seq)
		}
		after = es[len(es)-1].Seq
	}
	if fmt.Sprint(seen) != "[1 2 3 4 5 6 7]" {
		t.Fatalf("pages gave %v, want every entry once, in order", seen)
	}
}

func TestReplayRunsEachEntryOnceUnlessForced(t *testing.T) {
	t.Parallel()
	conn, store := newStore(t)
	env := deadLetter(t, store, "echo", 1, dlq.ReasonPermanent)
	// The original task id is still inside the duplicate window: a replay
	// must not be dropped as a duplicate of it.
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(testkit.Context(t), topo.TaskSubject("ghost", envelope.TaskRequest), env); err != nil {
		t.Fatal(err)
	}
	got := consumeTasks(t, conn, "echo")
	entries := list(t, store, dlq.Filter{})

	res, err := store.Replay(testkit.Context(t), entries, dlq.ReplayOptions{DryRun: true})
	if err != nil || res.WouldReplay != 1 || res.Replayed != 0 {
		t.Fatalf("dry run = %+v, %v", res, err)
	}
	res, err = store.Replay(testkit.Context(t), entries, dlq.ReplayOptions{})
	if err != nil || res.Replayed != 1 {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	msgs := waitLen(t, "replayed task", got, 1)
	m := msgs[0]
	if m.Headers().Get(dlq.HeaderReplayOf) != "1" || m.Headers().Get(dlq.HeaderReason) != "" {
		t.Fatalf("replayed headers = %v", m.Headers())
	}
	var back envelope.Envelope
	if err := envelope.Unmarshal(m.Data(), &back); err != nil || back.ID != env.ID {
		t.Fatalf("replayed body is not the original envelope: %v", err)
	}
	// Again without --force: nothing.
	entries = list(t, store, dlq.Filter{})
	if entries[0].Replays != 1 {
		t.Fatalf("entry shows %d replays", entries[0].Replays)
	}
	res, err = store.Replay(testkit.Context(t), entries, dlq.ReplayOptions{})
	if err != nil || res.Skipped != 1 || res.Replayed != 0 {
		t.Fatalf("second replay = %+v, %v", res, err)
	}
	// With --force: a new task again.
	res, err = store.Replay(testkit.Context(t), entries, dlq.ReplayOptions{Force: true})
	if err != nil || res.Replayed != 1 {
		t.Fatalf("forced replay = %+v, %v", res, err)
	}
	msgs = waitLen(t, "forced replay", got, 2)
	if msgs[1].Headers().Get(dlq.HeaderReplayCount) != "2" {
		t.Fatalf("forced replay count header = %q", msgs[1].Headers().Get(dlq.HeaderReplayCount))
	}
	if n := len(got()); n != 2 {
		t.Fatalf("%d tasks delivered, want 2", n)
	}
}

func TestConcurrentReplaysRunAnEntryOnce(t *testing.T) {
	t.Parallel()
	conn, store := newStore(t)
	for i := range 20 {
		deadLetter(t, store, "echo", uint64(i+1), dlq.ReasonPermanent)
	}
	got := consumeTasks(t, conn, "echo")
	entries := list(t, store, dlq.Filter{})
	var wg sync.WaitGroup
	results := make([]dlq.ReplayResult, 4)
	for i := range results {
		wg.Go(func() {
			res, err := store.Replay(testkit.Context(t), entries, dlq.ReplayOptions{})
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		})
	}
	wg.Wait()
	replayed := 0
	for _, r := range results {
		replayed += r.Replayed
	}
	if replayed != 20 {
		t.Fatalf("entries counted as replayed %d times across 4 operators, want 20", replayed)
	}
	waitLen(t, "replays", got, 20)
	// Nothing more arrives: poll the consumer until it has nothing pending.
	if n := len(got()); n != 20 {
		t.Fatalf("%d tasks delivered, want 20", n)
	}
}

func TestReplayToAnotherSubjectAndRateLimit(t *testing.T) {
	t.Parallel()
	conn, store := newStore(t)
	for i := range 5 {
		deadLetter(t, store, "echo", uint64(i+1), dlq.ReasonPermanent)
	}
	got := consumeTasks(t, conn, "echo2")
	entries := list(t, store, dlq.Filter{})
	start := time.Now()
	var seen []dlq.Outcome
	res, err := store.Replay(testkit.Context(t), entries, dlq.ReplayOptions{
		To: topo.TaskSubject("echo2", envelope.TaskRequest), Rate: 20,
		Progress: func(_ *dlq.Entry, o dlq.Outcome, _ error) { seen = append(seen, o) },
	})
	if err != nil || res.Replayed != 5 || len(seen) != 5 {
		t.Fatalf("replay = %+v, %v, progress %v", res, err, seen)
	}
	// 5 at 20/s with a burst of 1: at least 4 intervals of 50ms.
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Fatalf("5 replays at 20/s took %v", took)
	}
	msgs := waitLen(t, "replays to echo2", got, 5)
	if msgs[0].Subject() != "jetagent.tasks.echo2.task.request" {
		t.Fatalf("replayed to %s", msgs[0].Subject())
	}
}

func TestFullDLQRefusesNewDeadLetters(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, bus.Topology{Memory: true, DLQMaxMsgs: 2})
	store := dlq.NewStore(conn.JetStream(), topo)
	deadLetter(t, store, "echo", 1, dlq.ReasonPermanent)
	deadLetter(t, store, "echo", 2, dlq.ReasonPermanent)
	m, _ := bus.EnvelopeMsg(topo.TaskSubject("echo", envelope.TaskRequest), mustEnvelope(t))
	_, err := store.Publish(testkit.Context(t), &dlq.Record{Data: m.Data, Header: nats.Header{}, Reason: dlq.ReasonPermanent,
		Agent: "echo", Subject: m.Subject, Stream: topo.TasksStream(), Sequence: 3})
	if err == nil {
		t.Fatal("a full DLQ accepted a dead letter")
	}
	es := list(t, store, dlq.Filter{})
	if len(es) != 2 || es[0].Sequence != 1 {
		t.Fatalf("DLQ holds %d entries (first: %d): old entries must be kept", len(es), es[0].Sequence)
	}
}

func mustEnvelope(t *testing.T) *envelope.Envelope {
	env, err := envelope.New("t", "echo", envelope.TaskRequest, nil)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func list(t *testing.T, store *dlq.Store, f dlq.Filter) []*dlq.Entry {
	t.Helper()
	es, err := store.List(testkit.Context(t), f)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// Replay marks are kept per agent: listing one agent's entries, showing one
// entry and selecting by id all see the mark of the entry they return, and
// never another agent's; purging an entry removes its mark.
func TestReplayMarksFollowTheirEntry(t *testing.T) {
	t.Parallel()
	conn, store := newStore(t)
	deadLetter(t, store, "alpha", 1, dlq.ReasonPermanent)
	deadLetter(t, store, "beta", 2, dlq.ReasonPermanent)
	alpha := list(t, store, dlq.Filter{Agent: "alpha"})
	if len(alpha) != 1 {
		t.Fatalf("alpha has %d entries", len(alpha))
	}
	if res, err := store.Replay(testkit.Context(t), alpha, dlq.ReplayOptions{}); err != nil || res.Replayed != 1 {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	kv, err := conn.JetStream().KeyValue(testkit.Context(t), topo.ReplaysBucket())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeys(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for k := range keys.Keys() {
		got = append(got, k)
	}
	if want := fmt.Sprintf("alpha.%d", alpha[0].Seq); len(got) != 1 || got[0] != want {
		t.Fatalf("marks %q, want [%s]", got, want)
	}
	replays := func(f dlq.Filter) map[string]int {
		out := map[string]int{}
		for _, e := range list(t, store, f) {
			out[e.Agent] = e.Replays
		}
		return out
	}
	for _, f := range []dlq.Filter{{}, {Agent: "alpha"}, {Agent: "beta"}, {IDs: []uint64{1, 2}}} {
		r := replays(f)
		if (f.Agent != "beta" && r["alpha"] != 1) || r["beta"] != 0 {
			t.Errorf("filter %+v: replays by agent %v", f, r)
		}
	}
	e, err := store.Get(testkit.Context(t), alpha[0].Seq)
	if err != nil || e.Replays != 1 {
		t.Fatalf("Get = %+v, %v; want 1 replay", e, err)
	}
	if n, err := store.Purge(testkit.Context(t), dlq.Filter{Agent: "alpha"}); err != nil || n != 1 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	if _, err := kv.Get(testkit.Context(t), got[0]); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("mark after purge: %v, want it gone", err)
	}
}

// A page reader skips the full read of the marks and fills in its own
// entries' counts; a filter on replays still reads them.
func TestListWithoutReplaysThenFill(t *testing.T) {
	t.Parallel()
	_, store := newStore(t)
	deadLetter(t, store, "alpha", 1, dlq.ReasonPermanent)
	deadLetter(t, store, "alpha", 2, dlq.ReasonPermanent)
	first := list(t, store, dlq.Filter{IDs: []uint64{1}})
	if res, err := store.Replay(testkit.Context(t), first, dlq.ReplayOptions{}); err != nil || res.Replayed != 1 {
		t.Fatalf("replay = %+v, %v", res, err)
	}
	page := list(t, store, dlq.Filter{WithoutReplays: true})
	if len(page) != 2 || page[0].Replays != 0 {
		t.Fatalf("without replays: %d entries, first has %d replays; want 2 and 0", len(page), page[0].Replays)
	}
	if err := store.FillReplays(testkit.Context(t), page); err != nil {
		t.Fatal(err)
	}
	if page[0].Replays != 1 || page[1].Replays != 0 {
		t.Fatalf("filled: %d and %d replays, want 1 and 0", page[0].Replays, page[1].Replays)
	}
	if left := list(t, store, dlq.Filter{WithoutReplays: true, NotReplayed: true}); len(left) != 1 || left[0].Sequence != 2 {
		t.Fatalf("not replayed, without replays: %d entries", len(left))
	}
}

// A duplicate answer proves nothing: the DLQ deduplicates over every
// agent, and a neighbour can publish its own dead letters with the id
// this one will have. Publish stores the record anyway (under a fresh
// id), and still stores a real re-publish once.
func TestPublishDoesNotTrustADuplicateAnswer(t *testing.T) {
	t.Parallel()
	conn, store := newStore(t)
	rec := &dlq.Record{Data: []byte("task"), Header: nats.Header{}, Reason: dlq.ReasonPermanent,
		Agent: "victim", Subject: topo.TaskSubject("victim", envelope.TaskRequest), Stream: topo.TasksStream(), Sequence: 7,
		FirstFailure: time.Now(), LastFailure: time.Now()}
	decoy := nats.NewMsg(topo.DLQSubject("attacker", "x"))
	decoy.Header.Set(jetstream.MsgIDHeader, rec.MsgID())
	decoy.Data = []byte("decoy")
	if _, err := conn.JetStream().PublishMsg(testkit.Context(t), decoy); err != nil {
		t.Fatal(err)
	}
	seq, err := store.Publish(testkit.Context(t), rec)
	if err != nil {
		t.Fatal(err)
	}
	e, err := store.Get(testkit.Context(t), seq)
	if err != nil || e.Agent != "victim" || e.Sequence != 7 || string(e.Data) != "task" {
		t.Fatalf("entry %d: %+v, %v", seq, e, err)
	}
	if n := store.IDCollisions(); n != 1 {
		t.Errorf("IDCollisions = %d, want 1", n)
	}
	// Our own first publish of another record, then its re-publish (a
	// term lost after dead-lettering): one entry.
	rec2 := *rec
	rec2.Sequence = 8
	first, err := store.Publish(testkit.Context(t), &rec2)
	if err != nil {
		t.Fatal(err)
	}
	again, err := store.Publish(testkit.Context(t), &rec2)
	if err != nil || again != first {
		t.Fatalf("re-publish: entry %d (first %d), %v", again, first, err)
	}
	if n := len(list(t, store, dlq.Filter{Agent: "victim"})); n != 2 {
		t.Errorf("%d entries of victim, want 2", n)
	}
	if n := store.IDCollisions(); n != 1 {
		t.Errorf("IDCollisions = %d, want 1", n)
	}
}
