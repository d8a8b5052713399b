package runtime

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// The execution index against a model (a map of names to the times they
// last ran), under a seeded schedule of names answered and dead-lettered,
// re-added, and a clock that jumps: what ran within the TTL is always
// found (with its dead-letter status), what never ran never is, and what
// is older than the TTL plus a prune period is gone (the index does not
// grow without bound).
func TestTheExecIndexKeepsWhatRanWithinTheTTLAndForgetsTheRest(t *testing.T) {
	const ttl = 2 * time.Minute
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, seed))
			now := time.Unix(1_700_000_000, 0)
			x := newExecIndex(ttl, now)
			x.sealAt = 16 + rng.IntN(64) // many runs, merged and pruned
			type ran struct{ answered, dead time.Time }
			model := map[string]*ran{}
			var names []string
			lastPrune := now
			check := func(name string) {
				t.Helper()
				m := model[name]
				seen, dead := x.lookup(x.hash('t', name))
				if other, _ := x.lookup(x.hash('k', name)); other {
					t.Fatalf("%s, indexed as a task id, was found as an idempotency key", name)
				}
				const unit, slack = time.Second, ttl/8 + 2*time.Second
				switch {
				case m == nil:
					if seen {
						t.Fatalf("%s never ran and was found", name)
					}
				case !m.answered.IsZero() && now.Sub(m.answered) <= ttl-unit:
					if !seen || dead {
						t.Fatalf("%s answered %v ago (TTL %v): seen %v dead %v", name, now.Sub(m.answered), ttl, seen, dead)
					}
				case (m.answered.IsZero() || now.Sub(m.answered) > ttl+slack) && !m.dead.IsZero() && now.Sub(m.dead) <= ttl-unit:
					if !seen || !dead {
						t.Fatalf("%s dead-lettered %v ago (TTL %v): seen %v dead %v", name, now.Sub(m.dead), ttl, seen, dead)
					}
				case (m.answered.IsZero() || now.Sub(m.answered) > ttl+slack) && (m.dead.IsZero() || now.Sub(m.dead) > ttl+slack):
					if seen {
						t.Fatalf("%s last ran %v / %v ago and is still found (TTL %v)", name, now.Sub(m.answered), now.Sub(m.dead), ttl)
					}
				}
			}
			for step := range 60_000 {
				if rng.IntN(100) == 0 {
					now = now.Add(time.Duration(rng.IntN(20_000)) * time.Millisecond)
				}
				if now.Sub(lastPrune) >= ttl/8 {
					x.prune(now)
					lastPrune = now
				}
				var name string
				if len(names) == 0 || rng.IntN(3) != 0 {
					name = fmt.Sprintf("task-%d-%d", seed, step)
					names = append(names, name)
				} else {
					name = names[rng.IntN(len(names))]
				}
				m := model[name]
				if m == nil {
					m = &ran{}
					model[name] = m
				}
				at := now.Add(-time.Duration(rng.IntN(3000)) * time.Millisecond) // a batch read late
				if rng.IntN(10) == 0 && m.answered.IsZero() {
					x.add(x.hash('t', name), true, at, now)
					m.dead = maxTime(m.dead, at)
				} else {
					x.add(x.hash('t', name), false, at, now)
					m.answered = maxTime(m.answered, at)
				}
				check(names[rng.IntN(len(names))])
				check(fmt.Sprintf("never-%d", step))
			}
			for _, name := range names {
				check(name)
			}
			now = now.Add(ttl + ttl/8 + 3*time.Second)
			x.prune(now)
			for _, name := range names {
				check(name)
			}
			if n := x.size(); n != 0 {
				t.Fatalf("%d slots left after every name expired", n)
			}
		})
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// BenchmarkExecIndex indexes a million tasks (a replica's record of 20 s
// at 50k tasks/s) and reports the live heap they cost, and the time of an
// add and of a lookup of a task that did not run (every new task's).
func BenchmarkExecIndex(b *testing.B) {
	const n = 1_000_000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("01JF%022d", i)
	}
	var x *execIndex
	b.Run("add", func(b *testing.B) {
		for b.Loop() {
			now := time.Now()
			x = newExecIndex(2*time.Minute, now)
			for _, name := range names {
				x.add(x.hash('t', name), false, now, now)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/task")
	})
	b.Run("heap", func(b *testing.B) {
		var before, after goruntime.MemStats
		for b.Loop() {
			x = nil
			goruntime.GC()
			goruntime.ReadMemStats(&before)
			now := time.Now()
			x = newExecIndex(2*time.Minute, now)
			for _, name := range names {
				x.add(x.hash('t', name), false, now, now)
			}
			goruntime.GC()
			goruntime.ReadMemStats(&after)
		}
		goruntime.KeepAlive(x)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/task")
	})
	misses := make([]execSlot, 1<<16)
	for i := range misses {
		misses[i] = x.hash('t', fmt.Sprint("never-", i))
	}
	b.Run("lookup-miss", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if seen, _ := x.lookup(misses[i%len(misses)]); seen {
				b.Fatal("found a task that never ran")
			}
			i++
		}
	})
}

// The committer's hand-written encoding of a batch reads back, with the
// struct tags, as the batch it wrote (what other replicas' watches and
// older versions decode).
func TestExecBatchEncoding(t *testing.T) {
	b := execBatch{Entries: []execEntry{
		{Task: "a"},
		{Task: "b", Key: "key", Replay: "7/1"},
		{Task: "c", Dead: true, Seq: 42, Verdict: "permanent", Cause: "no", Attempts: 3},
		{Task: "", Seq: 1 << 40},
	}}
	data, err := msgpack.Marshal(&b)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Entries []execEntry `msgpack:"e"`
	}
	if err := msgpack.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Entries, b.Entries) {
		t.Fatalf("read back %+v, wrote %+v", got.Entries, b.Entries)
	}
}

// BenchmarkExecBatchEncode encodes a full batch of plain tasks, as the
// committer does, against what reflection on the struct tags costs.
func BenchmarkExecBatchEncode(b *testing.B) {
	batch := execBatch{Entries: make([]execEntry, execBatchMax)}
	for i := range batch.Entries {
		batch.Entries[i] = execEntry{Task: fmt.Sprintf("01JF%022d", i)}
	}
	type tags execBatch // no EncodeMsgpack
	b.Run("hand-written", func(b *testing.B) {
		for b.Loop() {
			if _, err := msgpack.Marshal(&batch); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		for b.Loop() {
			if _, err := msgpack.Marshal((*tags)(&batch)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
