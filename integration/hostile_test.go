package integration

// Hostile tenants: each test runs an attack as the attacker's NATS user,
// with exactly the permissions docs/security.md documents (or, where
// named, the narrower or odd grant the attack needs), on a server that
// enforces them, and checks that the victim's data is intact and that
// nothing is lost. docs/security.md's threat model links each of its
// lines to one of these tests.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func hostileCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// runAgent runs agent's runtime as user, with h on each payload type
// listed (task.request: echo when none is), its log shown if t fails.
func (s *secured) runAgent(t *testing.T, user, agent string, cfg runtime.Config, hs map[envelope.PayloadType]runtime.Handler) *runtime.Runtime {
	t.Helper()
	var logs testio.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log:\n%s", agent, logs.String())
		}
	})
	cfg.Agent, cfg.Topology = agent, s.topo
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if cfg.Backoff == (resilience.Backoff{}) {
		cfg.Backoff = resilience.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	}
	conn := s.connect(t, user, nil)
	rt, err := runtime.New(conn, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if hs == nil {
		hs = map[envelope.PayloadType]runtime.Handler{}
	}
	if hs[envelope.TaskRequest] == nil {
		hs[envelope.TaskRequest] = runtime.Echo
	}
	for typ, h := range hs {
		rt.Handle(typ, h)
	}
	if err := rt.Start(hostileCtx(t)); err != nil {
		t.Fatalf("start %s as %s: %v", agent, user, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := rt.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", agent, err)
		}
	})
	return rt
}

// settled counts the deliveries rt has settled one way or another.
func settled(rt *runtime.Runtime) uint64 {
	st := rt.Stats()
	return st.Succeeded + st.Retried + st.DeadLettered + st.Cancelled + st.Duplicates
}

// publishEnvelope publishes env on subject as conn's user and returns its
// stream sequence.
func publishEnvelope(ctx context.Context, t *testing.T, conn *bus.Conn, subject string, env *envelope.Envelope) uint64 {
	t.Helper()
	ack, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(ctx, subject, env)
	if err != nil {
		t.Fatalf("publish to %s: %v", subject, err)
	}
	return ack.Sequence
}

// deadLetters returns agent's dead letters, by the original's stream
// sequence.
func (s *secured) deadLetters(ctx context.Context, t *testing.T, agent string) map[uint64]*dlq.Entry {
	t.Helper()
	entries, err := dlq.NewStore(s.admin.JetStream(), s.topo).List(ctx, dlq.Filter{Agent: agent})
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]*dlq.Entry{}
	for _, e := range entries {
		out[e.Sequence] = e
	}
	return out
}

// taskStored reports whether the tasks stream still holds seq.
func (s *secured) taskStored(ctx context.Context, t *testing.T, seq uint64) bool {
	t.Helper()
	st, err := s.admin.JetStream().Stream(ctx, s.topo.TasksStream())
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.GetMsg(ctx, seq)
	return err == nil
}

// Attack 1: agent A fills the DLQ's duplicate window with decoys carrying
// the message ids B's next dead letters will have (A reads the tasks
// stream's last sequence with its STREAM.INFO grant and publishes on its
// own DLQ subjects). B's dead letter must still be stored, or its task
// stay in the tasks stream: never both gone.
func TestHostileDLQDecoysCannotSuppressADeadLetter(t *testing.T) {
	s := startSecured(t)
	ctx := hostileCtx(t)
	attacker := s.connect(t, "agent-A", nil)
	tasks := s.topo.TasksStream()
	st, err := attacker.JetStream().Stream(ctx, tasks)
	if err != nil {
		t.Fatalf("stream info as agent-A: %v", err)
	}
	next := st.CachedInfo().State.LastSeq + 1
	const decoys = 5
	for seq := next; seq < next+decoys; seq++ {
		// Every id the attacker can predict: today's format, whatever it
		// is (the algorithm is public), and the historical one.
		ids := map[string]bool{
			(&dlq.Record{Agent: "B", Stream: tasks, Sequence: seq}).MsgID(): true,
			"dlq-" + tasks + "-" + strconv.FormatUint(seq, 10):              true,
		}
		for id := range ids {
			m := nats.NewMsg(s.topo.DLQSubject("A", "decoy"))
			m.Header.Set(jetstream.MsgIDHeader, id)
			m.Data = []byte("decoy")
			if _, err := attacker.JetStream().PublishMsg(ctx, m); err != nil {
				t.Fatalf("decoy as agent-A: %v", err)
			}
		}
	}

	victim := s.runAgent(t, "agent-B", "B", runtime.Config{}, nil)
	ack, err := s.admin.JetStream().Publish(ctx, s.topo.TaskSubject("B", envelope.TaskRequest), []byte("not an envelope"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence < next || ack.Sequence >= next+decoys {
		t.Fatalf("B's task got sequence %d, outside the decoys' %d..%d", ack.Sequence, next, next+decoys-1)
	}
	pollUntil(ctx, t, "B to dead-letter its malformed task", func() bool { return victim.Stats().DeadLettered > 0 })
	e := s.deadLetters(ctx, t, "B")[ack.Sequence]
	if e == nil || e.Stream != tasks || e.Reason != dlq.ReasonMalformed {
		t.Fatalf("B's dead letter of task %d is not in the DLQ (B's entries: %v), and the task is still in the tasks stream: %v",
			ack.Sequence, s.deadLetters(ctx, t, "B"), s.taskStored(ctx, t, ack.Sequence))
	}
}

// Attack 2: agent A writes its own snapshot key with a rollup header
// (permissions cannot filter headers): B's snapshots must survive.
func TestHostileRollupCannotWipeAnotherAgentsSnapshots(t *testing.T) {
	s := startSecured(t)
	ctx := hostileCtx(t)
	b := s.connect(t, "agent-B", nil)
	kv, err := snapshot.NewKV(b.JetStream(), s.topo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Save(ctx, &snapshot.Snapshot{Agent: "B", TaskID: "t1", Status: snapshot.Working, Step: 3}, 0); err != nil {
		t.Fatal(err)
	}

	attacker := s.connect(t, "agent-A", nil)
	for _, rollup := range []string{"all", "sub"} {
		// A's own key: in its own bucket since issue 17 (on main, A's keys
		// were in the bucket every agent shared).
		m := nats.NewMsg("$KV." + s.topo.SnapshotBucket("A") + ".A.x")
		m.Header.Set("Nats-Rollup", rollup)
		m.Data = []byte("x")
		if _, err := attacker.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatalf("agent-A writing its own snapshot key (rollup %s): %v", rollup, err)
		}
	}
	got, err := kv.Load(ctx, "B", "t1")
	if err != nil || got.Step != 3 || got.Status != snapshot.Working {
		t.Fatalf("B's snapshot after A rolled up its own key: %+v, %v", got, err)
	}
}

// narrowClient may send agent A task.request envelopes only (the grant
// docs/security.md recommends), and read its replies.
func narrowClient(topo bus.Topology, client string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{topo.TaskSubject("A", envelope.TaskRequest)}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			topo.ReplySubject(client) + ".>",
			"_INBOX_client-" + client + ".>",
		}},
	}
}

// Attack 3: a client allowed only A's task.request subject sends
// task.cancel, state.query and state.restore envelopes on it, for another
// client's task. The subject decides; a body that disagrees is dead-lettered.
func TestHostilePayloadTypeCannotWidenSubjectPermissions(t *testing.T) {
	s := startSecured(t, securedUser{"client-N", narrowClient(bus.Topology{}, "N")})
	ctx := hostileCtx(t)
	// A's user may not read B's snapshots: a restore from B waits for its deadline.
	rt := s.runAgent(t, "agent-A", "A", runtime.Config{HandlerTimeout: 3 * time.Second}, nil)
	// Another client's task, half done.
	own := s.connect(t, "agent-A", nil)
	kv, err := snapshot.NewKV(own.JetStream(), s.topo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Save(ctx, &snapshot.Snapshot{Agent: "A", TaskID: "victim", Status: snapshot.Working, Step: 2}, 0); err != nil {
		t.Fatal(err)
	}

	attacker := s.connect(t, "client-N", nil)
	replies, err := attacker.NATS().SubscribeSync(s.topo.ReplySubject("N") + ".>")
	if err != nil {
		t.Fatal(err)
	}
	seqs := map[uint64]envelope.PayloadType{}
	for _, typ := range []envelope.PayloadType{envelope.TaskCancel, envelope.StateQuery, envelope.StateRestore} {
		env, err := envelope.New("N", "A", typ, runtime.RestoreRequest{From: "B"})
		if err != nil {
			t.Fatal(err)
		}
		env.TaskID, env.ReplyTo = "victim", s.topo.ReplySubject("N")+"."+env.ID
		seqs[publishEnvelope(ctx, t, attacker, s.topo.TaskSubject("A", envelope.TaskRequest), env)] = typ
	}
	pollUntil(ctx, t, "A to settle the three envelopes", func() bool { return settled(rt) >= 3 })
	got, err := kv.Load(ctx, "A", "victim")
	if err != nil || got.Status != snapshot.Working || got.Step != 2 {
		t.Fatalf("the victim's task after a task.request-only client's control envelopes: %+v, %v", got, err)
	}
	if err := attacker.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := replies.Pending(); n != 0 {
		m, _ := replies.NextMsg(time.Second)
		t.Fatalf("the attacker got %d answers, e.g. %q", n, m.Data)
	}
	dead := s.deadLetters(ctx, t, "A")
	for seq, typ := range seqs {
		if e := dead[seq]; e == nil || e.Reason != dlq.ReasonInvalid {
			t.Errorf("%s on the task.request subject: dead letter %+v, want reason %s", typ, e, dlq.ReasonInvalid)
		}
	}
}

// Attack 4: a client sends tasks whose task_id or idempotency_key carries
// CR, LF, NUL or DEL to an agent whose handler is HTTP (the ids become
// request headers). They must be refused as invalid input, not counted as
// failures of the subject: the breaker stays closed, a good task is
// answered at once.
func TestHostileControlCharactersCannotOpenABreaker(t *testing.T) {
	s := startSecured(t)
	ctx := hostileCtx(t)
	var hits atomic.Int32
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(web.Close)
	h, err := handlers.HTTP(handlers.HTTPConfig{URL: web.URL})
	if err != nil {
		t.Fatal(err)
	}
	rt := s.runAgent(t, "agent-A", "A", runtime.Config{
		Breaker:  resilience.BreakerSettings{Threshold: 3, OpenTimeout: time.Minute},
		Consumer: bus.ConsumerConfig{MaxDeliver: 3, AckWait: 5 * time.Second},
	}, map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: h})
	client := s.connect(t, "client-C", nil)
	subject := s.topo.TaskSubject("A", envelope.TaskRequest)
	bad := map[uint64]bool{}
	for _, c := range []string{"\r\nInjected: 1", "\n", "\x00", "\r", "\x7f"} {
		for _, field := range []string{"task_id", "idempotency_key"} {
			env, err := envelope.New("C", "A", envelope.TaskRequest, "x")
			if err != nil {
				t.Fatal(err)
			}
			if field == "task_id" {
				env.TaskID = "t" + c
			} else {
				env.IdempotencyKey = "k" + c
			}
			bad[publishEnvelope(ctx, t, client, subject, env)] = true
		}
	}
	replies, err := client.NATS().SubscribeSync(s.topo.ReplySubject("C") + ".>")
	if err != nil {
		t.Fatal(err)
	}
	good, err := envelope.New("C", "A", envelope.TaskRequest, "good")
	if err != nil {
		t.Fatal(err)
	}
	good.ReplyTo = s.topo.ReplySubject("C") + "." + good.ID
	publishEnvelope(ctx, t, client, subject, good)
	if _, err := replies.NextMsg(20 * time.Second); err != nil {
		t.Fatalf("the good task got no reply (%v): breakers %v, stats %+v", err, rt.Breakers().States(), rt.Stats())
	}
	if st := rt.Breakers().States()[subject]; st != resilience.StateClosed {
		t.Errorf("breaker of %s is %v", subject, st)
	}
	pollUntil(ctx, t, "the bad tasks to be dead-lettered", func() bool { return len(s.deadLetters(ctx, t, "A")) >= len(bad) })
	for seq, e := range s.deadLetters(ctx, t, "A") {
		if !bad[seq] || e.Reason != dlq.ReasonInvalid {
			t.Errorf("dead letter of task %d: reason %s (%s), want %s", seq, e.Reason, e.Error, dlq.ReasonInvalid)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the HTTP service got %d requests, want 1 (the good task's)", n)
	}
}

// Attack 5: a client sends tasks whose reply_to is not a literal subject
// (a space, wildcards, empty tokens, a control character). They are
// refused at receipt: no handler runs for an answer that cannot be sent.
func TestHostileReplyToMustBeALiteralSubject(t *testing.T) {
	s := startSecured(t)
	ctx := hostileCtx(t)
	var runs atomic.Int32
	rt := s.runAgent(t, "agent-A", "A", runtime.Config{Consumer: bus.ConsumerConfig{MaxDeliver: 2, AckWait: 2 * time.Second}},
		map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: func(ctx context.Context, task *runtime.Task) (any, error) {
			runs.Add(1)
			return runtime.Echo(ctx, task)
		}})
	client := s.connect(t, "client-C", nil)
	base := s.topo.ReplySubject("C")
	cases := []string{base + ".a b", base + ".>", base + ".*", base + ".", base + "..x", "." + base, base + ".\x00", base + ".\t"}
	seqs := map[uint64]string{}
	for _, replyTo := range cases {
		env, err := envelope.New("C", "A", envelope.TaskRequest, "x")
		if err != nil {
			t.Fatal(err)
		}
		env.ReplyTo = replyTo
		seqs[publishEnvelope(ctx, t, client, s.topo.TaskSubject("A", envelope.TaskRequest), env)] = replyTo
	}
	pollUntil(ctx, t, "A to settle them (or run one)", func() bool {
		return runs.Load() > 0 || rt.Stats().DeadLettered >= uint64(len(cases))
	})
	if n := runs.Load(); n > 0 {
		t.Fatalf("the handler ran %d times for tasks whose reply_to is not a subject", n)
	}
	dead := s.deadLetters(ctx, t, "A")
	for seq, replyTo := range seqs {
		if e := dead[seq]; e == nil || e.Reason != dlq.ReasonInvalid {
			t.Errorf("reply_to %q: dead letter %+v, want reason %s", replyTo, e, dlq.ReasonInvalid)
		}
	}
}

// Attack 6a: a client publishes tasks on subjects it invents under A's
// prefix. The agent keeps no state per invented subject: no breaker (and
// so nothing held or counted for it) beyond the subjects it handles.
func TestHostileInventedSubjectsCreateNoBreakers(t *testing.T) {
	s := startSecured(t)
	ctx := hostileCtx(t)
	rt := s.runAgent(t, "agent-A", "A", runtime.Config{}, nil)
	client := s.connect(t, "client-C", nil)
	const invented = 100
	for i := range invented {
		env, err := envelope.New("C", "A", envelope.TaskRequest, i)
		if err != nil {
			t.Fatal(err)
		}
		publishEnvelope(ctx, t, client, s.topo.TaskSubject("A", envelope.PayloadType(fmt.Sprintf("x%d.task.request", i))), env)
	}
	pollUntil(ctx, t, "A to settle them", func() bool { return settled(rt) >= invented })
	if n := len(rt.Breakers().States()); n > 1 {
		t.Fatalf("%d breakers after %d tasks on invented subjects", n, invented)
	}
	if n := len(s.deadLetters(ctx, t, "A")); n != invented {
		t.Errorf("%d dead letters, want %d (nothing lost)", n, invented)
	}
}

// Attack 6b: a client cancels task ids that do not exist. The answer says
// so, and the cancel marker left for a task that may still arrive expires:
// nothing stays behind for ever to cancel a later task with that id.
func TestHostileCancelOfAnUnknownTaskLeavesNothingForever(t *testing.T) {
	s := startSecured(t)
	ctx := hostileCtx(t)
	s.runAgent(t, "agent-A", "A", runtime.Config{}, nil)
	client := s.connect(t, "client-C", nil)
	replies, err := client.NATS().SubscribeSync(s.topo.ReplySubject("C") + ".>")
	if err != nil {
		t.Fatal(err)
	}
	env, err := envelope.New("C", "A", envelope.TaskCancel, nil)
	if err != nil {
		t.Fatal(err)
	}
	env.TaskID, env.ReplyTo = "ghost", s.topo.ReplySubject("C")+"."+env.ID
	publishEnvelope(ctx, t, client, s.topo.TaskSubject("A", envelope.TaskCancel), env)
	m, err := replies.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply envelope.Envelope
	if err := envelope.Unmarshal(m.Data, &reply); err != nil {
		t.Fatal(err)
	}
	var state runtime.TaskState
	if err := reply.DecodePayload(&state); err != nil {
		t.Fatal(err)
	}
	if state.Found {
		t.Errorf("cancel of an unknown task answered %+v, want found: false", state)
	}
	// The marker carries a TTL: it cannot outlive it.
	st, err := s.admin.JetStream().Stream(ctx, "KV_"+s.topo.SnapshotBucket("A"))
	if err != nil {
		t.Fatal(err)
	}
	key, _ := snapshot.Key("A", "ghost")
	raw, err := st.GetLastMsgForSubject(ctx, "$KV."+s.topo.SnapshotBucket("A")+"."+key)
	if err != nil {
		t.Fatalf("the cancel marker: %v", err)
	}
	if ttl := raw.Header.Get("Nats-TTL"); ttl == "" {
		t.Fatalf("the cancel marker of an unknown task has no TTL (headers %v)", raw.Header)
	}
}

// advisor may publish JetStream advisories, as a system user, a monitoring
// tool or an account import might.
func advisor() *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"$JS.EVENT.ADVISORY.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_advisor.>"}},
	}
}

// Attack 7: someone who can publish advisories forges MAX_DELIVERIES
// advisories for B's sweeper, naming A's queued task and B's own task that
// was never delivered. The sweeper checks what the server knows before it
// moves anything: both tasks stay where they are.
func TestHostileForgedAdvisoriesCannotMoveTasks(t *testing.T) {
	s := startSecured(t, securedUser{"advisor", advisor()})
	ctx := hostileCtx(t)
	tasks := s.topo.TasksStream()
	// B's consumer, as B's runtime would have made it, with nothing delivered yet.
	if _, err := s.admin.JetStream().CreateOrUpdateConsumer(ctx, tasks, jetstream.ConsumerConfig{
		Durable: "B", FilterSubject: s.topo.AgentTasks("B"), AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	var victims []uint64
	for _, agent := range []string{"A", "B"} {
		env, err := envelope.New("C", agent, envelope.TaskRequest, "x")
		if err != nil {
			t.Fatal(err)
		}
		victims = append(victims, publishEnvelope(ctx, t, s.admin, s.topo.TaskSubject(agent, envelope.TaskRequest), env))
	}
	b := s.connect(t, "agent-B", nil)
	sw, err := dlq.NewSweeper(ctx, b.JetStream(), s.topo, "B", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sw.Stop(context.Background()) })

	attacker := s.connect(t, "advisor", nil)
	for _, seq := range victims {
		for _, consumer := range []string{"B", "A"} {
			adv, _ := json.Marshal(map[string]any{
				"type": "io.nats.jetstream.advisory.v1.max_deliver", "id": envelope.NewID(),
				"timestamp": time.Now().UTC(), "stream": tasks, "consumer": consumer, "stream_seq": seq, "deliveries": 5,
			})
			if err := attacker.NATS().Publish(s.topo.MaxDeliveriesAdvisories("B"), adv); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := attacker.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	advisories, err := s.admin.JetStream().Stream(ctx, s.topo.AdvisoriesStream())
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(ctx, t, "the sweeper to settle the forged advisories", func() bool {
		info, err := advisories.Info(ctx)
		return err == nil && info.State.LastSeq >= uint64(2*len(victims)) && info.State.Msgs == 0
	})
	for _, seq := range victims {
		if !s.taskStored(ctx, t, seq) {
			t.Errorf("task %d was removed from the tasks stream by a forged advisory", seq)
		}
	}
	if n, _ := sw.Swept(); n != 0 {
		t.Errorf("the sweeper dead-lettered %d tasks on forged advisories", n)
	}
	if n := sw.Refused(); n != uint64(2*len(victims)) {
		t.Errorf("the sweeper refused %d advisories, want %d", n, 2*len(victims))
	}
	for _, agent := range []string{"A", "B"} {
		if dead := s.deadLetters(ctx, t, agent); len(dead) != 0 {
			t.Errorf("dead letters filed as %s: %d", agent, len(dead))
		}
	}
}

// Attack 5b: a client names as reply_to a subject the agent may write to
// for its own purposes: its snapshot keys ($KV...), its dead letters. The
// agent's answer must not land there: a victim's checkpoint stays intact,
// and no forged dead letter appears.
func TestHostileReplyToCannotWriteIntoTheAgentsOwnSubjects(t *testing.T) {
	s := startSecured(t)
	ctx := hostileCtx(t)
	rt := s.runAgent(t, "agent-A", "A", runtime.Config{}, nil)
	own := s.connect(t, "agent-A", nil)
	kv, err := snapshot.NewKV(own.JetStream(), s.topo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Save(ctx, &snapshot.Snapshot{Agent: "A", TaskID: "victim", Status: snapshot.Working, Step: 2}, 0); err != nil {
		t.Fatal(err)
	}
	client := s.connect(t, "client-C", nil)
	key, _ := snapshot.Key("A", "victim")
	targets := []string{
		"$KV." + s.topo.SnapshotBucket("A") + "." + key,
		s.topo.DLQSubject("A", "forged"),
	}
	for _, replyTo := range targets {
		env, err := envelope.New("C", "A", envelope.TaskRequest, "x")
		if err != nil {
			t.Fatal(err)
		}
		env.ReplyTo = replyTo
		publishEnvelope(ctx, t, client, s.topo.TaskSubject("A", envelope.TaskRequest), env)
	}
	pollUntil(ctx, t, "A to settle both", func() bool { return settled(rt) >= uint64(len(targets)) })
	if err := own.NATS().Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := kv.Load(ctx, "A", "victim")
	if err != nil || got.Step != 2 || got.Status != snapshot.Working {
		t.Fatalf("the victim's snapshot after a reply_to aimed at it: %+v, %v", got, err)
	}
	st, err := s.admin.JetStream().Stream(ctx, s.topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, s.topo.DLQSubject("A", "forged")); err == nil {
		t.Fatal("a reply landed in the DLQ as a forged dead letter")
	}
}

// docs/security.md's threat model names the test that proves each of its
// lines: every name must be a test (or fuzz target) of this repository.
func TestThreatModelNamesTests(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := regexp.MustCompile(`(?s)## Threat model.*?\n## `).Find(doc)
	if section == nil {
		t.Fatal("docs/security.md has no threat model section")
	}
	names := regexp.MustCompile("`((?:Test|Fuzz)[A-Za-z0-9_]+)`").FindAllSubmatch(section, -1)
	if len(names) < 20 {
		t.Fatalf("the threat model names %d tests", len(names))
	}
	defined := map[string]bool{}
	err = filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]+)\(`).FindAllSubmatch(src, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !defined[string(n[1])] {
			t.Errorf("docs/security.md's threat model names %s, which is no test", n[1])
		}
	}
}
