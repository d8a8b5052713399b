package console

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/nats-io/nats.go"
)

// fillDLQ stores n dead letters on file storage: agent echo 90%, billing
// 9%, rare 1%; reason permanent, every tenth max_attempts, every
// thousandth malformed with a distinct error.
func fillDLQ(b *testing.B, conn *bus.Conn, topo bus.Topology, n int) {
	store := dlq.NewStore(conn.JetStream(), topo)
	pub := bus.NewPublisher(conn.JetStream())
	const batch = 5000
	for start := 0; start < n; start += batch {
		msgs := make([]*nats.Msg, 0, batch)
		for i := start; i < min(n, start+batch); i++ {
			agent := "echo"
			switch {
			case i%100 == 7:
				agent = "rare"
			case i%100 < 10:
				agent = "billing"
			}
			reason, errText := dlq.ReasonPermanent, "invalid quantity for sku "+fmt.Sprint(i%500)
			if i%10 == 3 {
				reason, errText = dlq.ReasonMaxAttempts, "timeout talking to the ledger"
			}
			if i%1000 == 999 {
				reason, errText = dlq.ReasonMalformed, "disk full while decoding"
			}
			env, _ := envelope.New("bench", agent, envelope.TaskRequest, map[string]any{"sku": i, "note": "0123456789abcdef0123456789abcdef"})
			m, _ := bus.EnvelopeMsg(topo.TaskSubject(agent, envelope.TaskRequest), env)
			now := time.Now()
			rec := &dlq.Record{Data: m.Data, Header: m.Header, Reason: reason, Error: errText, Agent: agent,
				Subject: m.Subject, Stream: topo.TasksStream(), Sequence: uint64(i + 1), Deliveries: 3, FirstFailure: now, LastFailure: now}
			msgs = append(msgs, rec.Msg(store.Subject(rec)))
		}
		if _, err := pub.PublishBatch(context.Background(), msgs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDLQPages100k times the console's pages over 100,000 dead
// letters (file storage, as in production), end to end: an HTTP GET to the
// console, which reads the page from the server and renders it. Run with
//
//	go test -run '^$' -bench DLQPages100k -benchtime 20x ./internal/console
//
// "ms/page" is the mean; ns/op is the same in nanoseconds.
func BenchmarkDLQPages100k(b *testing.B) {
	const n = 100_000
	topo := bus.Topology{} // file storage
	srv := natstest.Start(b, natstest.Options{})
	conn := natstest.Connect(b, srv)
	if err := bus.Provision(context.Background(), conn.JetStream(), topo); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	fillDLQ(b, conn, topo, n)
	b.Logf("stored %d dead letters in %v", n, time.Since(start).Round(time.Millisecond))
	s, err := New(Config{Conn: conn, Topology: topo, Addr: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
	})
	pages := []struct{ name, path string }{
		{"first", "/dlq"},
		{"deep", "/dlq?after=90000"},
		{"latest", fmt.Sprintf("/dlq?after=%d", n-50)},
		{"agent-1pct", "/dlq?agent=rare"},
		{"agent-1pct-deep", "/dlq?agent=rare&after=90000"},
		{"reason-10pct", "/dlq?reason=max_attempts"},
		{"text-0.1pct", "/dlq?q=disk+full"},
		{"not-replayed", "/dlq?not_replayed=1"},
		{"entry", "/dlq/77777"},
		{"overview", "/"},
		{"agents", "/agents"},
	}
	get := func(b *testing.B, path string) {
		resp, err := http.Get(s.URL() + path)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
	run := func(prefix string) {
		for _, p := range pages {
			b.Run(prefix+p.name, func(b *testing.B) {
				get(b, p.path) // warm
				b.ResetTimer()
				t0 := time.Now()
				for range b.N {
					get(b, p.path)
				}
				b.ReportMetric(float64(time.Since(t0).Microseconds())/1000/float64(b.N), "ms/page")
			})
		}
	}
	run("")
	// With every entry replayed: 100,000 replay marks.
	store := dlq.NewStore(conn.JetStream(), topo)
	entries, err := store.List(context.Background(), dlq.Filter{})
	if err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	if res, err := store.Replay(context.Background(), entries, dlq.ReplayOptions{To: topo.TaskSubject("sink", envelope.TaskRequest)}); err != nil || res.Replayed != len(entries) {
		b.Fatalf("replay: %+v, %v", res, err)
	}
	b.Logf("replayed %d entries in %v", len(entries), time.Since(start).Round(time.Millisecond))
	run("marks100k-")
}
