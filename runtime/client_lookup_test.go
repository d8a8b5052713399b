package runtime_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// gatedDialer dials normally the first time; later dials (reconnects)
// wait until open is closed, so a test decides when a client is back.
type gatedDialer struct {
	mu    sync.Mutex
	dials int
	open  chan struct{}
}

func (g *gatedDialer) Dial(network, address string) (net.Conn, error) {
	g.mu.Lock()
	g.dials++
	first := g.dials == 1
	g.mu.Unlock()
	if !first {
		<-g.open
	}
	return net.Dial(network, address)
}

// Issue 14 item 6: a reply published while the client reconnects reaches
// no subscription; the re-sends are deduplicated, so nothing answers them.
// The client must find the reply in the replies stream, which keeps it
// for exactly this, instead of timing out for a task that succeeded.
func TestSendFindsAReplyPublishedWhileItReconnected(t *testing.T) {
	t.Parallel()
	srv := natstest.Start(t, natstest.Options{Listen: true})
	ctx := testkit.Context(t)
	agentConn, err := bus.Connect(ctx, srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer agentConn.Close()
	if err := bus.Provision(ctx, agentConn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	gate := &gatedDialer{open: make(chan struct{})}
	clientConn, err := bus.Connect(ctx, srv.ClientURL(), nats.SetCustomDialer(gate))
	if err != nil {
		t.Fatal(err)
	}
	defer clientConn.Close()
	defer func() {
		select {
		case <-gate.open:
		default:
			close(gate.open)
		}
	}()

	cons, err := agentConn.JetStream().CreateOrUpdateConsumer(ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "solo", FilterSubject: topo.AgentTasks("solo"), AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	c := clientWith(t, clientConn, runtime.RetryConfig{MaxRetries: 2, Backoff: resilience.Backoff{Base: 10 * time.Millisecond}, AttemptTimeout: 500 * time.Millisecond})
	type result struct {
		rep *envelope.Envelope
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := c.Send(ctx, to(t, "solo"))
		done <- result{rep, err}
	}()

	// The agent takes the task; the client's connection drops; the agent's
	// reply is stored while the client is away; then the client comes back.
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var req envelope.Envelope
	if err := envelope.Unmarshal(msg.Data(), &req); err != nil {
		t.Fatal(err)
	}
	if err := clientConn.NATS().ForceReconnect(); err != nil {
		t.Fatal(err)
	}
	rep, err := req.NewReply(envelope.TaskResponse, "pong")
	if err != nil {
		t.Fatal(err)
	}
	out, err := bus.EnvelopeMsg(req.ReplyTo, rep)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agentConn.JetStream().PublishMsg(ctx, out); err != nil {
		t.Fatal(err)
	}
	if err := msg.Ack(); err != nil {
		t.Fatal(err)
	}
	close(gate.open)

	r := <-done
	if r.err != nil {
		t.Fatalf("Send failed for a task whose reply is stored: %v (stats %+v)", r.err, c.Stats())
	}
	if r.rep.CorrelationID != req.ID {
		t.Fatalf("reply correlation id %q, want %q", r.rep.CorrelationID, req.ID)
	}
	if st := c.Stats(); recoveredOf(st) != 1 {
		t.Fatalf("stats %+v: want the reply recovered from the stream once", st)
	}
	if n := streamMsgs(t, agentConn, topo.TasksStream()); n != 0 {
		t.Fatalf("%d tasks left in the stream: the re-sends were stored again", n)
	}
}

func recoveredOf(st runtime.ClientStats) uint64 { return st.Recovered }
