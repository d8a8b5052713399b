package runtime_test

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/metrics"
	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkConsumeVsRawWithMetrics is BenchmarkConsumeVsRaw with the
// Prometheus observer of package metrics on the runtime: the ratio to raw
// shows what metrics cost on the hot path.
func BenchmarkConsumeVsRawWithMetrics(b *testing.B) {
	const perRound = 20000
	srv := natstest.Start(b, natstest.Options{})
	conn := natstest.Connect(b, srv)
	if err := bus.Provision(context.Background(), conn.JetStream(), benchTopo); err != nil {
		b.Fatal(err)
	}
	m, err := metrics.New(prometheus.NewRegistry(), metrics.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var raw, rt []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		publishTasks(b, conn, "raw", perRound)
		publishTasks(b, conn, "bench", perRound)
		b.StartTimer()
		if i%2 == 0 {
			raw = append(raw, perRound/consumeRaw(b, conn, perRound).Seconds())
			rt = append(rt, perRound/consumeObserved(b, conn, perRound, m).Seconds())
		} else {
			rt = append(rt, perRound/consumeObserved(b, conn, perRound, m).Seconds())
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

// consumeObserved is consumeRuntime with m's observer (and scrape-time
// collector) on the runtime.
func consumeObserved(b *testing.B, conn *bus.Conn, n int, m *metrics.Metrics) time.Duration {
	obs := m.Agent("bench")
	rt, err := runtime.New(conn, runtime.Config{Agent: "bench", Topology: benchTopo, Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	if err := obs.Watch(rt); err != nil {
		b.Fatal(err)
	}
	return runNoop(b, rt, n)
}
