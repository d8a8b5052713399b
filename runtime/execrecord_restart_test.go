package runtime_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
)

// Seed 32088820: two replicas stay up across a server restart; a task runs
// on one of them after the restart, and a second copy of it (a client's
// re-send that the restarted server stored again, or a parked copy moved
// back beside it) reaches the other. That replica knows of the first run
// only through its watch of the records bucket, which must live through
// the restart. The watch stalled for ~14 s after each restart (until the
// client library noticed its consumer was gone), and the copies ran again.
func TestReplicasThatLiveThroughAServerRestartStillSeeEachOthersRuns(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ftopo := bus.Topology{} // file storage: the store outlives the server
	start := func(listen string) *bus.EmbeddedServer {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, Listen: listen, MaxStore: 1 << 30})
		if err != nil {
			t.Fatalf("start embedded NATS: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		})
		return srv
	}
	srv := start("127.0.0.1:0")
	u, err := url.Parse(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	ctx := testkit.Context(t)
	connect := func() *bus.Conn {
		conn, err := bus.Connect(ctx, srv.ClientURL(), nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(conn.Close)
		return conn
	}
	admin := connect()
	if err := bus.Provision(ctx, admin.JetStream(), ftopo); err != nil {
		t.Fatal(err)
	}
	if err := bus.ProvisionAgent(ctx, admin.JetStream(), ftopo, "once"); err != nil {
		t.Fatal(err)
	}
	var counts [2]runCounter
	rts := [2]*runtime.Runtime{startOn(t, connect(), ftopo, &counts[0]), startOn(t, connect(), ftopo, &counts[1])}

	if err := srv.Shutdown(ctx); err != nil { // the restart, both replicas up
		t.Fatal(err)
	}
	srv = start(u.Host)

	const n = 40
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		env, err := envelope.New("tester", "once", envelope.TaskRequest, "job")
		if err != nil {
			t.Fatal(err)
		}
		if msgs[i], err = bus.EnvelopeMsg(ftopo.TaskSubject("once", envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
		msgs[i].Header.Del(nats.MsgIdHdr) // each publish stored, as a re-send after a restart is
	}
	publish := func() {
		t.Helper()
		for _, m := range msgs {
			if _, err := admin.JetStream().PublishMsg(ctx, m); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish() // the replicas reconnect and run them
	testkit.WaitFor(t, "the tasks to run", func() bool { return counts[0].total()+counts[1].total() == n })
	// The replica that ran more of them stops; the other gets every second
	// copy, and knows the stopped one's runs only through its watch.
	gone := 0
	if counts[1].total() > counts[0].total() {
		gone = 1
	}
	stays := 1 - gone
	stopNow(t, rts[gone])
	defer stopNow(t, rts[stays])
	publish()
	testkit.WaitFor(t, "the second copies to be settled", func() bool {
		return rts[stays].Stats().Duplicates+uint64(counts[0].total()+counts[1].total()-n) == n
	})
	t.Logf("the stopped replica ran %d of the first copies; the one that stayed found %d duplicates", counts[gone].total(), rts[stays].Stats().Duplicates)
	for id := range counts[gone].runs {
		if k := counts[stays].runs[id]; k > 0 {
			t.Errorf("task %s ran on both replicas, %d times on the one that stayed", id, k)
		}
	}
}
