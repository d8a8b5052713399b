package runtime_test

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchTopo stores on disk, as production does.
var benchTopo = bus.Topology{}

// benchPayload is a map payload of about 256 bytes once encoded.
var benchPayload = map[string]any{
	"task":   "summarise",
	"text":   strings.Repeat("lorem ipsum ", 16),
	"lang":   "en",
	"max":    200,
	"detail": true,
}

// publishTasks stores n envelopes for agent and returns once all are acked.
func publishTasks(b *testing.B, conn *bus.Conn, agent string, n int) {
	b.Helper()
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		env, err := envelope.New("bench", agent, envelope.TaskRequest, benchPayload)
		if err != nil {
			b.Fatal(err)
		}
		if msgs[i], err = bus.EnvelopeMsg(benchTopo.TaskSubject(agent, envelope.TaskRequest), env); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := bus.NewPublisher(conn.JetStream()).PublishBatch(ctx, msgs); err != nil {
		b.Fatal(err)
	}
}

// consumeRaw is the hand-written nats.go loop the runtime is compared
// with: pull consume with the same prefetch, plain ack, no decode.
func consumeRaw(b *testing.B, conn *bus.Conn, n int) time.Duration {
	ctx := context.Background()
	cons, err := conn.JetStream().CreateOrUpdateConsumer(ctx, benchTopo.TasksStream(), jetstream.ConsumerConfig{
		Durable: "raw", FilterSubject: benchTopo.AgentTasks("raw"), AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: bus.DefaultMaxAckPending, AckWait: bus.DefaultAckWait,
	})
	if err != nil {
		b.Fatal(err)
	}
	var count atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if count.Add(1) == int64(n) {
			close(done)
		}
	}, jetstream.PullMaxMessages(bus.DefaultPrefetch), jetstream.PullExpiry(bus.DefaultPullExpiry))
	if err != nil {
		b.Fatal(err)
	}
	<-done
	elapsed := time.Since(start)
	cc.Stop()
	<-cc.Closed()
	return elapsed
}

// consumeRuntime runs the runtime with a no-op handler (decode, validate,
// dispatch and ack included) over n tasks.
func consumeRuntime(b *testing.B, conn *bus.Conn, n int) time.Duration {
	rt, err := runtime.New(conn, runtime.Config{Agent: "bench", Topology: benchTopo})
	if err != nil {
		b.Fatal(err)
	}
	return runNoop(b, rt, n)
}

// runNoop starts rt with a no-op handler, returns how long it took to
// handle n tasks, and stops it.
func runNoop(b *testing.B, rt *runtime.Runtime, n int) time.Duration {
	var count atomic.Int64
	done := make(chan struct{})
	rt.Handle(envelope.TaskRequest, func(context.Context, *runtime.Task) (any, error) {
		if count.Add(1) == int64(n) {
			close(done)
		}
		return nil, nil
	})
	start := time.Now()
	if err := rt.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	<-done
	elapsed := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.Stop(ctx); err != nil {
		b.Fatal(err)
	}
	return elapsed
}

// BenchmarkConsumeVsRaw measures, in the same run and on the same server,
// the runtime's consume throughput and the raw nats.go loop's, over rounds
// of 20,000 envelopes each (one round per b.N), and reports both rates and
// their ratio (median of rounds). Run with -benchtime=5x for five rounds.
func BenchmarkConsumeVsRaw(b *testing.B) {
	const perRound = 20000
	srv := natstest.Start(b, natstest.Options{})
	conn := natstest.Connect(b, srv)
	if err := bus.Provision(context.Background(), conn.JetStream(), benchTopo); err != nil {
		b.Fatal(err)
	}
	var raw, rt []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		publishTasks(b, conn, "raw", perRound)
		publishTasks(b, conn, "bench", perRound)
		b.StartTimer()
		// Alternate the order so neither side always runs on a warmer server.
		if i%2 == 0 {
			raw = append(raw, perRound/consumeRaw(b, conn, perRound).Seconds())
			rt = append(rt, perRound/consumeRuntime(b, conn, perRound).Seconds())
		} else {
			rt = append(rt, perRound/consumeRuntime(b, conn, perRound).Seconds())
			raw = append(raw, perRound/consumeRaw(b, conn, perRound).Seconds())
		}
	}
	b.StopTimer()
	ratios := make([]float64, len(raw))
	for i := range raw {
		ratios[i] = rt[i] / raw[i]
	}
	b.ReportMetric(median(raw), "raw-msgs/s")
	b.ReportMetric(median(rt), "runtime-msgs/s")
	b.ReportMetric(median(ratios), "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkSendRoundTrip measures one Client.Send to the echo agent and
// back over JetStream (task stream in, replies stream out), as `agent send`
// does after connecting. Reports p50 and p99 latency.
func BenchmarkSendRoundTrip(b *testing.B) {
	srv := natstest.Start(b, natstest.Options{})
	conn := natstest.Connect(b, srv)
	ctx := context.Background()
	if err := bus.Provision(ctx, conn.JetStream(), benchTopo); err != nil {
		b.Fatal(err)
	}
	rt, err := runtime.New(conn, runtime.Config{Agent: "echo", Topology: benchTopo})
	if err != nil {
		b.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, runtime.Echo)
	if err := rt.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = rt.Stop(ctx) }()
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Topology: benchTopo})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	lat := make([]float64, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		env, err := envelope.New("bench", "echo", envelope.TaskRequest, benchPayload)
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := client.Send(ctx, env); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, float64(time.Since(start).Microseconds()))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-us")
	b.ReportMetric(lat[len(lat)*99/100], "p99-us")
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
