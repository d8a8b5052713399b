package runtime_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/internal/testkit/agenttest"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func clientWith(t *testing.T, conn *bus.Conn, rc runtime.RetryConfig) *runtime.Client {
	t.Helper()
	c, err := runtime.NewClient(conn, runtime.ClientConfig{Topology: topo, Retry: &rc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func to(t *testing.T, agent string) *envelope.Envelope {
	t.Helper()
	env, err := envelope.New("tester", agent, envelope.TaskRequest, "ping")
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func streamMsgs(t *testing.T, conn *bus.Conn, name string) uint64 {
	t.Helper()
	s, err := conn.JetStream().Stream(testkit.Context(t), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// Chaos table, message loss: no reply ever comes. The client re-sends
// MaxRetries times (same id: the server keeps one task), then times out.
func TestSendMessageLossRetriesThenTimesOut(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	c := clientWith(t, conn, runtime.RetryConfig{MaxRetries: 2, Backoff: resilience.Backoff{Base: 10 * time.Millisecond}, AttemptTimeout: 200 * time.Millisecond})
	_, err := c.Send(testkit.Context(t), to(t, "ghost"))
	if !errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	if got := c.Stats().Attempts; got != 3 {
		t.Fatalf("%d attempts, want 1 + MaxRetries = 3", got)
	}
	if n := streamMsgs(t, conn, topo.TasksStream()); n != 1 {
		t.Fatalf("tasks stream holds %d copies, want 1 (re-sends are deduplicated)", n)
	}
}

// Chaos table, server crash: retries, then a connection error.
func TestSendServerDownRetriesThenConnectionError(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{Listen: true})
	conn, err := bus.Connect(testkit.Context(t), srv.ClientURL(), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := bus.Provision(testkit.Context(t), conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	c := clientWith(t, conn, runtime.RetryConfig{MaxRetries: 2, Backoff: resilience.Backoff{Base: 10 * time.Millisecond}, AttemptTimeout: 300 * time.Millisecond})
	if err := srv.Shutdown(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	_, err = c.Send(testkit.Context(t), to(t, "echo"))
	if !errors.Is(err, resilience.ErrConnection) {
		t.Fatalf("err = %v, want ErrConnection", err)
	}
	if got := c.Stats().Attempts; got != 3 {
		t.Fatalf("%d attempts, want 3", got)
	}
}

// Chaos table, circuit open: an immediate error, no attempt made.
func TestSendCircuitOpenFailsFastWithoutAttempt(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	c := clientWith(t, conn, runtime.RetryConfig{AttemptTimeout: 100 * time.Millisecond,
		Breaker: &resilience.BreakerSettings{Threshold: 2, OpenTimeout: time.Minute}})
	for range 2 {
		if _, err := c.Send(testkit.Context(t), to(t, "ghost")); !errors.Is(err, resilience.ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
	}
	before := c.Stats().Attempts
	start := time.Now()
	_, err := c.Send(testkit.Context(t), to(t, "ghost"))
	if !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Fatalf("err = %v, want ErrCircuitOpen", err)
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("circuit-open error took %v, want it at once", took)
	}
	if got := c.Stats().Attempts; got != before {
		t.Fatalf("%d attempts made with the circuit open", got-before)
	}
	// Per target: another agent is unaffected.
	if st := c.Breakers().Get(topo.TaskSubject("other", envelope.TaskRequest)).State(); st != resilience.StateClosed {
		t.Errorf("other target's breaker is %v", st)
	}
}

// Chaos table, network partition: timeouts and retries, the breaker opens
// after the threshold, and closes again after recovery through one probe.
func TestSendPartitionOpensThenClosesTheBreaker(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{Listen: true})
	agentConn := natstest.Connect(t, srv) // the agent stays on the server's side
	if err := bus.Provision(testkit.Context(t), agentConn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	agenttest.Start(t, agentConn, runtime.Config{}, runtime.Echo)
	proxy := natstest.StartProxy(t, srv.ClientURL()[len("nats://"):])
	conn, err := bus.Connect(testkit.Context(t), proxy.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const openFor = time.Second
	c := clientWith(t, conn, runtime.RetryConfig{MaxRetries: 1, Backoff: resilience.Backoff{Base: 10 * time.Millisecond}, AttemptTimeout: 300 * time.Millisecond,
		Breaker: &resilience.BreakerSettings{Threshold: 3, OpenTimeout: openFor}})
	br := c.Breakers().Get(topo.TaskSubject("echo", envelope.TaskRequest))
	attempts := func() uint64 { return c.Stats().Attempts }

	if _, err := c.Send(testkit.Context(t), to(t, "echo")); err != nil {
		t.Fatalf("before the partition: %v", err)
	}
	proxy.Partition()
	// Send 1: two attempts time out (2 consecutive failures).
	if _, err := c.Send(testkit.Context(t), to(t, "echo")); !errors.Is(err, resilience.ErrTimeout) {
		t.Fatalf("send 1: %v, want ErrTimeout", err)
	}
	if attempts() != 3 || br.State() != resilience.StateClosed {
		t.Fatalf("after send 1: %d attempts, breaker %v", attempts(), br.State())
	}
	// Send 2: the third failure opens the breaker; its retry is refused.
	if _, err := c.Send(testkit.Context(t), to(t, "echo")); !errors.Is(err, resilience.ErrCircuitOpen) {
		t.Fatalf("send 2: %v, want ErrCircuitOpen after the threshold", err)
	}
	if attempts() != 4 || br.State() != resilience.StateOpen {
		t.Fatalf("after send 2: %d attempts, breaker %v", attempts(), br.State())
	}
	// Send 3: fails fast.
	if _, err := c.Send(testkit.Context(t), to(t, "echo")); !errors.Is(err, resilience.ErrCircuitOpen) || attempts() != 4 {
		t.Fatalf("send 3: %v after %d attempts", err, attempts())
	}
	proxy.Heal()
	testkit.WaitFor(t, "the breaker to half-open", func() bool { return br.State() == resilience.StateHalfOpen })
	// Send 4: the probe goes through, and closes the breaker.
	if _, err := c.Send(testkit.Context(t), to(t, "echo")); err != nil {
		t.Fatalf("send 4 (probe): %v", err)
	}
	if attempts() != 5 || br.State() != resilience.StateClosed {
		t.Fatalf("after the probe: %d attempts, breaker %v", attempts(), br.State())
	}
}

// fakeAgent answers every task of agent through raw nats.go with the
// replies reply() builds.
func fakeAgent(t *testing.T, conn *bus.Conn, agent string, reply func(req *envelope.Envelope) []*envelope.Envelope) {
	t.Helper()
	cons, err := conn.JetStream().CreateOrUpdateConsumer(testkit.Context(t), topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: agent, FilterSubject: topo.AgentTasks(agent), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var req envelope.Envelope
		if err := envelope.Unmarshal(m.Data(), &req); err != nil {
			t.Error(err)
			return
		}
		for _, rep := range reply(&req) {
			msg, _ := bus.EnvelopeMsg(req.ReplyTo, rep)
			if _, err := conn.JetStream().PublishMsg(context.Background(), msg); err != nil {
				t.Error(err)
			}
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

func TestSendNeverReturnsAReplyWithAnotherCorrelationID(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	stray := func(req *envelope.Envelope) *envelope.Envelope {
		rep, _ := req.NewReply(envelope.TaskResponse, "not yours")
		rep.ID = envelope.NewID()
		rep.CorrelationID = envelope.NewID()
		return rep
	}
	fakeAgent(t, conn, "liar", func(req *envelope.Envelope) []*envelope.Envelope {
		right, _ := req.NewReply(envelope.TaskResponse, "yours")
		return []*envelope.Envelope{stray(req), right}
	})
	fakeAgent(t, conn, "onlyliar", func(req *envelope.Envelope) []*envelope.Envelope {
		return []*envelope.Envelope{stray(req)}
	})
	c := clientWith(t, conn, runtime.RetryConfig{AttemptTimeout: 2 * time.Second})

	rep, err := c.Send(testkit.Context(t), to(t, "liar"))
	if err != nil {
		t.Fatal(err)
	}
	var got string
	_ = rep.DecodePayload(&got)
	if got != "yours" || c.Stats().Mismatched != 1 {
		t.Fatalf("got %q with %d mismatched discarded", got, c.Stats().Mismatched)
	}

	c2 := clientWith(t, conn, runtime.RetryConfig{AttemptTimeout: 300 * time.Millisecond})
	_, err = c2.Send(testkit.Context(t), to(t, "onlyliar"))
	if !errors.Is(err, resilience.ErrTimeout) || !errors.Is(err, resilience.ErrCorrelationMismatch) {
		t.Fatalf("err = %v, want a timeout that reports the mismatched reply", err)
	}
}

func TestSendFallsBackToABackupAgent(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	agenttest.Start(t, conn, runtime.Config{Agent: "backup"}, runtime.Echo)
	c := clientWith(t, conn, runtime.RetryConfig{AttemptTimeout: 200 * time.Millisecond})
	req := to(t, "primary") // no primary agent runs
	rep, err := c.Send(testkit.Context(t), req, runtime.WithFallback("backup"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sender != "backup" || rep.CorrelationID != envelope.DeriveID(req.ID, "fallback:backup") {
		t.Fatalf("reply from %s correlated to %s", rep.Sender, rep.CorrelationID)
	}
	// A permanent failure does not fall back.
	bad := to(t, "bad name")
	if _, err := c.Send(testkit.Context(t), bad, runtime.WithFallback("backup")); !errors.Is(err, resilience.ErrPermanent) {
		t.Fatalf("invalid recipient: err = %v, want a permanent error", err)
	}
}

// Issue 14 item 7: falling back left the primary's copy queued; when the
// primary came back it ran the task the backup had already answered.
func TestAFallbackLeavesThePrimaryNoCopyToRun(t *testing.T) {
	t.Parallel()
	_, conn := natstest.Provisioned(t, topo)
	agenttest.Start(t, conn, runtime.Config{Agent: "backup"}, runtime.Echo)
	c := clientWith(t, conn, runtime.RetryConfig{MaxRetries: 1, Backoff: resilience.Backoff{Base: 50 * time.Millisecond, Max: 100 * time.Millisecond},
		AttemptTimeout: 200 * time.Millisecond})
	req := to(t, "primary") // the primary is down: its copy waits in the stream
	if _, err := c.Send(testkit.Context(t), req, runtime.WithFallback("backup")); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	primary := agenttest.Start(t, conn, runtime.Config{Agent: "primary"}, func(context.Context, *runtime.Task) (any, error) {
		runs.Add(1)
		return "ran again", nil
	})
	testkit.WaitFor(t, "the primary to settle its copy", func() bool {
		s := primary.Stats()
		return s.DeadLettered+s.Succeeded > 0
	})
	if n := runs.Load(); n != 0 {
		t.Fatalf("the primary ran the task %d times after the backup had answered it", n)
	}
	if recs := dlqMessages(t, conn, 1); recs[0].Reason != dlq.ReasonExpired {
		t.Fatalf("the primary's copy was dead-lettered %s, want %s", recs[0].Reason, dlq.ReasonExpired)
	}
}

// The client's retry policy speaks package resilience's vocabulary: its
// defaults are resilience's zero values (jitter on), not a second set.
func TestDefaultRetryConfigUsesResiliencesDefaults(t *testing.T) {
	t.Parallel()
	rc := runtime.DefaultRetryConfig()
	if rc.Backoff != (resilience.Backoff{}) {
		t.Errorf("DefaultRetryConfig().Backoff = %+v, want resilience's zero value (1s, 60s, jitter on)", rc.Backoff)
	}
	if rc.Breaker != nil {
		t.Errorf("DefaultRetryConfig().Breaker = %+v, want nil (breakers off, as in the seed)", rc.Breaker)
	}
	if rc.MaxRetries != 3 || rc.AttemptTimeout != runtime.DefaultAttemptTimeout {
		t.Errorf("DefaultRetryConfig() = %+v, want 3 retries of %v", rc, runtime.DefaultAttemptTimeout)
	}
}
