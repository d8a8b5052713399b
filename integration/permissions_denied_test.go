package integration

// The refusals: what each role's user may not do, as the server reports it,
// and what the commands print then (never a secret).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// expectDenied runs op on a fresh connection of user whose context ends
// when the server reports a permissions violation (natsflags.FailFast),
// and checks that the server refused exactly op on subject ("publish" or
// "subscribe"). A refused request returns at once with context.Canceled.
func (s *secured) expectDenied(t *testing.T, user, op, subject string, fn func(ctx context.Context, conn *bus.Conn) error) {
	t.Helper()
	ctx, denied, stop := natsflags.FailFast(context.Background())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn := s.connect(t, user, []nats.Option{denied})
	defer conn.Close()
	start := time.Now()
	err := fn(ctx, conn)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("%s %s %q: err = %v, want context.Canceled (the violation ended ctx)", user, op, subject, err)
	}
	<-ctx.Done()
	v := natsflags.Violation(ctx)
	var pe *natsflags.PermissionError
	if !errors.As(v, &pe) || !errors.Is(v, nats.ErrPermissionViolation) {
		t.Fatalf("%s %s %q: no permissions violation (%v, ctx: %v)", user, op, subject, err, context.Cause(ctx))
	}
	if pe.Op != op || pe.Subject != subject {
		t.Errorf("%s: refused %s %q, want %s %q (%v)", user, pe.Op, pe.Subject, op, subject, pe.Err)
	}
	verb := map[string]string{"publish": "Publish", "subscribe": "Subscription"}[op]
	if want := fmt.Sprintf("nats: permissions violation: Permissions Violation for %s to %q", verb, subject); !strings.HasPrefix(pe.Err.Error(), want) {
		t.Errorf("nats.go error %q, want prefix %q", pe.Err, want)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("%s %s %q: the refusal took %v", user, op, subject, d)
	}
}

// An agent's user cannot take another agent's tasks (neither through a
// consumer on its filter, nor by pulling its consumer, nor by listening to
// its subjects or to others' inboxes), cannot purge or delete the DLQ,
// cannot read or write another agent's snapshots, cannot pose as another
// agent on the DLQ or send tasks.
func TestAgentCannotReachBeyondItsPermissions(t *testing.T) {
	s := startSecured(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tasks := s.topo.TasksStream()
	// B's consumer and a snapshot of B's, as B would have made them.
	if _, err := s.admin.JetStream().CreateOrUpdateConsumer(ctx, tasks, jetstream.ConsumerConfig{
		Durable: "B", FilterSubject: s.topo.AgentTasks("B"), AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	adminKV, err := snapshot.NewKV(s.admin.JetStream(), s.topo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adminKV.Save(ctx, &snapshot.Snapshot{Agent: "B", TaskID: "t1", Status: snapshot.Working, Step: 3}, 0); err != nil {
		t.Fatal(err)
	}

	consumerOf := func(durable, filter string) func(context.Context, *bus.Conn) error {
		return func(ctx context.Context, c *bus.Conn) error {
			_, err := c.JetStream().CreateOrUpdateConsumer(ctx, tasks, jetstream.ConsumerConfig{
				Durable: durable, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy,
			})
			return err
		}
	}
	t.Run("consumer on B's tasks", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", jsAPI+"CONSUMER.CREATE."+tasks+".B.jetagent.tasks.B.>",
			consumerOf("B", s.topo.AgentTasks("B")))
	})
	t.Run("own durable, B's filter", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", jsAPI+"CONSUMER.CREATE."+tasks+".A.jetagent.tasks.B.>",
			consumerOf("A", s.topo.AgentTasks("B")))
	})
	t.Run("pull B's consumer", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", jsAPI+"CONSUMER.MSG.NEXT."+tasks+".B", func(ctx context.Context, c *bus.Conn) error {
			_, err := c.NATS().RequestWithContext(ctx, jsAPI+"CONSUMER.MSG.NEXT."+tasks+".B", []byte(`{"batch":1}`))
			return err
		})
	})
	t.Run("listen to B's task subjects", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "subscribe", "jetagent.tasks.B.>", func(_ context.Context, c *bus.Conn) error {
			_, err := c.NATS().SubscribeSync("jetagent.tasks.B.>")
			return err
		})
	})
	t.Run("listen to every inbox", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "subscribe", "_INBOX.>", func(_ context.Context, c *bus.Conn) error {
			_, err := c.NATS().SubscribeSync("_INBOX.>")
			return err
		})
	})
	t.Run("purge the DLQ", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", jsAPI+"STREAM.PURGE."+s.topo.DLQStream(), func(ctx context.Context, c *bus.Conn) error {
			st, err := c.JetStream().Stream(ctx, s.topo.DLQStream()) // stream info is allowed
			if err != nil {
				return fmt.Errorf("stream info: %w", err)
			}
			return st.Purge(ctx)
		})
	})
	t.Run("delete a dead letter", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", jsAPI+"STREAM.MSG.DELETE."+s.topo.DLQStream(), func(ctx context.Context, c *bus.Conn) error {
			st, err := c.JetStream().Stream(ctx, s.topo.DLQStream())
			if err != nil {
				return fmt.Errorf("stream info: %w", err)
			}
			return st.DeleteMsg(ctx, 1)
		})
	})
	t.Run("open B's snapshot bucket", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", jsAPI+"STREAM.INFO.KV_JETAGENT_SNAPSHOTS_B", func(ctx context.Context, c *bus.Conn) error {
			kv, err := snapshot.NewKV(c.JetStream(), s.topo)
			if err != nil {
				return err
			}
			_, err = kv.Load(ctx, "B", "t1")
			return err
		})
	})
	t.Run("read B's snapshot", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", jsAPI+"DIRECT.GET.KV_JETAGENT_SNAPSHOTS_B.$KV.JETAGENT_SNAPSHOTS_B.B.t1", func(ctx context.Context, c *bus.Conn) error {
			_, err := c.NATS().RequestWithContext(ctx, jsAPI+"DIRECT.GET.KV_JETAGENT_SNAPSHOTS_B.$KV.JETAGENT_SNAPSHOTS_B.B.t1", nil)
			return err
		})
	})
	t.Run("overwrite B's snapshot", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", "$KV.JETAGENT_SNAPSHOTS_B.B.t1", func(ctx context.Context, c *bus.Conn) error {
			_, err := c.JetStream().Publish(ctx, "$KV."+s.topo.SnapshotBucket("B")+".B.t1", []byte("forged"))
			return err
		})
	})
	t.Run("dead-letter as B", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", "jetagent.dlq.B.task.request", func(ctx context.Context, c *bus.Conn) error {
			_, err := c.JetStream().Publish(ctx, "jetagent.dlq.B.task.request", []byte("x"))
			return err
		})
	})
	t.Run("send a task", func(t *testing.T) {
		s.expectDenied(t, "agent-A", "publish", "jetagent.tasks.B.task.request", func(ctx context.Context, c *bus.Conn) error {
			_, err := c.JetStream().Publish(ctx, "jetagent.tasks.B.task.request", []byte("x"))
			return err
		})
	})

	// Its own snapshots and durable stay within reach (the same bucket,
	// the same consumer API).
	own := s.connect(t, "agent-A", nil)
	kv, err := snapshot.NewKV(own.JetStream(), s.topo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Save(ctx, &snapshot.Snapshot{Agent: "A", TaskID: "t1", Status: snapshot.Working, Step: 1}, 0); err != nil {
		t.Fatalf("save own snapshot: %v", err)
	}
	if got, err := kv.Load(ctx, "A", "t1"); err != nil || got.Step != 1 {
		t.Fatalf("load own snapshot: %v, %v", got, err)
	}
	// The filter is in the subject the permission names, and the server
	// refuses a request whose body asks for another filter (10131).
	raw, err := json.Marshal(map[string]any{"stream_name": tasks, "config": map[string]any{
		"durable_name": "A", "filter_subject": s.topo.AgentTasks("B"), "ack_policy": "explicit"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := own.NATS().RequestWithContext(ctx, jsAPI+"CONSUMER.CREATE."+tasks+".A."+s.topo.AgentTasks("A"), raw)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Error *struct {
			ErrCode int    `json:"err_code"`
			Desc    string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil || resp.Error == nil || resp.Error.ErrCode != 10131 {
		t.Fatalf("consumer create with a mismatched body: %s (%v)", msg.Data, err)
	}

	// Without FailFast, nats.go reports the refusal only to the error
	// handler (and LastError); the request itself waits for its deadline.
	var handled atomic.Value
	plain := s.connect(t, "agent-A", []nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		handled.Store(err)
	})})
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	_, err = plain.JetStream().CreateOrUpdateConsumer(pctx, tasks, jetstream.ConsumerConfig{Durable: "B", FilterSubject: s.topo.AgentTasks("B")})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("refused consumer create without FailFast: err = %v, want context.DeadlineExceeded", err)
	}
	want := `nats: permissions violation: Permissions Violation for Publish to "$JS.API.CONSUMER.CREATE.JETAGENT_TASKS.B.jetagent.tasks.B.>"`
	if le := plain.NATS().LastError(); !errors.Is(le, nats.ErrPermissionViolation) || !strings.HasPrefix(le.Error(), want) {
		t.Errorf("LastError = %v, want %s", le, want)
	}
	pollUntil(ctx, t, "the error handler", func() bool { return handled.Load() != nil })
	if he := handled.Load().(error); !errors.Is(he, nats.ErrPermissionViolation) {
		t.Errorf("error handler got %v", he)
	}
}

// A client can only send tasks to the agents it is allowed and read its own
// replies; it cannot touch the DLQ. The replay tool can delete dead letters
// one by one but not purge the stream, nor consume tasks, nor write
// snapshots, nor read tasks off the wire. The commands say which
// permission was refused, at once.
func TestClientAndReplayToolStayInTheirLanes(t *testing.T) {
	s := startSecured(t)
	dlqStream := s.topo.DLQStream()
	purge := func(ctx context.Context, c *bus.Conn) error {
		_, err := c.NATS().RequestWithContext(ctx, jsAPI+"STREAM.PURGE."+dlqStream, nil)
		return err
	}
	t.Run("client purges the DLQ", func(t *testing.T) {
		s.expectDenied(t, "client-C", "publish", jsAPI+"STREAM.PURGE."+dlqStream, purge)
	})
	t.Run("client reads another client's replies", func(t *testing.T) {
		s.expectDenied(t, "client-C", "subscribe", "jetagent.replies.D.>", func(_ context.Context, c *bus.Conn) error {
			_, err := c.NATS().SubscribeSync("jetagent.replies.D.>")
			return err
		})
	})
	t.Run("replay purges the whole DLQ", func(t *testing.T) {
		s.expectDenied(t, "replay", "publish", jsAPI+"STREAM.PURGE."+dlqStream, purge)
	})
	t.Run("replay consumes tasks", func(t *testing.T) {
		s.expectDenied(t, "replay", "publish", jsAPI+"CONSUMER.CREATE.JETAGENT_TASKS.A.jetagent.tasks.A.>", func(ctx context.Context, c *bus.Conn) error {
			_, err := c.JetStream().CreateOrUpdateConsumer(ctx, s.topo.TasksStream(), jetstream.ConsumerConfig{Durable: "A", FilterSubject: s.topo.AgentTasks("A")})
			return err
		})
	})
	t.Run("replay writes snapshots", func(t *testing.T) {
		// The operator's user reads checkpoints (the console shows them)
		// but never writes one: cancelling goes through the agent.
		s.expectDenied(t, "replay", "publish", "$KV.JETAGENT_SNAPSHOTS_A.t1", func(ctx context.Context, c *bus.Conn) error {
			_, err := c.JetStream().Publish(ctx, "$KV.JETAGENT_SNAPSHOTS_A.t1", []byte("forged"))
			return err
		})
	})
	t.Run("replay reads tasks off the wire", func(t *testing.T) {
		s.expectDenied(t, "replay", "subscribe", "jetagent.tasks.>", func(_ context.Context, c *bus.Conn) error {
			_, err := c.NATS().SubscribeSync("jetagent.tasks.>")
			return err
		})
	})

	// The commands fail at once, naming what was refused.
	for _, tc := range []struct {
		name string
		run  func() cliResult
		want string
	}{
		{"replay purge as client-C", func() cliResult {
			return runReplayCLI(t, append([]string{"purge", "--yes"}, s.cliArgs("client-C")...)...)
		}, `replay: the NATS server refused this user permission to publish "$JS.API.STREAM.INFO.JETAGENT_DLQ"`},
		{"agent send to B as client-C", func() cliResult {
			return runAgentCLI(t, append([]string{"send", "--to", "B", "--client", "C", "--timeout", "30s"}, s.cliArgs("client-C")...)...)
		}, `agent: the NATS server refused this user permission to publish "jetagent.tasks.B.task.request"`},
		{"agent send with another client's name", func() cliResult {
			return runAgentCLI(t, append([]string{"send", "--to", "A", "--client", "D", "--timeout", "30s"}, s.cliArgs("client-C")...)...)
		}, `agent: the NATS server refused this user permission to subscribe "jetagent.replies.D.>"`},
	} {
		start := time.Now()
		r := tc.run()
		if r.code != 1 || !strings.HasPrefix(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 1 and %q", tc.name, r.code, r.stderr, tc.want)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s: took %v", tc.name, d)
		}
		for _, pw := range s.password {
			if strings.Contains(r.out+r.stderr, pw) {
				t.Errorf("%s: output shows a password", tc.name)
			}
		}
	}
}

// Wrong or right, a password given by flag, file, environment or URL never
// shows in the commands' output; bad combinations are usage errors (2).
func TestCommandsNeverPrintSecrets(t *testing.T) {
	s := startSecured(t)
	const wrong = "wrong-SECRET-password"
	urlWithCreds := strings.Replace(s.url, "nats://", "nats://client-C:"+wrong+"@", 1)
	cases := []struct {
		name string
		env  map[string]string
		args []string
		code int
		want string
	}{
		{"wrong --password", nil, []string{"--nats", s.url, "--user", "client-C", "--password", wrong}, 1, "Authorization Violation"},
		{"wrong password from the environment", map[string]string{natsflags.EnvUser: "client-C", natsflags.EnvPassword: wrong},
			[]string{"--nats", s.url}, 1, "Authorization Violation"},
		{"wrong password in the URL", nil, []string{"--nats", urlWithCreds}, 1, "client-C:xxxxx@"},
		{"right password, two ways to authenticate", map[string]string{natsflags.EnvToken: wrong},
			[]string{"--nats", s.url, "--user", "client-C", "--password", s.pw["client-C"]}, 2, "JETAGENT_NATS_TOKEN and --user are set"},
	}
	for _, tc := range cases {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		for _, r := range []cliResult{
			runAgentCLI(t, append([]string{"send", "--to", "A", "--timeout", "5s"}, tc.args...)...),
			runReplayCLI(t, append([]string{"list"}, tc.args...)...),
		} {
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("%s: exit %d, stderr %q; want %d and %q", tc.name, r.code, r.stderr, tc.code, tc.want)
			}
			for _, secret := range append([]string{wrong}, s.password...) {
				if strings.Contains(r.out+r.stderr, secret) {
					t.Errorf("%s: output shows a secret: %s", tc.name, r.stderr)
				}
			}
		}
		for k := range tc.env {
			t.Setenv(k, "")
		}
	}
}
