package integration

import (
	"bufio"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// containerServer starts NATS in a container (JetStream on a volume) and
// returns it with a provisioned connection that reconnects quickly.
func containerServer(t *testing.T) (*NATSContainer, *bus.Conn) {
	t.Helper()
	srv := startNATS(t, NATSOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, srv.URL(), nats.ReconnectWait(100*time.Millisecond), nats.IgnoreDiscoveredServers())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	if err := bus.Provision(ctx, conn.JetStream(), bus.Topology{}); err != nil {
		t.Fatal(err)
	}
	return srv, conn
}

// taskMsgs builds n task envelopes for agent replying to replyTo; mutate,
// when set, changes each envelope before it is encoded.
func taskMsgs(t *testing.T, agent, replyTo string, n int, mutate func(i int, e *envelope.Envelope)) ([]*nats.Msg, []string) {
	t.Helper()
	topo := bus.Topology{}
	msgs := make([]*nats.Msg, n)
	ids := make([]string, n)
	for i := range msgs {
		env, err := envelope.New("chaos", agent, envelope.TaskRequest, i)
		if err != nil {
			t.Fatal(err)
		}
		env.ReplyTo = replyTo
		if mutate != nil {
			mutate(i, env)
		}
		ids[i] = env.ID
		if msgs[i], err = bus.EnvelopeMsg(topo.TaskSubject(agent, envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
	}
	return msgs, ids
}

// ledgerCounts reads a ledger file: how many times each envelope id was
// processed.
func ledgerCounts(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			counts[line]++
		}
	}
	return counts
}

// streamCount returns how many messages stream holds under subject.
func streamCount(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, subject string) uint64 {
	t.Helper()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// pollUntil calls cond every 50ms until it holds or ctx ends.
func pollUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}
