package runtime

import (
	"context"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
)

// BenchmarkAttemptRecord measures what attempt accounting costs, on the
// paths that pay it: a failure or a hand-back (one write), a redelivery
// (one read), a task that ends after one (one delete). A first delivery
// that succeeds pays none of them.
func BenchmarkAttemptRecord(b *testing.B) {
	topo := bus.Topology{Memory: true}
	srv := natstest.Start(b, natstest.Options{})
	conn := natstest.Connect(b, srv)
	ctx := context.Background()
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		b.Fatal(err)
	}
	if err := bus.ProvisionAgent(ctx, conn.JetStream(), topo, "bench"); err != nil {
		b.Fatal(err)
	}
	rt, err := New(conn, Config{Agent: "bench", Topology: topo})
	if err != nil {
		b.Fatal(err)
	}
	if rt.records.open(ctx) == nil {
		b.Fatal("records bucket not opened")
	}
	var write, read, del time.Duration
	b.ResetTimer()
	for i := range b.N {
		j := job{d: &bus.Delivery{StreamSeq: uint64(i + 1), NumDelivered: 1}}
		t0 := time.Now()
		rt.noteFailed(&j)
		t1 := time.Now()
		j2 := job{d: &bus.Delivery{StreamSeq: uint64(i + 1), NumDelivered: 2}}
		rt.account(&j2)
		t2 := time.Now()
		rt.forget(&j2)
		t3 := time.Now()
		if j2.acct.rec.Failed != 1 || j2.acct.before != 1 {
			b.Fatalf("accounting read back %+v", j2.acct)
		}
		write += t1.Sub(t0)
		read += t2.Sub(t1)
		del += t3.Sub(t2)
	}
	b.ReportMetric(float64(write.Microseconds())/float64(b.N), "write-us")
	b.ReportMetric(float64(read.Microseconds())/float64(b.N), "read-us")
	b.ReportMetric(float64(del.Microseconds())/float64(b.N), "delete-us")
}
