package runtime

import (
	"fmt"
	"math/rand/v2"
	goruntime "runtime"
	"testing"
	"time"
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
