package dlq_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var benchTopo = bus.Topology{} // file storage, as in production

// fillBench stores n dead letters of agent "echo" (256-byte payloads).
func fillBench(b *testing.B, conn *bus.Conn, n int, firstSeq uint64) {
	store := dlq.NewStore(conn.JetStream(), benchTopo)
	msgs := make([]*nats.Msg, n)
	payload := make([]byte, 200)
	for i := range msgs {
		env, _ := envelope.New("bench", "echo", envelope.TaskRequest, payload)
		m, _ := bus.EnvelopeMsg(benchTopo.TaskSubject("echo", envelope.TaskRequest), env)
		now := time.Now()
		rec := &dlq.Record{Data: m.Data, Header: m.Header, Reason: dlq.ReasonMaxAttempts, Agent: "echo",
			Subject: m.Subject, Stream: benchTopo.TasksStream(), Sequence: firstSeq + uint64(i), Deliveries: 3,
			FirstFailure: now, LastFailure: now}
		msgs[i] = rec.Msg(store.Subject(rec))
	}
	if _, err := bus.NewPublisher(conn.JetStream()).PublishBatch(context.Background(), msgs); err != nil {
		b.Fatal(err)
	}
}

// rawReplay is the hand-written loop an operator could write with nats.go:
// fetch every DLQ message and republish it to its original subject under
// a new message id, waiting for all acks (no filters, no replay marks).
func rawReplay(b *testing.B, js jetstream.JetStream, n int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	cons, err := js.OrderedConsumer(ctx, benchTopo.DLQStream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	futures := make([]jetstream.PubAckFuture, 0, n)
	for len(futures) < n {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		for m := range batch.Messages() {
			h := nats.Header{}
			for k, v := range m.Headers() {
				h[k] = v
			}
			md, _ := m.Metadata()
			h.Set(jetstream.MsgIDHeader, "raw-"+strconv.FormatUint(md.Sequence.Stream, 10)+"-"+strconv.FormatInt(start.UnixNano(), 10))
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: h.Get(dlq.HeaderSubject), Data: m.Data(), Header: h})
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

func jetagentReplay(b *testing.B, store *dlq.Store, n int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	entries, err := store.List(ctx, dlq.Filter{})
	if err != nil {
		b.Fatal(err)
	}
	res, err := store.Replay(ctx, entries, dlq.ReplayOptions{Force: true})
	if err != nil || res.Replayed != n {
		b.Fatalf("replayed %d of %d: %v", res.Replayed, n, err)
	}
	return time.Since(start)
}

// BenchmarkReplayVsRaw replays 5,000 DLQ entries per round with
// dlq.Store (list, replay marks, new ids) and with the raw loop, in the
// same run, and reports both rates and their ratio (median of rounds).
func BenchmarkReplayVsRaw(b *testing.B) {
	const n = 5000
	srv := natstest.Start(b, natstest.Options{})
	conn := natstest.Connect(b, srv)
	ctx := context.Background()
	if err := bus.Provision(ctx, conn.JetStream(), benchTopo); err != nil {
		b.Fatal(err)
	}
	store := dlq.NewStore(conn.JetStream(), benchTopo)
	tasks, _ := conn.JetStream().Stream(ctx, benchTopo.TasksStream())
	dlqStream, _ := conn.JetStream().Stream(ctx, benchTopo.DLQStream())
	var raw, ours []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_ = dlqStream.Purge(ctx)
		fillBench(b, conn, n, uint64(i*n+1))
		b.StartTimer()
		ours = append(ours, n/jetagentReplay(b, store, n).Seconds())
		raw = append(raw, n/rawReplay(b, conn.JetStream(), n).Seconds())
		b.StopTimer()
		_ = tasks.Purge(ctx)
		b.StartTimer()
	}
	b.StopTimer()
	ratios := make([]float64, len(raw))
	for i := range raw {
		ratios[i] = ours[i] / raw[i]
	}
	b.ReportMetric(median(raw), "raw-entries/s")
	b.ReportMetric(median(ours), "replay-entries/s")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(0, "ns/op")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
