package snapshot_test

import (
	"context"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
)

// benchTopo is the production default: file storage, history 5.
var benchTopo = bus.Topology{}

// benchChunk is how many operations of one kind run between switches;
// the kinds alternate (and swap order) so that both see the same server.
const benchChunk = 50

func benchStore(b *testing.B) (*snapshot.KV, jetstream.KeyValue) {
	srv := natstest.Start(b, natstest.Options{})
	conn := natstest.Connect(b, srv)
	return newKV(b, conn.JetStream(), benchTopo)
}

// checkpoint is a task's snapshot as the runtime writes it, with a
// 256-byte state.
func checkpoint() *snapshot.Snapshot {
	state := make([]byte, 256)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range state {
		state[i] = byte(r.IntN(256))
	}
	return &snapshot.Snapshot{
		Agent: "bench", TaskID: "01JBENCHTASK0000000000000", Step: 1, Running: 2,
		Owner: "replica-1.123456.1", Status: snapshot.Working, State: state, Updated: time.Now().UTC(),
	}
}

// side accumulates the time and (process-wide, in-process server
// included) allocations of one kind of operation.
type side struct {
	name   string
	d      time.Duration
	allocs uint64
	ops    int
	run    func(n int)
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// race runs the sides in alternating chunks of b.N operations each and
// reports each side's ns/op and allocs/op, and each other side's ratio
// to the first (the raw baseline), plus the stored value's size.
func race(b *testing.B, valueBytes int, sides ...*side) {
	b.ReportAllocs()
	b.ResetTimer()
	for done, round := 0, 0; done < b.N; round++ {
		n := min(benchChunk, b.N-done)
		for i := range sides {
			s := sides[(i+round)%len(sides)]
			m0, t0 := mallocs(), time.Now()
			s.run(n)
			s.d += time.Since(t0)
			s.allocs += mallocs() - m0
			s.ops += n
		}
		done += n
	}
	b.StopTimer()
	base := sides[0]
	for _, s := range sides {
		b.ReportMetric(float64(s.d.Nanoseconds())/float64(s.ops), s.name+"-ns/op")
		b.ReportMetric(float64(s.allocs)/float64(s.ops), s.name+"-allocs/op")
		if s != base {
			b.ReportMetric(float64(s.d)/float64(base.d), s.name+"/"+base.name)
		}
	}
	b.ReportMetric(float64(valueBytes), "value-bytes")
	b.ReportMetric(0, "ns/op") // the sum of all sides: meaningless
}

// BenchmarkCheckpointVsRawPut compares, on one file-storage server in the
// same run: a raw kv.Put of the same msgpack bytes (raw-put), a raw
// kv.Update on the last revision (raw-cas: the server's CAS alone), and
// KV.Save of a snapshot with a 256-byte state on the previous revision,
// the runtime's checkpoint path (encode, validate, CAS).
func BenchmarkCheckpointVsRawPut(b *testing.B) {
	ctx := context.Background()
	store, raw := benchStore(b)
	snap := checkpoint()
	blob, err := msgpack.Marshal(snap)
	if err != nil {
		b.Fatal(err)
	}
	rev, err := store.Save(ctx, snap, 0)
	if err != nil {
		b.Fatal(err)
	}
	casRev, err := raw.Create(ctx, "bench.raw-cas", blob)
	if err != nil {
		b.Fatal(err)
	}
	race(b, len(blob),
		&side{name: "raw-put", run: func(n int) {
			for range n {
				if _, err := raw.Put(ctx, "bench.raw-put", blob); err != nil {
					b.Fatal(err)
				}
			}
		}},
		&side{name: "raw-cas", run: func(n int) {
			for range n {
				if casRev, err = raw.Update(ctx, "bench.raw-cas", blob, casRev); err != nil {
					b.Fatal(err)
				}
			}
		}},
		&side{name: "checkpoint", run: func(n int) {
			for range n {
				snap.Step++
				snap.Updated = time.Now().UTC()
				if rev, err = store.Save(ctx, snap, rev); err != nil {
					b.Fatal(err)
				}
			}
		}},
	)
}

// BenchmarkLoadVsRawGet compares a raw kv.Get of a checkpoint's bytes
// with KV.Load (get, decode, validate), in the same run.
func BenchmarkLoadVsRawGet(b *testing.B) {
	ctx := context.Background()
	store, raw := benchStore(b)
	snap := checkpoint()
	if _, err := store.Save(ctx, snap, 0); err != nil {
		b.Fatal(err)
	}
	key, _ := snapshot.Key(snap.Agent, snap.TaskID)
	e, err := raw.Get(ctx, key)
	if err != nil {
		b.Fatal(err)
	}
	race(b, len(e.Value()),
		&side{name: "raw-get", run: func(n int) {
			for range n {
				if e, err := raw.Get(ctx, key); err != nil || len(e.Value()) == 0 {
					b.Fatal(err)
				}
			}
		}},
		&side{name: "load", run: func(n int) {
			for range n {
				if s, err := store.Load(ctx, snap.Agent, snap.TaskID); err != nil || len(s.State) != 256 {
					b.Fatal(err)
				}
			}
		}},
	)
}

// BenchmarkMemorySave is the in-memory store's checkpoint, for scale.
func BenchmarkMemorySave(b *testing.B) {
	ctx := context.Background()
	m := snapshot.NewMemory(0)
	snap := checkpoint()
	var rev uint64
	var err error
	b.ReportAllocs()
	for b.Loop() {
		snap.Step++
		if rev, err = m.Save(ctx, snap, rev); err != nil {
			b.Fatal(err)
		}
	}
}
