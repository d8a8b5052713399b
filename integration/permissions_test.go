package integration

// Least-privilege NATS permissions for jetagent's roles (docs/security.md),
// enforced by a real nats-server (embedded, with users and permissions,
// JetStream on disk): an agent, the replay tool and a client do their jobs
// with the documented permissions and nothing more, and are refused
// everything else. Nothing here needs Docker.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/agentcli"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/jetagent/jetagent/internal/replaycli"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/runtime/beacon"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// jsAPI prefixes every JetStream API subject.
const jsAPI = "$JS.API."

// agentPermissions lets agent consume its own tasks, answer, dead-letter,
// checkpoint in its own snapshot bucket, count attempts in its own
// records bucket, park its tasks and sweep its own poison tasks.
func agentPermissions(topo bus.Topology, agent string) *server.Permissions {
	tasks, adv, snaps := topo.TasksStream(), topo.AdvisoriesStream(), topo.SnapshotBucket(agent)
	records := topo.RecordsBucket(agent)
	sweeper := agent + "_sweeper"
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			// Start-up: bus.Provision and the stores check that the streams
			// and buckets exist as configured (read-only once provisioned).
			jsAPI + "STREAM.INFO." + tasks,
			jsAPI + "STREAM.INFO." + topo.RepliesStream(),
			jsAPI + "STREAM.INFO." + topo.DLQStream(),
			jsAPI + "STREAM.INFO." + adv,
			jsAPI + "STREAM.INFO.KV_" + topo.ReplaysBucket(),
			// Its own buckets, checked (bus.ProvisionAgent) when first needed.
			jsAPI + "STREAM.INFO.KV_" + snaps,
			jsAPI + "STREAM.INFO.KV_" + records,
			// The agent's durable consumer: created with its filter in the
			// subject (the server checks it matches the request's), pulled,
			// its deliveries settled; its info for readiness and backlog.
			jsAPI + "CONSUMER.CREATE." + tasks + "." + agent + "." + topo.AgentTasks(agent),
			jsAPI + "CONSUMER.MSG.NEXT." + tasks + "." + agent,
			jsAPI + "CONSUMER.INFO." + tasks + "." + agent,
			"$JS.ACK." + tasks + "." + agent + ".>",
			"$JS.ACK.*.*." + tasks + "." + agent + ".>", // ack subjects, v2 format
			// Replies (to any client) and the agent's own dead letters; and
			// a consumer on those only (any name, its filter pinned), to
			// check what the DLQ holds before trusting a duplicate answer.
			topo.ReplySubject(">"),
			topo.AgentDLQ(agent),
			jsAPI + "CONSUMER.CREATE." + topo.DLQStream() + ".*." + topo.AgentDLQ(agent),
			// Snapshots, in the agent's own bucket: write, read.
			"$KV." + snaps + "." + agent + ".>",
			jsAPI + "DIRECT.GET.KV_" + snaps + ".$KV." + snaps + "." + agent + ".>",
			// Its own records bucket (provisioned with bus.ProvisionAgent):
			// attempt records, keys att.<stream seq>, written (create,
			// compare-and-swap, delete) and read.
			"$KV." + records + ".att.>",
			jsAPI + "DIRECT.GET.KV_" + records + ".$KV." + records + ".att.>",
			// Execution records, keys exec.<runtime id>.<ulid>: written in batches, and
			// read by every replica with a KV watch (an ordered consumer of
			// any name on those keys, with its flow control).
			"$KV." + records + ".exec.>",
			jsAPI + "CONSUMER.CREATE.KV_" + records + ".*.$KV." + records + ".exec.>",
			jsAPI + "CONSUMER.DELETE.KV_" + records + ".*",
			"$JS.FC.KV_" + records + ".>",
			// A re-sent task that ran already gets its stored reply again.
			jsAPI + "DIRECT.GET." + topo.RepliesStream() + "." + topo.ReplySubject(">"),
			// Parking: tasks of a subject whose breaker is open are copied
			// to the agent's parked subjects, and later moved back to its
			// own task subjects (read and removed by sequence, below).
			topo.AgentParked(agent),
			topo.AgentTasks(agent),
			// The sweeper: its durable consumer on the agent's
			// MAX_DELIVERIES advisories, and the task an advisory names,
			// read and removed by stream sequence.
			jsAPI + "CONSUMER.CREATE." + adv + "." + sweeper + "." + topo.MaxDeliveriesAdvisories(agent),
			jsAPI + "CONSUMER.MSG.NEXT." + adv + "." + sweeper,
			jsAPI + "CONSUMER.INFO." + adv + "." + sweeper, // after a consume error: is the consumer gone?
			"$JS.ACK." + adv + "." + sweeper + ".>",
			"$JS.ACK.*.*." + adv + "." + sweeper + ".>",
			jsAPI + "STREAM.MSG.GET." + tasks,
			jsAPI + "STREAM.MSG.DELETE." + tasks,
			// Its status reports (breakers, running tasks) for the console.
			beacon.Subject(topo, agent),
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			// Responses, publish acks and pulled messages: its own inbox.
			"_INBOX_agent-" + agent + ".>",
		}},
	}
}

// replayPermissions lets the operator's tools (the replay tool and the
// console) read the dead letters, replay them as tasks, record replays and
// delete dead letters one by one; the console also reads the agents'
// consumers, the task snapshots of the agents named and their status
// reports, and cancels tasks.
func replayPermissions(topo bus.Topology, agents ...string) *server.Permissions {
	dlqStream, replays := topo.DLQStream(), topo.ReplaysBucket()
	var snapshots []string
	for _, a := range agents {
		snaps := topo.SnapshotBucket(a)
		snapshots = append(snapshots,
			jsAPI+"STREAM.INFO.KV_"+snaps,
			jsAPI+"CONSUMER.CREATE.KV_"+snaps+".*.$KV."+snaps+".>",
			jsAPI+"CONSUMER.DELETE.KV_"+snaps+".*",
			"$JS.FC.KV_"+snaps+".>")
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append([]string{
			jsAPI + "STREAM.INFO." + dlqStream,
			jsAPI + "STREAM.INFO.KV_" + replays,
			// list, stats, replay, purge: an ephemeral consumer on the DLQ.
			jsAPI + "CONSUMER.CREATE." + dlqStream + ".*",
			jsAPI + "CONSUMER.MSG.NEXT." + dlqStream + ".*",
			jsAPI + "CONSUMER.DELETE." + dlqStream + ".*",
			// show, replay by ID; purge.
			jsAPI + "STREAM.MSG.GET." + dlqStream,
			jsAPI + "STREAM.MSG.DELETE." + dlqStream,
			// Replay marks: read with a watcher (an ordered consumer with
			// flow control), written and purged as keys.
			jsAPI + "CONSUMER.CREATE.KV_" + replays + ".*.$KV." + replays + ".>",
			jsAPI + "CONSUMER.DELETE.KV_" + replays + ".*",
			jsAPI + "DIRECT.GET.KV_" + replays + ".$KV." + replays + ".>",
			"$JS.FC.KV_" + replays + ".>",
			"$KV." + replays + ".>",
			// Replayed tasks, to any agent (and the console's task.cancel).
			topo.AgentTasks("*"),
			// The console, read-only: the agents' consumers and queued
			// tasks; and, below, the task snapshots of each agent named
			// (list and history watchers on its own bucket).
			jsAPI + "STREAM.INFO." + topo.TasksStream(),
			jsAPI + "CONSUMER.LIST." + topo.TasksStream(),
		}, snapshots...)},
		Subscribe: &server.SubjectPermission{Allow: []string{
			"_INBOX_replay.>",
			// The console: the agents' status reports.
			beacon.Subjects(topo),
		}},
	}
}

// clientPermissions lets client send tasks to the agents named and read
// its own replies.
func clientPermissions(topo bus.Topology, client string, agents ...string) *server.Permissions {
	var tasks []string
	for _, a := range agents {
		tasks = append(tasks, topo.AgentTasks(a))
	}
	// A reply missed during a reconnect is looked up in the replies
	// stream: a direct get of the client's own reply subjects.
	lookup := "$JS.API.DIRECT.GET." + topo.RepliesStream() + "." + topo.ReplySubject(client) + ".>"
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append(tasks, lookup)},
		Subscribe: &server.SubjectPermission{Allow: []string{
			topo.ReplySubject(client) + ".>",
			"_INBOX_client-" + client + ".>",
		}},
	}
}

// secured is a running nats-server that authorizes jetagent's roles:
// admin (everything: it provisions), agent-A, agent-B, replay, client-C.
type secured struct {
	url      string
	topo     bus.Topology
	pw       map[string]string // by user
	pwFile   map[string]string // a file holding the password, by user
	admin    *bus.Conn
	logs     *testio.Buffer // the server's log
	password []string       // every password, to look for leaks
}

// securedUser is a NATS user beyond the documented roles, e.g. an
// attacker's with the narrower or odd permissions a test needs.
type securedUser struct {
	name  string
	perms *server.Permissions
}

func startSecured(t *testing.T, extra ...securedUser) *secured {
	t.Helper()
	topo := bus.Topology{}
	s := &secured{topo: topo, pw: map[string]string{}, pwFile: map[string]string{}, logs: &testio.Buffer{}}
	dir := t.TempDir()
	users := []*server.User{}
	for _, u := range append([]securedUser{
		{"admin", nil},
		{"agent-A", agentPermissions(topo, "A")},
		{"agent-B", agentPermissions(topo, "B")},
		{"replay", replayPermissions(topo, "A", "B")},
		{"client-C", clientPermissions(topo, "C", "A")},
	}, extra...) {
		pw := "pw-" + strings.ToLower(envelope.NewID())
		s.pw[u.name], s.password = pw, append(s.password, pw)
		s.pwFile[u.name] = filepath.Join(dir, u.name+".password")
		if err := os.WriteFile(s.pwFile[u.name], []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		users = append(users, &server.User{Username: u.name, Password: pw, Permissions: u.perms})
	}
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true,
		JetStream: true, StoreDir: filepath.Join(dir, "js"), JetStreamMaxStore: 1 << 30, JetStreamMaxMemory: 64 << 20,
		Users: users,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetLogger(serverLog{s.logs}, true, false)
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
		for _, pw := range s.password {
			if strings.Contains(s.logs.String(), pw) {
				t.Errorf("the server's log shows a password")
			}
		}
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	s.url = srv.ClientURL()
	s.admin = s.connect(t, "admin", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, s.admin.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	for _, agent := range []string{"A", "B"} {
		if err := bus.ProvisionAgent(ctx, s.admin.JetStream(), topo, agent); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// flags returns the security settings of user, as a command would take
// them (the password from a file, the user's own inbox prefix).
func (s *secured) flags(user string) natsflags.Flags {
	f := natsflags.Flags{User: user, PasswordFile: s.pwFile[user]}
	if user != "admin" {
		f.InboxPrefix = "_INBOX_" + user
	}
	return f
}

// connect connects as user through natsflags, closed when the test ends.
func (s *secured) connect(t *testing.T, user string, extra []nats.Option) *bus.Conn {
	t.Helper()
	f := s.flags(user)
	opts, err := f.Options()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, s.url, append(opts, extra...)...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(conn.Close)
	return conn
}

// cliArgs are the connection flags of user for agent send and replay.
func (s *secured) cliArgs(user string) []string {
	return []string{"--nats", s.url, "--user", user, "--password-file", s.pwFile[user], "--inbox-prefix", "_INBOX_" + user}
}

type cliResult struct {
	code        int
	out, stderr string
}

func runAgentCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errb testio.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := agentcli.Main(ctx, args, &out, &errb)
	return cliResult{code, out.String(), errb.String()}
}

func runReplayCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errb testio.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code := replaycli.Main(ctx, args, replaycli.IO{In: strings.NewReader(""), Out: &out, Err: &errb})
	return cliResult{code, out.String(), errb.String()}
}

// An agent, the replay tool and a client, each with the documented
// permissions only, do their whole job: the agent starts (provisioning
// check, consumer, snapshots bucket, sweeper), answers the client's tasks,
// checkpoints (task.cancel, state.query), dead-letters a malformed task,
// has its sweeper dead-letter a task that hangs it; the replay tool lists,
// replays and purges. No permission is refused on the way, and no password
// shows in any output.
func TestLeastPrivilegeRolesDoTheirJobs(t *testing.T) {
	s := startSecured(t)
	var agentLog testio.Buffer
	log := slog.New(slog.NewTextHandler(&agentLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	nf := s.flags("agent-A")
	log.Info("connecting", "nats", &nf) // as run.go would: no secret in it
	agent := s.connect(t, "agent-A", []nats.Option{natsflags.LogAsyncErrors(log)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// What `agent run` does on a provisioned server: check, then run.
	if err := bus.Provision(ctx, agent.JetStream(), s.topo); err != nil {
		t.Fatalf("provisioning check as agent-A: %v", err)
	}
	if err := bus.ProvisionAgent(ctx, agent.JetStream(), s.topo, "A"); err != nil {
		t.Fatalf("provisioning check of A's own buckets as agent-A: %v", err)
	}
	release := make(chan struct{})
	var released atomic.Bool
	t.Cleanup(func() {
		if released.CompareAndSwap(false, true) {
			close(release)
		}
	})
	rt, err := runtime.New(agent, runtime.Config{
		Agent: "A", Topology: s.topo, Logger: log,
		Consumer:       bus.ConsumerConfig{AckWait: time.Second, MaxDeliver: 2},
		HandlerTimeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, task *runtime.Task) (any, error) {
		var p string
		if task.Decode(&p) == nil && p == "hang" {
			<-release // a poison task: hangs past its deadline, ignoring ctx
		}
		return runtime.Echo(ctx, task)
	})
	if err := rt.Start(ctx); err != nil {
		t.Fatalf("start as agent-A: %v", err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		if err := rt.Stop(sctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	if err := rt.Ready(ctx); err != nil {
		t.Fatalf("ready (consumer info) as agent-A: %v", err)
	}
	if _, err := rt.Backlog(ctx); err != nil {
		t.Fatalf("backlog as agent-A: %v", err)
	}

	var outputs []string
	send := func(args ...string) map[string]any {
		t.Helper()
		r := runAgentCLI(t, append(append([]string{"send", "--to", "A", "--client", "C"}, s.cliArgs("client-C")...), args...)...)
		outputs = append(outputs, r.out, r.stderr)
		if r.code != 0 {
			t.Fatalf("agent send %v as client-C: exit %d: %s", args, r.code, r.stderr)
		}
		var reply map[string]any
		if err := json.Unmarshal([]byte(r.out), &reply); err != nil {
			t.Fatalf("reply %q: %v", r.out, err)
		}
		return reply
	}
	if reply := send("--payload", `{"hello":"world"}`); !reflect.DeepEqual(reply["payload"], map[string]any{"hello": "world"}) {
		t.Errorf("echo reply = %v", reply)
	}
	// Snapshots in the agent's own bucket: written by task.cancel (a marker
	// for a task not seen yet), read by state.query.
	if reply := send("--type", "task.cancel", "--task-id", "t1"); !strings.Contains(fmt.Sprint(reply["payload"]), "cancelled") {
		t.Errorf("task.cancel reply = %v", reply)
	}
	if reply := send("--type", "state.query", "--task-id", "t1"); !strings.Contains(fmt.Sprint(reply["payload"]), "status:cancelled") {
		t.Errorf("state.query reply = %v", reply)
	}

	// A malformed task, and a poison one, published by the client.
	client := s.connect(t, "client-C", nil)
	subject := s.topo.TaskSubject("A", envelope.TaskRequest)
	if _, err := client.JetStream().Publish(ctx, subject, []byte("not an envelope")); err != nil {
		t.Fatal(err)
	}
	poison, err := envelope.New("cli", "A", envelope.TaskRequest, "hang")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.NewPublisher(client.JetStream()).PublishEnvelope(ctx, subject, poison); err != nil {
		t.Fatal(err)
	}
	// The agent dead-letters the first, and the second once it hung
	// MaxDeliver (2) times.
	store := dlq.NewStore(s.admin.JetStream(), s.topo)
	var entries []*dlq.Entry
	pollUntil(ctx, t, "two dead letters", func() bool {
		entries, err = store.List(ctx, dlq.Filter{})
		return err == nil && len(entries) == 2
	})
	reasons := map[dlq.Reason]uint64{}
	for _, e := range entries {
		reasons[e.Reason] = e.Seq
	}
	if len(reasons) != 2 || reasons[dlq.ReasonMalformed] == 0 || reasons[dlq.ReasonMaxDeliveries] == 0 {
		t.Fatalf("dead letters: %v", reasons)
	}
	if released.CompareAndSwap(false, true) {
		close(release) // the poison task is harmless from now on
	}

	// The replay tool: list, replay the swept task, purge it.
	replay := func(args ...string) string {
		t.Helper()
		r := runReplayCLI(t, append(args, s.cliArgs("replay")...)...)
		outputs = append(outputs, r.out, r.stderr)
		if r.code != 0 {
			t.Fatalf("replay %v as replay: exit %d: %s", args, r.code, r.stderr)
		}
		return r.out
	}
	var listed []map[string]any
	if err := json.Unmarshal([]byte(replay("list", "--json")), &listed); err != nil || len(listed) != 2 {
		t.Fatalf("replay list: %v, %v", listed, err)
	}
	replay("stats")
	replay("show", fmt.Sprint(reasons[dlq.ReasonMaxDeliveries]))
	before := rt.Stats().Succeeded
	if out := replay("replay", "--reason", "max_deliveries", "--yes"); !strings.Contains(out, "replayed 1,") {
		t.Errorf("replay replay: %s", out)
	}
	pollUntil(ctx, t, "the replayed task to succeed", func() bool { return rt.Stats().Succeeded > before })
	if out := replay("purge", "--replayed", "--yes"); !strings.Contains(out, "purged 1 entry") {
		t.Errorf("replay purge: %s", out)
	}
	if err := json.Unmarshal([]byte(replay("list", "--json")), &listed); err != nil || len(listed) != 1 || listed[0]["reason"] != string(dlq.ReasonMalformed) {
		t.Errorf("after purge: %v, %v", listed, err)
	}

	// Nothing was refused; no password shows anywhere.
	if strings.Contains(agentLog.String(), "permission denied") {
		t.Errorf("the agent was refused a permission:\n%s", agentLog.String())
	}
	outputs = append(outputs, agentLog.String())
	for _, o := range outputs {
		if strings.Contains(o, "refused") {
			t.Errorf("a command was refused a permission: %s", o)
		}
		for _, pw := range s.password {
			if strings.Contains(o, pw) {
				t.Errorf("output shows a password: %s", o)
			}
		}
	}
}

// docs/security.md shows the permission sets above: its nats-server
// configuration parses to the same users and permissions, and its Go code
// is the code of this file.
func TestSecurityDocMatchesTheTestedPermissions(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "security.md"))
	if err != nil {
		t.Fatal(err)
	}
	conf := regexp.MustCompile("(?s)```conf\n(.*?)```").FindSubmatch(doc)
	if conf == nil {
		t.Fatal("docs/security.md has no ```conf block")
	}
	for _, v := range []string{"ADMIN_PASSWORD", "AGENT_A_PASSWORD", "REPLAY_PASSWORD", "CLIENT_C_PASSWORD"} {
		t.Setenv(v, "pw-"+v)
	}
	path := filepath.Join(t.TempDir(), "nats-server.conf")
	if err := os.WriteFile(path, conf[1], 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("the documented configuration does not load: %v", err)
	}
	topo := bus.Topology{}
	want := map[string]*server.Permissions{
		"admin":    nil,
		"agent-A":  agentPermissions(topo, "A"),
		"replay":   replayPermissions(topo, "A"),
		"client-C": clientPermissions(topo, "C", "A"),
	}
	if len(opts.Users) != len(want) {
		t.Fatalf("%d users in the documented configuration, want %d", len(opts.Users), len(want))
	}
	for _, u := range opts.Users {
		w, ok := want[u.Username]
		if !ok {
			t.Errorf("unexpected user %q", u.Username)
			continue
		}
		if wantPw := "pw-" + strings.ToUpper(strings.ReplaceAll(u.Username, "-", "_")) + "_PASSWORD"; u.Password != wantPw {
			t.Errorf("user %s: password %q, want %q (from the environment)", u.Username, u.Password, wantPw)
		}
		if w == nil {
			if u.Permissions != nil {
				t.Errorf("user %s: permissions %+v, want none", u.Username, u.Permissions)
			}
			continue
		}
		if u.Permissions == nil {
			t.Errorf("user %s: no permissions", u.Username)
			continue
		}
		compare := func(what string, got, want *server.SubjectPermission) {
			if !reflect.DeepEqual(got, want) {
				t.Errorf("user %s %s:\n documented %v\n tested     %v", u.Username, what, got, want)
			}
		}
		compare("publish", u.Permissions.Publish, w.Publish)
		compare("subscribe", u.Permissions.Subscribe, w.Subscribe)
	}

	src, err := os.ReadFile("permissions_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"agentPermissions", "replayPermissions", "clientPermissions"} {
		code := regexp.MustCompile(`(?s)\nfunc ` + fn + `\(.*?\n}\n`).Find(src)
		if code == nil || !bytes.Contains(doc, bytes.TrimSpace(code)) {
			t.Errorf("docs/security.md does not show func %s as in permissions_test.go", fn)
		}
	}
}

// serverLog keeps a nats-server's log lines (debug included), to check
// that no password shows in them.
type serverLog struct{ w *testio.Buffer }

func (l serverLog) logf(f string, v ...any) { fmt.Fprintf(l.w, f+"\n", v...) }

func (l serverLog) Noticef(f string, v ...any) { l.logf(f, v...) }
func (l serverLog) Warnf(f string, v ...any)   { l.logf(f, v...) }
func (l serverLog) Fatalf(f string, v ...any)  { l.logf(f, v...) }
func (l serverLog) Errorf(f string, v ...any)  { l.logf(f, v...) }
func (l serverLog) Debugf(f string, v ...any)  { l.logf(f, v...) }
func (l serverLog) Tracef(f string, v ...any)  { l.logf(f, v...) }
