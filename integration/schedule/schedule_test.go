package schedule

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Config is the system a schedule runs against: the agents' settings and
// the topology's duplicate window. The generator draws it from the seed.
type Config struct {
	Replicas         int
	Concurrency      int
	Prefetch         int
	MaxAckPending    int
	MaxDeliver       int
	AckWait          time.Duration
	BreakerThreshold int
	BreakerOpen      time.Duration
	DupWindow        time.Duration
	RestartDelay     time.Duration // the supervisor's delay before restarting a replica
}

// Op names what a step does. Operations publish work; faults break things
// for a while and heal them.
type Op string

// Operations and faults.
const (
	OpLoad        Op = "load"         // N tasks of a mix of kinds, published raw
	OpSends       Op = "sends"        // N client Sends (with retries) of ok tasks
	OpSendsDrop   Op = "sends-drop"   // N Sends of slow tasks; the client's connection drops for For while they run
	OpBreaker     Op = "breaker"      // downstream down For: a burst of N down tasks, healthy message.send tasks meanwhile
	OpFair        Op = "fair"         // replica Target scaled down while N equal tasks arrive, then up: who runs them
	OpKill        Op = "kill"         // backlog of N, then SIGKILL replica Target
	OpFreeze      Op = "freeze"       // backlog of N, then SIGSTOP replica Target for For (beyond AckWait), SIGCONT
	OpRolling     Op = "rolling"      // backlog of N, then Rounds rolling restarts (SIGTERM each replica in turn)
	OpServerCrash Op = "server-crash" // SIGKILL the server, restart it on the same store after For
	OpResend      Op = "resend"       // re-publish N tasks answered earlier, same id (a client retry)
	OpDrop        Op = "drop"         // drop replica Target's connection for For
	OpLatency     Op = "latency"      // add Ms of latency to replica Target's connection for For
	OpRepliesOff  Op = "replies-off"  // the replies stream stores nothing for For, while N tasks run
	OpDLQFull     Op = "dlq-full"     // the DLQ refuses dead letters for For, while N permanent tasks fail
	OpReplay      Op = "replay"       // N tasks fail until replayed; then cmd/replay as Mode says
	OpCancel      Op = "cancel"       // a multi-step task, then task.cancel for it
)

// Step is one operation or fault of a schedule, started At after the
// schedule began (steps may overlap; the generator keeps two faults off
// the same resource at once).
type Step struct {
	At     time.Duration
	Op     Op
	N      int
	Target int           // replica index
	For    time.Duration // how long a fault lasts
	Ms     int           // task duration or latency
	Rounds int
	Mode   string // replay: whole, filtered, interrupted, twice
	Seed   uint64 // draws inside the step (the load's mix)
}

// Schedule is everything one run does, drawn from one seed.
type Schedule struct {
	Seed   int64
	Config Config
	Steps  []Step
}

func (s Step) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "+%5.1fs %-12s", s.At.Seconds(), s.Op)
	switch s.Op {
	case OpLoad, OpSends, OpResend:
		fmt.Fprintf(&b, " n=%d", s.N)
	case OpFair:
		fmt.Fprintf(&b, " r%d n=%d", s.Target, s.N)
	case OpSendsDrop:
		fmt.Fprintf(&b, " n=%d ms=%d drop=%v", s.N, s.Ms, s.For)
	case OpBreaker:
		fmt.Fprintf(&b, " burst=%d down=%v", s.N, s.For)
	case OpKill:
		fmt.Fprintf(&b, " r%d backlog=%d", s.Target, s.N)
	case OpFreeze:
		fmt.Fprintf(&b, " r%d for=%v backlog=%d", s.Target, s.For, s.N)
	case OpRolling:
		fmt.Fprintf(&b, " rounds=%d backlog=%d", s.Rounds, s.N)
	case OpServerCrash:
		fmt.Fprintf(&b, " down=%v resend=%d", s.For, s.N)
	case OpDrop:
		fmt.Fprintf(&b, " r%d for=%v", s.Target, s.For)
	case OpLatency:
		fmt.Fprintf(&b, " r%d ms=%d for=%v", s.Target, s.Ms, s.For)
	case OpRepliesOff, OpDLQFull:
		fmt.Fprintf(&b, " for=%v n=%d", s.For, s.N)
	case OpReplay:
		fmt.Fprintf(&b, " mode=%s n=%d", s.Mode, s.N)
	case OpCancel:
		fmt.Fprintf(&b, " steps=%d ms=%d", s.N, s.Ms)
	}
	return b.String()
}

func (c Config) String() string {
	return fmt.Sprintf("replicas=%d concurrency=%d prefetch=%d max_ack_pending=%d max_deliver=%d ack_wait=%v breaker=%d/%v dup_window=%v restart_delay=%v",
		c.Replicas, c.Concurrency, c.Prefetch, c.MaxAckPending, c.MaxDeliver, c.AckWait, c.BreakerThreshold, c.BreakerOpen, c.DupWindow, c.RestartDelay)
}

func (s Schedule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %s\n", s.Seed, s.Config)
	for _, st := range s.Steps {
		fmt.Fprintf(&b, "  %s\n", st)
	}
	return b.String()
}

// End is when the last step's faults are healed.
func (s Schedule) End() time.Duration {
	var end time.Duration
	for _, st := range s.Steps {
		end = max(end, st.At+st.duration(s.Config))
	}
	return end
}

// duration is how long a step keeps its resource busy.
func (s Step) duration(c Config) time.Duration {
	switch s.Op {
	case OpRolling:
		return time.Duration(s.Rounds*c.Replicas) * (c.RestartDelay + 1500*time.Millisecond)
	case OpReplay:
		return 4*c.AckWait + c.DupWindow + 3*time.Second
	case OpFair:
		return time.Duration(s.N*80)*time.Millisecond + c.RestartDelay + 4*time.Second
	case OpKill:
		return c.RestartDelay + time.Second
	case OpSendsDrop:
		return s.For + 3*time.Second
	}
	return s.For + 500*time.Millisecond
}

// resources a step occupies: two steps on one resource never overlap.
func (s Step) resources(c Config) []string {
	replica := fmt.Sprintf("replica%d", s.Target)
	all := []string{"server"}
	for i := range c.Replicas {
		all = append(all, fmt.Sprintf("replica%d", i))
	}
	switch s.Op {
	case OpKill, OpFreeze, OpDrop, OpLatency:
		return []string{replica}
	case OpRolling, OpFair:
		return all
	case OpServerCrash:
		return append(all, "replies", "dlq", "client", "downstream")
	case OpSendsDrop:
		return []string{"client"}
	case OpBreaker:
		return []string{"downstream"}
	case OpRepliesOff:
		return []string{"replies"}
	case OpDLQFull:
		return []string{"dlq"}
	case OpReplay:
		return []string{"dlq", "replay"}
	}
	return nil
}

// weights of the ops the generator draws.
var weights = []struct {
	op Op
	w  int
}{
	{OpLoad, 4}, {OpSends, 2}, {OpSendsDrop, 2}, {OpBreaker, 2}, {OpFair, 2}, {OpKill, 2},
	{OpFreeze, 2}, {OpRolling, 2}, {OpServerCrash, 2}, {OpResend, 2}, {OpDrop, 1},
	{OpLatency, 1}, {OpRepliesOff, 2}, {OpDLQFull, 1}, {OpReplay, 2}, {OpCancel, 1},
}

// Generate draws a schedule from seed: the same seed gives the same
// schedule (the generator is math/rand/v2's PCG seeded with it).
func Generate(seed int64, steps int) Schedule {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6a65746167656e74)) // "jetagent"
	pick := func(xs ...int) int { return xs[rng.IntN(len(xs))] }
	c := Config{
		Replicas:         pick(1, 2, 2, 3),
		Concurrency:      pick(1, 1, 2, 4),
		Prefetch:         pick(10, 10, 32),
		MaxAckPending:    pick(40, 100, 200),
		MaxDeliver:       pick(3, 4, 5),
		AckWait:          2 * time.Second,
		BreakerThreshold: 3,
		BreakerOpen:      time.Duration(pick(5, 6, 8)) * time.Second,
		DupWindow:        time.Duration(pick(8, 10)) * time.Second,
		RestartDelay:     time.Duration(pick(200, 500, 1000)) * time.Millisecond,
	}
	c.MaxAckPending = max(c.MaxAckPending, c.Prefetch)
	total := 0
	for _, w := range weights {
		total += w.w
	}
	draw := func() Op {
		n := rng.IntN(total)
		for _, w := range weights {
			if n < w.w {
				return w.op
			}
			n -= w.w
		}
		panic("unreachable")
	}
	s := Schedule{Seed: seed, Config: c}
	busy := map[string]time.Duration{}
	at := time.Second
	for len(s.Steps) < steps {
		st := Step{Op: draw(), Target: rng.IntN(c.Replicas), Seed: rng.Uint64()}
		switch st.Op {
		case OpLoad:
			st.N = 10 + rng.IntN(40)
		case OpSends:
			st.N = 2 + rng.IntN(8)
		case OpSendsDrop:
			st.N, st.Ms, st.For = 1+rng.IntN(4), 600+rng.IntN(600), time.Duration(500+rng.IntN(1000))*time.Millisecond
		case OpBreaker:
			st.N = c.MaxAckPending + c.MaxAckPending/2 + rng.IntN(20)
			st.For = c.BreakerOpen + time.Duration(rng.IntN(3000))*time.Millisecond
		case OpFair:
			if c.Replicas < 2 {
				continue
			}
			st.N = min(30+rng.IntN(30), c.MaxAckPending)
		case OpKill:
			st.N = 10 + rng.IntN(40)
		case OpFreeze:
			st.N = 20 + rng.IntN(40)
			st.For = c.AckWait + time.Duration(500+rng.IntN(3000))*time.Millisecond
		case OpRolling:
			st.N, st.Rounds = 30+rng.IntN(50), 1+rng.IntN(3)
		case OpServerCrash:
			st.For = time.Duration(300+rng.IntN(2000)) * time.Millisecond
			st.N = rng.IntN(20) // tasks answered before the crash, re-sent after the restart
		case OpResend:
			st.N = 5 + rng.IntN(20)
		case OpDrop:
			st.For = time.Duration(300+rng.IntN(2500)) * time.Millisecond
		case OpLatency:
			st.Ms, st.For = 50+rng.IntN(400), time.Duration(1000+rng.IntN(3000))*time.Millisecond
		case OpRepliesOff:
			st.N, st.For = 3+rng.IntN(10), time.Duration(1000+rng.IntN(3000))*time.Millisecond
		case OpDLQFull:
			st.N, st.For = 2+rng.IntN(6), time.Duration(1500+rng.IntN(3000))*time.Millisecond
		case OpReplay:
			st.N = 4 + rng.IntN(12)
			st.Mode = []string{"whole", "filtered", "interrupted", "interrupted", "twice"}[rng.IntN(5)]
		case OpCancel:
			st.N, st.Ms = 3+rng.IntN(4), 300+rng.IntN(400)
		}
		start := at
		if st.Op == OpFair {
			start = max(start, 3*c.AckWait) // the replicas that stay up have left recovery mode
		}
		for _, r := range st.resources(c) {
			start = max(start, busy[r])
		}
		st.At = start
		for _, r := range st.resources(c) {
			busy[r] = start + st.duration(c) + 500*time.Millisecond
		}
		s.Steps = append(s.Steps, st)
		at += time.Duration(300+rng.IntN(2500)) * time.Millisecond
	}
	slices.SortStableFunc(s.Steps, func(a, b Step) int { return int(a.At - b.At) })
	return s
}

// without returns s with its i-th step removed (for minimising).
func (s Schedule) without(i int) Schedule {
	out := s
	out.Steps = slices.Delete(slices.Clone(s.Steps), i, i+1)
	return out
}
