package runtime

import (
	"cmp"
	"hash/maphash"
	"slices"
	"time"
)

// execIndex is the in-memory index of the execution record: which task
// ids, idempotency keys and replays ran in the last ttl, and which of them
// were dead-lettered rather than answered. It is sized for sustained load
// (a replica indexes every task of the last ttl, millions at tens of
// thousands a second), so it keeps no names: an 80-bit keyed hash of each
// (seeds drawn per process, so no sender can aim at a collision; the
// chance that a new task is taken for one that ran is below n/2^80 for n
// indexed), with a 16-bit age stamp, in 12-byte slots without pointers.
// New names go to a small map; every execSealAt of them are sorted into a
// run, and runs of equal size are merged (a binary counter: about log2 of
// n/execSealAt runs, each slot copied as many times), dropping what
// expired. About 12 bytes a task, plus the merge in progress.
//
// Dead letters are few: they are kept apart, by hash, and an answer
// always wins over a dead letter of the same name. Not safe for
// concurrent use (execRecords holds its lock).
type execIndex struct {
	seeds  [3][2]maphash.Seed // per kind: two 64-bit hashes
	base   time.Time          // stamp 0
	unit   time.Duration      // a stamp's tick
	ttl    uint32             // in units
	sealAt int                // names in the map that make a run

	recent map[execSlot]uint16 // answered, not sealed yet: hash -> stamp
	runs   []execRun           // sealed; sizes decrease
	dead   map[execSlot]uint32 // dead-lettered: hash -> full stamp
}

// execSlot is a hash (64 bits in [0] and [1], 16 more in the top half of
// [2]) and, in a run, the low 16 bits of its stamp in the bottom half of
// [2]. As a map key the stamp bits are zero.
type execSlot [3]uint32

// execRun is a sorted run of slots.
type execRun struct {
	slots  []execSlot
	oldest uint32 // the full stamp of its oldest slot
}

// execSealAt is how many new names the map holds before they are sorted
// into a run.
const execSealAt = 4096

func newExecIndex(ttl time.Duration, now time.Time) *execIndex {
	// A tick of a second, coarser for a TTL past 2 hours: ages stay below
	// 8192 ticks, far from the 65536 at which a 16-bit stamp wraps.
	unit := max(time.Second, (ttl+8191)/8192)
	return &execIndex{
		seeds: [3][2]maphash.Seed{
			{maphash.MakeSeed(), maphash.MakeSeed()},
			{maphash.MakeSeed(), maphash.MakeSeed()},
			{maphash.MakeSeed(), maphash.MakeSeed()},
		},
		base:   now.Add(-2 * ttl), // batches stored up to a TTL ago get stamps too
		unit:   unit,
		ttl:    uint32((ttl + unit - 1) / unit),
		sealAt: execSealAt,
		recent: make(map[execSlot]uint16),
		dead:   make(map[execSlot]uint32),
	}
}

// hash returns the slot of name s of kind ('t' a task id, 'k' an
// idempotency key, 'p' a replay).
func (x *execIndex) hash(kind byte, s string) execSlot {
	seeds := &x.seeds[0]
	switch kind {
	case 'k':
		seeds = &x.seeds[1]
	case 'p':
		seeds = &x.seeds[2]
	}
	a, b := maphash.String(seeds[0], s), maphash.String(seeds[1], s)
	return execSlot{uint32(a >> 32), uint32(a), uint32(b>>48) << 16}
}

// stamp is at in ticks since base, at most now's.
func (x *execIndex) stamp(at, now time.Time) uint32 {
	if at.After(now) { // the server's clock ahead of ours
		at = now
	}
	if !at.After(x.base) {
		return 0
	}
	return uint32(at.Sub(x.base) / x.unit)
}

// full returns the full stamp of a slot's 16-bit stamp s, seen at stamp now.
func full(now uint32, s uint16) uint32 {
	return now - uint32(uint16(now)-s)
}

func (x *execIndex) expired(now, stamp uint32) bool { return now-stamp > x.ttl }

func (x *execIndex) empty() bool {
	return len(x.recent) == 0 && len(x.runs) == 0 && len(x.dead) == 0
}

// add notes that h ran at at: dead when it was dead-lettered.
func (x *execIndex) add(h execSlot, dead bool, at, now time.Time) {
	nowS, s := x.stamp(now, now), x.stamp(at, now)
	if dead {
		if x.answered(h) {
			return // an answer is never replaced by a dead letter
		}
		if old, ok := x.dead[h]; !ok || old < s {
			x.dead[h] = s
		}
		return
	}
	if len(x.dead) != 0 {
		delete(x.dead, h)
	}
	if old, ok := x.recent[h]; !ok || uint16(nowS)-old > uint16(nowS)-uint16(s) {
		x.recent[h] = uint16(s)
	}
	if len(x.recent) >= x.sealAt {
		x.seal(nowS)
	}
}

// lookup reports whether h ran, and whether it was dead-lettered (and
// never answered).
func (x *execIndex) lookup(h execSlot) (seen, dead bool) {
	if x.answered(h) {
		return true, false
	}
	_, dead = x.dead[h]
	return dead, dead
}

func (x *execIndex) answered(h execSlot) bool {
	if _, ok := x.recent[h]; ok {
		return true
	}
	for i := range x.runs {
		if x.runs[i].has(h) {
			return true
		}
	}
	return false
}

// has reports whether h is in the run. Hashes are uniform, so an
// interpolation search finds h's place in a few probes (a few cache
// misses in a large run, where a binary search walks through twenty).
func (r *execRun) has(h execSlot) bool {
	s := r.slots
	k := prefix(h)
	lo, hi := 0, len(s)-1
	for hi-lo > 8 {
		klo, khi := prefix(s[lo]), prefix(s[hi])
		if k < klo || k > khi {
			return false
		}
		span := khi - klo
		if span == 0 {
			break
		}
		f := float64(k-klo) / float64(span)
		m := lo + int(f*float64(hi-lo))
		m = min(max(m, lo+1), hi-1)
		switch c := cmpSlot(s[m], h); {
		case c == 0:
			return true
		case c < 0:
			lo = m
		default:
			hi = m
		}
	}
	for _, t := range s[lo : hi+1] {
		if cmpSlot(t, h) == 0 {
			return true
		}
	}
	return false
}

// prefix is a slot's first 64 bits of hash.
func prefix(s execSlot) uint64 { return uint64(s[0])<<32 | uint64(s[1]) }

// cmpSlot orders slots by hash, ignoring stamps.
func cmpSlot(a, b execSlot) int {
	switch {
	case a[0] != b[0]:
		return cmp.Compare(a[0], b[0])
	case a[1] != b[1]:
		return cmp.Compare(a[1], b[1])
	default:
		return cmp.Compare(a[2]>>16, b[2]>>16)
	}
}

// seal sorts the map into a run and merges runs of equal size.
func (x *execIndex) seal(now uint32) {
	if len(x.recent) == 0 {
		return
	}
	r := execRun{slots: make([]execSlot, 0, len(x.recent)), oldest: now}
	for h, s := range x.recent {
		h[2] |= uint32(s)
		r.slots = append(r.slots, h)
		r.oldest = min(r.oldest, full(now, s))
	}
	clear(x.recent)
	slices.SortFunc(r.slots, cmpSlot)
	x.runs = append(x.runs, r)
	for n := len(x.runs); n >= 2 && len(x.runs[n-2].slots) <= len(x.runs[n-1].slots); n = len(x.runs) {
		x.runs[n-2] = x.merge(&x.runs[n-2], &x.runs[n-1], now)
		x.runs[n-1] = execRun{}
		x.runs = x.runs[:n-1]
	}
}

// merge returns the union of runs a and b without what expired; a name
// in both keeps its newer stamp.
func (x *execIndex) merge(a, b *execRun, now uint32) execRun {
	out := execRun{slots: make([]execSlot, 0, len(a.slots)+len(b.slots)), oldest: now}
	keep := func(s execSlot) {
		f := full(now, uint16(s[2]))
		if !x.expired(now, f) {
			out.slots = append(out.slots, s)
			out.oldest = min(out.oldest, f)
		}
	}
	i, j := 0, 0
	for i < len(a.slots) && j < len(b.slots) {
		switch c := cmpSlot(a.slots[i], b.slots[j]); {
		case c < 0:
			keep(a.slots[i])
			i++
		case c > 0:
			keep(b.slots[j])
			j++
		default:
			s, t := a.slots[i], b.slots[j]
			if uint16(now)-uint16(t[2]) < uint16(now)-uint16(s[2]) {
				s = t
			}
			keep(s)
			i, j = i+1, j+1
		}
	}
	for ; i < len(a.slots); i++ {
		keep(a.slots[i])
	}
	for ; j < len(b.slots); j++ {
		keep(b.slots[j])
	}
	return out
}

// prune drops what is older than the TTL.
func (x *execIndex) prune(at time.Time) {
	now := x.stamp(at, at)
	for h, s := range x.recent {
		if x.expired(now, full(now, s)) {
			delete(x.recent, h)
		}
	}
	for h, s := range x.dead {
		if x.expired(now, s) {
			delete(x.dead, h)
		}
	}
	runs := x.runs[:0]
	for _, r := range x.runs {
		if x.expired(now, r.oldest) {
			r = x.merge(&r, &execRun{}, now)
		}
		if len(r.slots) != 0 {
			runs = append(runs, r)
		}
	}
	clear(x.runs[len(runs):])
	x.runs = runs
}

// size is how many slots the index holds (a name may be counted twice
// until its runs merge).
func (x *execIndex) size() int {
	n := len(x.recent) + len(x.dead)
	for _, r := range x.runs {
		n += len(r.slots)
	}
	return n
}
