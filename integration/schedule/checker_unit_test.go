package schedule

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
)

// These tests run the checker on small hand-made worlds, without any
// process: each invariant must be able to fail, and the bound must excuse
// exactly what the schedule's faults explain.

func baseWorld(t0 time.Time) *world {
	return &world{
		s:       Schedule{Config: Config{Replicas: 2, MaxDeliver: 3, AckWait: 2 * time.Second}},
		tasks:   map[string]*taskRec{},
		replies: map[string][]reply{},
		dlq:     &dlqView{byTask: map[string][]*dlq.Entry{}, replayed: map[string][]*dlq.Entry{}},
		end:     t0.Add(time.Minute),
	}
}

func at(t0 time.Time, ms int) int64 { return t0.Add(time.Duration(ms) * time.Millisecond).UnixNano() }

func addTask(w *world, id, kind string, published time.Time) {
	w.tasks[id] = &taskRec{ID: id, Kind: kind, Type: envelope.TaskRequest, Accepted: true, Published: published}
	w.order = append(w.order, id)
}

func run(w *world, t0 time.Time, pid int, id string, att, from, to int, ev string) {
	w.lines = append(w.lines,
		Line{T: at(t0, from), PID: pid, Ev: "start", Task: id, Att: att, Kind: "ok"},
		Line{T: at(t0, to), PID: pid, Ev: ev, Task: id, Att: att, Kind: "ok"})
}

func invariants(vs []Violation) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Invariant)
	}
	return out
}

func TestCheckerFlagsASecondSuccessNoFaultExplains(t *testing.T) {
	t0 := time.Now()
	w := baseWorld(t0)
	addTask(w, "A", "ok", t0)
	w.replies["A"] = []reply{{Env: &envelope.Envelope{CorrelationID: "A"}}}
	run(w, t0, 10, "A", 1, 0, 50, "done")
	run(w, t0, 11, "A", 2, 3000, 3050, "done")
	if got := invariants(check(w)); !reflect.DeepEqual(got, []string{"executions-bounded"}) {
		t.Fatalf("violations %v, want executions-bounded", got)
	}
}

func TestCheckerExcusesARunItsProcessDiedIn(t *testing.T) {
	t0 := time.Now()
	w := baseWorld(t0)
	addTask(w, "A", "ok", t0)
	w.replies["A"] = []reply{{Env: &envelope.Envelope{CorrelationID: "A"}}}
	run(w, t0, 10, "A", 1, 0, 50, "done")
	run(w, t0, 11, "A", 2, 3000, 3050, "done")
	kill := t0.Add(60 * time.Millisecond) // after the work, before the ack could settle
	w.faults = []*fault{{Kind: "kill", PID: 10, From: kill, To: kill}}
	if vs := check(w); len(vs) != 0 {
		t.Fatalf("a run disrupted by a SIGKILL must be excused: %v", vs)
	}
	// A SIGTERM is no excuse: a graceful stop lets the handler settle.
	w.faults[0].Kind = "term"
	if got := invariants(check(w)); !reflect.DeepEqual(got, []string{"executions-bounded"}) {
		t.Fatalf("violations %v after a SIGTERM, want executions-bounded", got)
	}
}

func TestCheckerWantsEveryAcceptedTaskSettledWithTheRightReason(t *testing.T) {
	t0 := time.Now()
	w := baseWorld(t0)
	addTask(w, "lost", "ok", t0)
	addTask(w, "perm", "perm", t0)
	addTask(w, "neverran", "ok", t0)
	w.dlq.byTask["perm"] = []*dlq.Entry{{Record: dlq.Record{Reason: dlq.ReasonPermanent}}}
	w.dlq.byTask["neverran"] = []*dlq.Entry{{Stored: t0.Add(time.Second), Record: dlq.Record{Reason: dlq.ReasonMaxDeliveries}}}
	run(w, t0, 10, "perm", 1, 0, 10, "perm")
	got := invariants(check(w))
	if !reflect.DeepEqual(got, []string{"no-task-lost", "right-dlq-reason"}) {
		t.Fatalf("violations %v, want no-task-lost (lost) and right-dlq-reason (neverran)", got)
	}
}

func TestCheckerFlagsASendThatFailedForATaskThatSucceeded(t *testing.T) {
	t0 := time.Now()
	w := baseWorld(t0)
	addTask(w, "S", "ok", t0)
	w.replies["S"] = []reply{{Env: &envelope.Envelope{CorrelationID: "S"}}}
	run(w, t0, 10, "S", 1, 0, 500, "done")
	w.sends = []*sendRec{{ID: "S", Start: t0, End: t0.Add(5 * time.Second), Err: errors.New("timeout")}}
	if got := invariants(check(w)); !reflect.DeepEqual(got, []string{"send-error-means-not-done"}) {
		t.Fatalf("violations %v, want send-error-means-not-done", got)
	}
	// Finishing after the Send gave up is no contradiction.
	w.sends[0].End = t0.Add(400 * time.Millisecond)
	if vs := check(w); len(vs) != 0 {
		t.Fatalf("%v", vs)
	}
}

// Seed 32088820: the task succeeded while the replies stream was off, its
// reply was stored only once the stream was back, after the Send's last
// attempt and look-up had given up. The Send's timeout was the truth: the
// reply was nowhere it could be read. A reply stored well before the Send
// gave up, and missed, is still flagged.
func TestCheckerExcusesASendWhoseReplyWasStoredAfterItGaveUp(t *testing.T) {
	t0 := time.Now()
	world := func(storedMs int) *world {
		w := baseWorld(t0)
		addTask(w, "S", "ok", t0)
		w.replies["S"] = []reply{{Env: &envelope.Envelope{CorrelationID: "S"}, Stored: t0.Add(time.Duration(storedMs) * time.Millisecond)}}
		run(w, t0, 10, "S", 1, 0, 500, "done")
		w.sends = []*sendRec{{ID: "S", Start: t0, End: t0.Add(5 * time.Second), Err: errors.New("timeout")}}
		return w
	}
	if vs := check(world(5100)); len(vs) != 0 {
		t.Fatalf("a Send that gave up before its reply was stored was judged: %v", vs)
	}
	if got := invariants(check(world(1000))); !reflect.DeepEqual(got, []string{"send-error-means-not-done"}) {
		t.Fatalf("violations %v, want send-error-means-not-done (the reply was stored 4 s before the Send gave up)", got)
	}
}

func TestCheckerFlagsAReplayRunTwice(t *testing.T) {
	t0 := time.Now()
	w := baseWorld(t0)
	addTask(w, "R", "permreplay", t0)
	w.dlq.byTask["R"] = []*dlq.Entry{{Seq: 7, Record: dlq.Record{Reason: dlq.ReasonPermanent}}}
	w.replies["R"] = []reply{{Env: &envelope.Envelope{CorrelationID: "R"}}}
	w.lines = append(w.lines,
		Line{T: at(t0, 0), PID: 10, Ev: "start", Task: "R", Att: 1},
		Line{T: at(t0, 5), PID: 10, Ev: "perm", Task: "R", Att: 1},
		Line{T: at(t0, 1000), PID: 10, Ev: "start", Task: "R", Att: 1, Replay: "7"},
		Line{T: at(t0, 1005), PID: 10, Ev: "done", Task: "R", Att: 1, Replay: "7"},
		Line{T: at(t0, 9000), PID: 11, Ev: "start", Task: "R", Att: 1, Replay: "7"},
		Line{T: at(t0, 9005), PID: 11, Ev: "done", Task: "R", Att: 1, Replay: "7"})
	if got := invariants(check(w)); !reflect.DeepEqual(got, []string{"replay-at-most-once"}) {
		t.Fatalf("violations %v, want replay-at-most-once", got)
	}
}

func TestCheckerFlagsAStarvedHealthySubjectAndAHoardingReplica(t *testing.T) {
	t0 := time.Now()
	w := baseWorld(t0)
	w.faults = []*fault{{Kind: "down", From: t0, To: t0.Add(10 * time.Second)}}
	addTask(w, "H", "ok", t0.Add(time.Second))
	w.tasks["H"].Healthy = true
	w.replies["H"] = []reply{{Env: &envelope.Envelope{CorrelationID: "H"}}}
	run(w, t0, 10, "H", 1, 7000, 7020, "done")
	b := fairBurst{At: t0.Add(20 * time.Second), Eligible: true}
	for i := range 20 {
		id := string(rune('a' + i))
		addTask(w, id, "ok", b.At)
		w.replies[id] = []reply{{Env: &envelope.Envelope{CorrelationID: id}}}
		pid := 10
		if i == 0 {
			pid = 11
		}
		run(w, t0, pid, id, 1, 20000+100*i, 20080+100*i, "done")
		b.IDs = append(b.IDs, id)
	}
	w.fair = []fairBurst{b}
	if got := invariants(check(w)); !reflect.DeepEqual(got, []string{"breaker-isolation", "fair-share"}) {
		t.Fatalf("violations %v, want breaker-isolation and fair-share", got)
	}
}

// Seed 1, once a reply's try stopped holding its worker for 10 s: a
// healthy task published as a downstream went down waited 4 s behind a
// backlog of task.request tasks published before it, which ran (the
// breaker still closed: no failure had reached a worker yet); the breaker
// opened when the first failing tasks did, and the healthy task ran 0.4 s
// later. Its wait is judged from when the breaker can have opened (a
// threshold's run of failures in the ledger), not from the fault's start.
// A breaker open before the task was published counts from its publish.
func TestCheckerJudgesIsolationFromWhenTheBreakerOpened(t *testing.T) {
	t0 := time.Now()
	world := func(failMs int) *world {
		w := baseWorld(t0)
		w.s.Config.BreakerThreshold, w.s.Config.BreakerOpen = 3, 5*time.Second
		w.faults = []*fault{{Kind: "down", From: t0, To: t0.Add(10 * time.Second)}}
		addTask(w, "H", "ok", t0.Add(time.Second))
		w.tasks["H"].Healthy = true
		w.replies["H"] = []reply{{Env: &envelope.Envelope{CorrelationID: "H"}}}
		for i := range 3 {
			w.lines = append(w.lines, Line{T: at(t0, failMs+10*i), PID: 10, Ev: "fail", Task: fmt.Sprint("D", i), Att: 1, Kind: "down", Sub: string(envelope.TaskRequest)})
		}
		run(w, t0, 10, "H", 1, 5400, 5420, "done")
		return w
	}
	if vs := check(world(5000)); len(vs) != 0 {
		t.Fatalf("a healthy task that ran 0.4 s after the breaker opened was judged: %v", vs)
	}
	if got := invariants(check(world(500))); !reflect.DeepEqual(got, []string{"breaker-isolation"}) {
		t.Fatalf("violations %v, want breaker-isolation (open before its publish, done 4.4 s after it)", got)
	}
}

// A replica whose breaker may be open parks its share of a burst, so the
// others running it is no hoarding (seed 211469805): the burst is not
// judged while the ledger shows a threshold's run of transient failures
// in one replica within the open timeout. One failure fewer, it is.
func TestCheckerDoesNotJudgeFairnessWhileABreakerMayBeOpen(t *testing.T) {
	t0 := time.Now()
	hoarding := func(fails int) *world {
		w := baseWorld(t0)
		w.s.Config.BreakerThreshold, w.s.Config.BreakerOpen = 3, 6*time.Second
		b := fairBurst{At: t0.Add(20 * time.Second), Eligible: true}
		for i := range 20 {
			id := string(rune('a' + i))
			addTask(w, id, "ok", b.At)
			w.replies[id] = []reply{{Env: &envelope.Envelope{CorrelationID: id}}}
			run(w, t0, 10, id, 1, 20000+100*i, 20080+100*i, "done")
			b.IDs = append(b.IDs, id)
		}
		w.fair = []fairBurst{b}
		for i := range fails {
			w.lines = append(w.lines, Line{T: at(t0, 18000+10*i), PID: 11, Ev: "fail", Task: "T", Att: i + 1, Kind: "transient", Sub: string(envelope.TaskRequest)})
		}
		return w
	}
	if vs := check(hoarding(3)); len(vs) != 0 {
		t.Fatalf("a burst while replica 11's breaker may be open was judged: %v", vs)
	}
	if got := invariants(check(hoarding(2))); !reflect.DeepEqual(got, []string{"fair-share"}) {
		t.Fatalf("violations %v, want fair-share (two failures do not open a breaker of threshold 3)", got)
	}
}

func TestGenerateIsAFunctionOfTheSeed(t *testing.T) {
	a, b := Generate(42, 8), Generate(42, 8)
	if a.String() != b.String() {
		t.Fatalf("seed 42 gave two schedules:\n%s\n%s", a, b)
	}
	if Generate(43, 8).String() == a.String() {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
	for seed := int64(1); seed < 200; seed++ {
		s := Generate(seed, 8)
		busy := map[string][]Step{}
		for _, st := range s.Steps {
			for _, r := range st.resources(s.Config) {
				for _, o := range busy[r] {
					if st.At < o.At+o.duration(s.Config) {
						t.Fatalf("seed %d: %s and %s overlap on %s", seed, o, st, r)
					}
				}
				busy[r] = append(busy[r], st)
			}
		}
	}
}

// burstWorld is a world with one fair burst of up+joined tasks at 20 s,
// run one after the other (10 ms apart, the 5th done at 20048 ms): the
// first up by pid 10, the replica that stayed up, the rest by pid 11,
// the joiner; the window is Concurrency + Prefetch.
func burstWorld(t0 time.Time, prefetch, concurrency, up, joined int) *world {
	w := baseWorld(t0)
	w.s.Config.Prefetch, w.s.Config.Concurrency = prefetch, concurrency
	b := fairBurst{At: t0.Add(20 * time.Second), Eligible: true}
	for i := range up + joined {
		id := fmt.Sprintf("t%02d", i)
		addTask(w, id, "ok", b.At)
		w.replies[id] = []reply{{Env: &envelope.Envelope{CorrelationID: id}}}
		pid := 10
		if i >= up {
			pid = 11
		}
		run(w, t0, pid, id, 1, 20000+10*i, 20008+10*i, "done")
		b.IDs = append(b.IDs, id)
	}
	w.fair = []fairBurst{b}
	return w
}

// A replica holds at most its window (Concurrency + Prefetch; here
// Prefetch 32 and no concurrency counted) of a burst before another joins;
// the rest is what must be shared. Seed 13 (prefetch 32): the replica that
// was up ran 37 of 49 while the other joined as they arrived, its window
// held before the joiner's first pull: no hoarding. All 49 is.
func TestCheckerJudgesFairnessBeyondTheWindow(t *testing.T) {
	t0 := time.Now()
	burst := func(up, joined int) *world { return burstWorld(t0, 32, 0, up, joined) }
	if vs := check(burst(37, 12)); len(vs) != 0 {
		t.Fatalf("37 of 49 with a window of 32 was judged hoarding: %v", vs)
	}
	if got := invariants(check(burst(45, 4))); !reflect.DeepEqual(got, []string{"fair-share"}) {
		t.Fatalf("violations %v, want fair-share (45 of 49: the window and 13 of the 17 beyond it)", got)
	}
	if got := invariants(check(burst(49, 0))); !reflect.DeepEqual(got, []string{"fair-share"}) {
		t.Fatalf("violations %v, want fair-share (the whole burst)", got)
	}
}

// A replica's window is Concurrency + Prefetch (runtime.Config): the tasks
// its handlers run and those queued behind them. Seed 120228224, once its
// reconnect defect was fixed, had the replica that stayed up run 36 of 37
// with prefetch 32 and concurrency 4: its window, and 1 of the 1 beyond
// it; the checker counted a window of 32 and flagged it.
func TestCheckerCountsTheRunningTasksInTheWindow(t *testing.T) {
	t0 := time.Now()
	burst := func(up int) *world { return burstWorld(t0, 32, 4, up, 37-up) }
	if vs := check(burst(36)); len(vs) != 0 {
		t.Fatalf("36 of 37 with a window of 36 was judged hoarding: %v", vs)
	}
	if got := invariants(check(burst(37))); !reflect.DeepEqual(got, []string{"fair-share"}) {
		t.Fatalf("violations %v, want fair-share (37 of 37: the window and all beyond it)", got)
	}
}

// A replica that stays up may run what it pulled before the joiner's first
// pull: its window, and as many again as it finished by then, since each
// finished task's room is refilled from the burst while nobody else asks
// (a joiner slow to start on a busy machine, as seed 13's was). Of what
// remains once the joiner pulls, it may run fairShare. The joiner's
// "ready" ledger line, written once its runtime pulls, says when; without
// one the joiner counts as ready when the burst began.
func TestCheckerCountsWhatTheUpReplicaRanBeforeTheJoinerPulled(t *testing.T) {
	t0 := time.Now()
	burst := func(readyMs int) *world {
		w := burstWorld(t0, 32, 0, 37, 0)
		if readyMs > 0 {
			w.lines = append(w.lines, Line{T: at(t0, readyMs), PID: 11, Ev: "ready"})
		}
		return w
	}
	if vs := check(burst(20055)); len(vs) != 0 {
		t.Fatalf("37 of 37 by the replica that was up, 5 of them finished before the joiner pulled, was judged hoarding: %v", vs)
	}
	if vs := check(burst(30000)); len(vs) != 0 {
		t.Fatalf("a burst that was over before the joiner pulled was judged hoarding: %v", vs)
	}
	if got := invariants(check(burst(20001))); !reflect.DeepEqual(got, []string{"fair-share"}) {
		t.Fatalf("violations %v, want fair-share (the joiner pulled before anything finished: the window and 5 beyond it)", got)
	}
	if got := invariants(check(burst(0))); !reflect.DeepEqual(got, []string{"fair-share"}) {
		t.Fatalf("violations %v, want fair-share (no ready line: the joiner counts as ready at once)", got)
	}
}

// A task whose handler succeeded while the replies stream was off for
// longer than the reply's tries is dead-lettered reply_failed, as
// docs/concepts.md says (seed 120228224: replies off 3.97 s). Without a
// fault to keep the reply back, reply_failed is the wrong reason.
func TestCheckerAcceptsReplyFailedOnlyWhileRepliesCannotGoOut(t *testing.T) {
	t0 := time.Now()
	world := func(off bool) *world {
		w := baseWorld(t0)
		addTask(w, "RF", "ok", t0)
		run(w, t0, 10, "RF", 1, 1000, 1050, "done")
		w.dlq.byTask["RF"] = []*dlq.Entry{{Stored: t0.Add(3 * time.Second), Record: dlq.Record{Reason: dlq.ReasonReplyFailed}}}
		if off {
			w.faults = []*fault{{Kind: "replies-off", From: t0.Add(900 * time.Millisecond), To: t0.Add(5 * time.Second)}}
		}
		return w
	}
	if vs := check(world(true)); len(vs) != 0 {
		t.Fatalf("reply_failed while the replies stream was off was judged: %v", vs)
	}
	if got := invariants(check(world(false))); !reflect.DeepEqual(got, []string{"right-dlq-reason"}) {
		t.Fatalf("violations %v, want right-dlq-reason (reply_failed with no fault)", got)
	}
}
