package schedule

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
)

// Tolerances of the checker. They are bounds on what a correct runtime
// does on a loaded 2-core machine, far below what the defects they catch
// cost (a breaker's open timeout, a whole backlog).
const (
	// settleSlack covers the time between a handler's last ledger line and
	// its settlement reaching the server: a fault within it may lose the
	// settlement, so a re-run is excused.
	settleSlack = time.Second
	// reconnectSlack is how long after the server is back its clients may
	// still be reconnecting (they lost their connection until then).
	reconnectSlack = 2 * time.Second
	// replySettleSlack replaces settleSlack for a run that ended while its
	// reply could not be published (replies stream off, server away): the
	// runtime retries the reply (four tries, and nats.go's own retries of
	// a publish nobody answers), then dead-letters it reply_failed, before
	// the task is recorded and settled; a process fault meanwhile may lose
	// that, and the redelivery runs it again (docs/concepts.md "Once").
	replySettleSlack = 6 * time.Second
	// healthyBound is how long a healthy-subject task may wait while
	// another subject's breaker is open.
	healthyBound = 3 * time.Second
	// fairShare is the most of a burst, beyond the window (Concurrency +
	// Prefetch, as runtime.Config sets it) it may hold before the others
	// pull, one replica may run while others are up and idle.
	fairShare = 0.75
	// goroutineGrowth and maxRSS bound each agent process.
	goroutineGrowth = 60
	maxRSS          = 300 << 20
)

// world is everything the checker reads at quiescence.
type world struct {
	s       Schedule
	tasks   map[string]*taskRec
	order   []string
	sends   []*sendRec
	faults  []*fault
	resends []resendRec
	replays []replayRun
	fair    []fairBurst
	lines   []Line
	replies map[string][]reply
	dlq     *dlqView
	exits   []exit
	samples []sample
	end     time.Time // quiescence
	// stranded lists the tasks-stream sequences of accepted tasks without
	// an outcome that the stream still stores.
	stranded map[uint64]bool
}

type sample struct {
	Replica    int
	PID        int
	At         time.Time
	Goroutines float64
	RSS        float64
}

// Violation is one broken invariant.
type Violation struct {
	Invariant string
	Task      string
	Detail    string
	Hint      string // what in the schedule it follows, and the issue that lists it
	Lines     []Line // the ledger lines of the task
}

func (v Violation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] task %s: %s", v.Invariant, v.Task, v.Detail)
	if v.Hint != "" {
		fmt.Fprintf(&b, "\n      hint: %s", v.Hint)
	}
	for _, l := range v.Lines {
		fmt.Fprintf(&b, "\n      ledger: %s", l)
	}
	return b.String()
}

// execution is one handler run: a start line and what ended it.
type execution struct {
	PID        int
	Task       string
	Att        int
	Replay     string
	Start, End time.Time
	Ev         string // the end event, or "died" (the process ended first), or "" (never ended)
	Steps      []int
	disrupted  bool
}

// check asserts every invariant and returns the violations.
func check(w *world) []Violation {
	c := &checker{w: w, byTask: map[string][]Line{}}
	for _, l := range w.lines {
		c.byTask[l.Task] = append(c.byTask[l.Task], l)
	}
	c.buildExecutions()
	c.checkOutcomes()
	c.checkExecutions()
	c.checkReplays()
	c.checkIsolation()
	c.checkFairness()
	c.checkSends()
	c.checkProcesses()
	sort.SliceStable(c.out, func(i, j int) bool { return c.out[i].Invariant < c.out[j].Invariant })
	return c.out
}

type checker struct {
	w      *world
	byTask map[string][]Line
	execs  map[string][]*execution // by task
	out    []Violation
}

func (c *checker) add(inv, task, hint, format string, a ...any) {
	c.out = append(c.out, Violation{Invariant: inv, Task: task, Detail: fmt.Sprintf(format, a...), Hint: hint, Lines: c.byTask[task]})
}

// disruptive faults: those after which a handler may legitimately run
// again (the process died, froze or lost its connection while running).
func disruptive(kind string) bool {
	switch kind {
	case "kill", "freeze", "drop", "server", "died":
		return true
	}
	return false
}

// allFaults are the injected faults plus the agents' own deaths (a
// poison task's crash, an exit that was not asked for).
func (c *checker) allFaults() []*fault {
	fs := slices.Clone(c.w.faults)
	for _, e := range c.w.exits {
		if e.Signaled == "killed" {
			continue // the kill fault is recorded already
		}
		if e.Code != 0 || e.Signaled != "" {
			fs = append(fs, &fault{Kind: "died", PID: e.PID, From: e.Ended, To: e.Ended})
		}
	}
	return fs
}

func (c *checker) buildExecutions() {
	c.execs = map[string][]*execution{}
	exitAt := map[int]time.Time{}
	for _, e := range c.w.exits {
		exitAt[e.PID] = e.Ended
	}
	open := map[string]*execution{} // pid/task/att/replay
	key := func(l Line) string { return fmt.Sprint(l.PID, "/", l.Task, "/", l.Att, "/", l.Replay) }
	for _, l := range c.w.lines {
		switch l.Ev {
		case "start":
			e := &execution{PID: l.PID, Task: l.Task, Att: l.Att, Replay: l.Replay, Start: l.Time()}
			open[key(l)] = e
			c.execs[l.Task] = append(c.execs[l.Task], e)
		case "step":
			if e := open[key(l)]; e != nil {
				e.Steps = append(e.Steps, l.Step)
			}
		default:
			if e := open[key(l)]; e != nil {
				e.End, e.Ev = l.Time(), l.Ev
				delete(open, key(l))
			}
		}
	}
	for _, e := range open {
		if at, ok := exitAt[e.PID]; ok {
			e.End, e.Ev = at, "died"
		} else {
			e.End = c.w.end
		}
	}
	faults := c.allFaults()
	for _, es := range c.execs {
		for _, e := range es {
			slack := settleSlack
			if c.replyBlocked(e.End) {
				slack = replySettleSlack // its reply was being retried
			}
			for _, f := range faults {
				if !disruptive(f.Kind) || f.PID != 0 && f.PID != e.PID && f.Kind != "server" {
					continue
				}
				to := f.To
				if to.IsZero() {
					to = c.w.end
				}
				if f.Kind == "server" || f.Kind == "drop" {
					to = to.Add(reconnectSlack)
				}
				if !f.From.After(e.End.Add(slack)) && !to.Before(e.Start) {
					e.disrupted = true
				}
			}
		}
	}
}

func (c *checker) count(task, replay, ev string) (n, excused int) {
	for _, e := range c.execs[task] {
		if e.Replay != replay {
			continue
		}
		if e.disrupted {
			excused++
		}
		if e.Ev == ev {
			n++
		}
	}
	return n, excused
}

func (c *checker) lines(task, ev string) int {
	n := 0
	for _, l := range c.byTask[task] {
		if l.Ev == ev && l.Replay == "" {
			n++
		}
	}
	return n
}

// expected dead-letter reasons per kind; nil: it must be answered.
func expectedReasons(kind string) []dlq.Reason {
	switch kind {
	case "perm", "permreplay":
		return []dlq.Reason{dlq.ReasonPermanent}
	case "poison":
		return []dlq.Reason{dlq.ReasonMaxDeliveries}
	case "unknown":
		return []dlq.Reason{dlq.ReasonUnknownType}
	case "malformed":
		return []dlq.Reason{dlq.ReasonMalformed}
	case "expired":
		return []dlq.Reason{dlq.ReasonExpired}
	case "badpayload": // docs/errors.md: a payload the handler cannot decode is dead-lettered at once
		return []dlq.Reason{dlq.ReasonPermanent, dlq.ReasonMalformed, dlq.ReasonInvalid}
	}
	return nil
}

// replyBlocked reports whether a run that ended at end may have found its
// reply unpublishable: the replies stream off, or the server away, around
// that time (within settleSlack before it, reconnectSlack after).
func (c *checker) replyBlocked(end time.Time) bool {
	for _, f := range c.allFaults() {
		if f.Kind != "replies-off" && f.Kind != "server" {
			continue
		}
		to := f.To
		if to.IsZero() {
			to = c.w.end
		}
		if !f.From.After(end.Add(settleSlack)) && !to.Add(reconnectSlack).Before(end) {
			return true
		}
	}
	return false
}

// faultsDuring counts the faults of the given kinds in [from, to].
func (c *checker) faultsDuring(from, to time.Time, kinds ...string) int {
	n := 0
	for _, f := range c.allFaults() {
		if slices.Contains(kinds, f.Kind) && !f.From.After(to) && !f.From.Before(from) {
			n++
		}
	}
	return n
}

func (c *checker) checkOutcomes() {
	md := c.w.s.Config.MaxDeliver
	for _, id := range c.w.order {
		r := c.w.tasks[id]
		key := id
		if r.Kind == "malformed" {
			key = "seq:" + strconv.FormatUint(r.Seq, 10)
		}
		entries := c.w.dlq.byTask[key]
		replies := c.w.replies[id]
		if !r.Accepted {
			continue // never acknowledged: it may or may not exist
		}
		want := expectedReasons(r.Kind)
		if r.Kind == "transient" && r.Fail >= md {
			want = []dlq.Reason{dlq.ReasonMaxAttempts}
		}
		if len(entries) == 0 && len(replies) == 0 {
			hint := ""
			if c.lines(id, "cancelled") > 0 && c.faultsDuring(r.Published, c.w.end, "replies-off") > 0 {
				hint = "cancelled while the replies stream was unavailable: the task.update reply was dropped and the task acked (no issue lists it)"
			}
			if c.w.stranded[r.Seq] {
				hint = "still stored in the tasks stream and no longer delivered, never dead-lettered: stranded at its last delivery (issue 13 item 7)"
			}
			c.add("no-task-lost", id, hint, "accepted %s task (%s, published %s, stream seq %d) neither answered nor dead-lettered",
				r.Kind, r.Type, r.Published.Format("15:04:05.000"), r.Seq)
			continue
		}
		if len(entries) == 0 {
			if want != nil {
				c.add("right-outcome", id, "", "%s task answered, want a dead letter %v", r.Kind, want)
			}
			continue
		}
		_, excused := c.count(id, "", "done")
		if len(entries) > 1 && excused == 0 {
			c.add("dead-lettered-once", id, c.rerunHint(id), "%d dead letters of one task", len(entries))
		}
		for _, e := range entries {
			if slices.Contains(want, e.Reason) {
				continue
			}
			fails := c.lines(id, "fail")
			switch e.Reason {
			case dlq.ReasonReplyFailed:
				// The handler succeeded and its reply could not go out
				// within the reply's tries (docs/concepts.md): right, when
				// a fault kept the replies from being published then.
				blocked := false
				for _, x := range c.execs[id] {
					blocked = blocked || x.Ev == "done" && c.replyBlocked(x.End)
				}
				if blocked {
					continue
				}
				c.add("right-dlq-reason", id, c.reasonHint(r, e), "%s task dead-lettered %s (%q) with no fault keeping its reply back; want %s",
					r.Kind, e.Reason, e.Error, describe(want))
			case dlq.ReasonMaxAttempts:
				if fails >= md {
					continue
				}
				c.add("right-dlq-reason", id, c.reasonHint(r, e), "%s task dead-lettered %s after %d failed handler runs (MaxDeliver %d); want %s",
					r.Kind, e.Reason, fails, md, describe(want))
			case dlq.ReasonMaxDeliveries:
				died := 0
				for _, x := range c.execs[id] {
					if x.Replay == "" && (x.Ev == "died" || x.Ev == "crash" || x.disrupted) {
						died++
					}
				}
				lost := c.faultsDuring(r.Published, e.Stored, "kill", "freeze", "server", "died")
				if died+lost+fails >= md {
					continue
				}
				runs := 0
				for _, x := range c.execs[id] {
					if x.Replay == "" {
						runs++
					}
				}
				c.add("right-dlq-reason", id, c.reasonHint(r, e), "%s task dead-lettered %s (%q) after %d handler runs of which %d crashed or were disrupted, %d failed, with %d process faults in its lifetime (MaxDeliver %d); want %s",
					r.Kind, e.Reason, e.Error, runs, died, fails, lost, md, describe(want))
			default:
				c.add("right-dlq-reason", id, c.reasonHint(r, e), "%s task dead-lettered %s (%q); want %s", r.Kind, e.Reason, e.Error, describe(want))
			}
		}
		replayDone := 0
		for _, x := range c.execs[id] {
			if x.Replay != "" && x.Ev == "done" {
				replayDone++
			}
		}
		if len(replies) > 0 && want == nil && excused == 0 && replayDone == 0 {
			c.add("right-outcome", id, c.rerunHint(id), "%s task both answered and dead-lettered (%s)", r.Kind, entries[0].Reason)
		}
	}
}

func describe(rs []dlq.Reason) string {
	if rs == nil {
		return "a reply"
	}
	return fmt.Sprint(rs)
}

func (c *checker) reasonHint(r *taskRec, e *dlq.Entry) string {
	switch {
	case r.Kind == "badpayload":
		return "a payload the handler cannot decode is retried as transient (issue 17 item 12)"
	case r.Kind == "down" && e.Reason != dlq.ReasonMaxAttempts:
		return "a task held by an open breaker was dead-lettered (issue 13 items 1, 5)"
	case e.Reason == dlq.ReasonMaxDeliveries && c.faultsDuring(r.Published, e.Stored, "term") > 0:
		return "rolling restarts handed back deliveries that never ran, spending attempts (issue 13 item 5)"
	case e.Reason == dlq.ReasonMaxDeliveries || e.Reason == dlq.ReasonMaxAttempts:
		return "deliveries spent without a real attempt: hand-backs or holds count as deliveries (issue 13 item 5)"
	}
	return ""
}

// rerunHint names what in the schedule comes with a task's extra runs.
func (c *checker) rerunHint(id string) string {
	var hints []string
	for _, rs := range c.w.resends {
		if rs.ID == id && rs.AfterRestart {
			hints = append(hints, "re-sent after a server restart and stored again: dedup lost (issue 14 item 1)")
			break
		}
	}
	es := c.execs[id]
	for _, f := range c.w.faults {
		switch f.Kind {
		case "freeze":
			// A delivery the frozen replica had buffered or held ran after
			// SIGCONT beside the redelivery the server made meanwhile.
			for _, e := range es {
				if e.PID != f.PID || e.Start.Before(f.To) {
					continue
				}
				for _, o := range es {
					if o.Att > e.Att && o.Start.After(f.From) && o.Replay == e.Replay {
						hints = append(hints, "a delivery buffered or held by the frozen replica ran after SIGCONT beside its redelivery: stale delivery (issue 13 item 4)")
					}
				}
			}
		case "replies-off":
			for _, e := range es {
				if e.Ev == "done" && !e.End.Before(f.From) && !e.End.After(f.To) {
					hints = append(hints, "its reply could not be published (replies stream unavailable) and the handler ran again (issue 14 item 2)")
				}
			}
		case "dlq-full":
			for _, e := range es {
				if e.Ev == "perm" && !e.End.Before(f.From) && !e.End.After(f.To) {
					hints = append(hints, "the DLQ was full: the permanent failure re-ran its handler (issue 13 item 7)")
				}
			}
		case "server":
			for _, e := range es {
				if e.Ev == "done" && !e.disrupted && !e.End.Before(f.From) && !e.End.After(f.To.Add(reconnectSlack)) {
					hints = append(hints, "succeeded while the server was away; the reply failed and the handler ran again (issue 14 item 2)")
				}
			}
		}
	}
	// Two successful runs of different deliveries, both after a server
	// restart that came while the task waited (queued, or held by an open
	// breaker) and neither disrupted: the old delivery ran beside its
	// redelivery.
	var dones []*execution
	for _, e := range es {
		if e.Ev == "done" && e.Replay == "" && !e.disrupted {
			dones = append(dones, e)
		}
	}
	if r := c.w.tasks[id]; r != nil && len(dones) > 1 && dones[0].Att != dones[1].Att {
		for _, f := range c.w.faults {
			if f.Kind == "server" && f.From.After(r.Published) && f.To.Before(dones[0].Start) {
				hints = append(hints, "a delivery held or queued across a server restart ran beside its redelivery: stale delivery (issue 13 item 4 covers the frozen case only)")
				break
			}
		}
	}
	if len(hints) == 0 {
		for _, a := range dones {
			for _, b := range dones {
				if a.PID != b.PID && a.Att < b.Att && b.Start.Before(a.End.Add(c.w.s.Config.AckWait)) {
					hints = append(hints, "two deliveries of one message ran at once on two replicas although neither was disrupted: a held or queued delivery was redelivered meanwhile (no issue lists the held case)")
				}
			}
		}
	}
	slices.Sort(hints)
	return strings.Join(slices.Compact(hints), "; ")
}

func (c *checker) checkExecutions() {
	for _, id := range c.w.order {
		r := c.w.tasks[id]
		done, excused := c.count(id, "", "done")
		if done > 1+excused {
			c.add("executions-bounded", id, c.rerunHint(id), "%s task succeeded %d times; its runs disrupted by a fault: %d (bound %d)",
				r.Kind, done, excused, 1+excused)
		}
		perm, _ := c.count(id, "", "perm")
		if perm > 1+excused {
			c.add("executions-bounded", id, c.rerunHint(id), "%s task failed permanently %d times; disrupted runs %d (a permanent failure runs once)",
				r.Kind, perm, excused)
		}
		steps := map[int]int{}
		for _, e := range c.execs[id] {
			for _, s := range e.Steps {
				steps[s]++
			}
		}
		for s, n := range steps {
			if n > 1+excused {
				c.add("executions-bounded", id, c.rerunHint(id), "step %d ran %d times; disrupted runs %d", s, n, excused)
			}
		}
	}
}

func (c *checker) checkReplays() {
	// Every DLQ entry whose task ran as a replay: at most once, unless forced
	// (the schedules never force).
	bySeq := map[string]string{} // DLQ seq -> task id
	for _, l := range c.w.lines {
		if l.Replay != "" {
			bySeq[l.Replay] = l.Task
		}
	}
	for _, e := range c.w.dlq.entries {
		if e.Replays > 0 {
			if _, ok := bySeq[strconv.FormatUint(e.Seq, 10)]; !ok && len(c.w.dlq.replayed[strconv.FormatUint(e.Seq, 10)]) == 0 {
				var env envelope.Envelope
				id := "?"
				if envelope.Unmarshal(e.Data, &env) == nil {
					id = env.ID
				}
				if r := c.w.tasks[id]; r != nil && (r.Kind == "malformed" || r.Kind == "unknown" || r.Kind == "expired") {
					continue // dead-lettered again at receipt, under the original's id
				}
				c.add("replay-answered", id, "a replay marked but swallowed (issue 14 items 3, 4)",
					"DLQ entry %d is marked replayed %d time(s) but its replay never ran nor was dead-lettered again", e.Seq, e.Replays)
			}
		}
	}
	seqs := make([]string, 0, len(bySeq))
	for s := range bySeq {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		id := bySeq[seq]
		runs, excused := 0, 0
		for _, e := range c.execs[id] {
			if e.Replay != seq {
				continue
			}
			if e.disrupted {
				excused++
			}
			if e.Ev == "done" || e.Ev == "perm" || e.Ev == "crash" {
				runs++
			}
		}
		if runs > 1+excused {
			var modes []string
			for _, rr := range c.w.replays {
				modes = append(modes, rr.Mode)
			}
			c.add("replay-at-most-once", id, "replay is not at most once per entry: interrupted or concurrent replays (issue 14 item 4)",
				"DLQ entry %s replayed and run %d times (disrupted %d) by replays %v", seq, runs, excused, modes)
		}
		if runs > 0 && len(c.w.replies[id]) == 0 && len(c.w.dlq.replayed[seq]) == 0 {
			c.add("replay-answered", id, "", "replay of DLQ entry %s ran but was neither answered nor dead-lettered again", seq)
		}
	}
}

// quiet reports whether no fault other than the allowed kinds touched
// [from, to].
func (c *checker) quiet(from, to time.Time, allowed ...string) bool {
	for _, f := range c.allFaults() {
		if slices.Contains(allowed, f.Kind) {
			continue
		}
		fto := f.To
		if fto.IsZero() {
			fto = c.w.end
		}
		if !f.From.After(to) && !fto.Before(from) {
			return false
		}
	}
	return true
}

func (c *checker) firstDone(id string) (Line, bool) {
	for _, l := range c.byTask[id] {
		if l.Ev == "done" {
			return l, true
		}
	}
	return Line{}, false
}

func (c *checker) checkIsolation() {
	for _, id := range c.w.order {
		r := c.w.tasks[id]
		if !r.Healthy || !r.Accepted {
			continue
		}
		if !c.quiet(r.Published.Add(-c.w.s.Config.AckWait), r.Published.Add(healthyBound), "down") {
			continue
		}
		l, ok := c.firstDone(id)
		end := c.w.end
		if ok {
			end = l.Time()
		}
		// From when the breaker can have opened: before that, the task
		// waited behind work that ran, not behind an open breaker.
		opened, open := c.breakerOpenedAt(string(envelope.TaskRequest), r.Published, end)
		if !open {
			continue
		}
		from := maxTime(r.Published, opened)
		if took := end.Sub(from); took > healthyBound {
			c.add("breaker-isolation", id, "the open breaker of task.request held deliveries that starve message.send (issue 13 item 1)",
				"healthy message.send task published while task.request's breaker was open completed after %v (bound %v; %v after its publish)", took.Round(time.Millisecond), healthyBound, end.Sub(r.Published).Round(time.Millisecond))
		}
	}
}

func (c *checker) checkFairness() {
	if c.w.s.Config.Replicas < 2 {
		return
	}
	for i, b := range c.w.fair {
		if !b.Eligible || len(b.IDs) < 20 {
			continue
		}
		byPID := map[int]int{}
		last := b.At
		for _, id := range b.IDs {
			if l, ok := c.firstDone(id); ok {
				byPID[l.PID]++
				last = maxTime(last, l.Time())
			}
		}
		if !c.quiet(b.At.Add(-c.w.s.Config.AckWait), last, "down", "latency", "replies-off", "dlq-full", "scale") {
			continue
		}
		if c.breakerMayBeOpen(string(envelope.TaskRequest), b.At.Add(-c.w.s.Config.AckWait), last) {
			continue // a replica whose breaker is open parks its share: the others run it, as they should
		}
		total := 0
		for _, n := range byPID {
			total += n
		}
		// Until the joiner pulls, a replica that is up may take its window
		// of the burst, and refill it as its tasks finish: nobody else
		// asks. Of the rest, it may run fairShare.
		ready := c.joinerReady(b.At)
		window := c.w.s.Config.Concurrency + c.w.s.Config.Prefetch
		for pid, n := range byPID {
			before := min(total, window+c.doneBefore(pid, b.IDs, ready))
			bound := float64(before) + fairShare*float64(total-before)
			if float64(n) > bound {
				c.add("fair-share", fmt.Sprintf("burst-%d", i+1), "one replica's unbounded local queue takes the whole burst (issue 13 item 3)",
					"one replica ran %d of the %d tasks of a backlog while %d replicas were up (one joined as it arrived, ready %v after it; per pid: %v; at most the %d it pulled before (its window of %d and the %d it finished) and %.0f%% of the rest: %.1f)",
					n, total, c.w.s.Config.Replicas, ready.Sub(b.At).Round(time.Millisecond), byPID, before, window, before-min(total, window), fairShare*100, bound)
			}
		}
	}
}

// joinerReady is when the replica that joined a burst starting at from
// first pulled: the first "ready" ledger line from then on (the
// scheduleagent writes it once its runtime has started; a burst is judged
// only while no other replica restarts). With none, the joiner counts as
// ready at from, the strictest reading.
func (c *checker) joinerReady(from time.Time) time.Time {
	ready := time.Time{}
	for _, l := range c.w.lines {
		if at := l.Time(); l.Ev == "ready" && !at.Before(from) && (ready.IsZero() || at.Before(ready)) {
			ready = at
		}
	}
	if ready.IsZero() {
		return from
	}
	return ready
}

// doneBefore counts the tasks of ids that process pid finished before t.
func (c *checker) doneBefore(pid int, ids []string, t time.Time) int {
	n := 0
	for _, id := range ids {
		if l, ok := c.firstDone(id); ok && l.PID == pid && l.Time().Before(t) {
			n++
		}
	}
	return n
}

// breakerMayBeOpen reports whether some replica's breaker for payload
// type sub may have been open at some time in [from, to]: the ledger shows
// a run of at least BreakerThreshold transient failures of sub in one
// process, no success between, the last of them less than BreakerOpen (and
// an ack timeout, for the parked tasks to come back) before from. Found by
// seed 211469805: a load's transient tasks opened two replicas' breakers
// just before a scale-up burst, and the replica that joined, its breaker
// closed, rightly ran 32 of the 35 tasks.
func (c *checker) breakerMayBeOpen(sub string, from, to time.Time) bool {
	cfg := c.w.s.Config
	if cfg.BreakerThreshold <= 0 {
		return false
	}
	for _, at := range c.breakerOpenings(sub) {
		if !at.After(to) && at.Add(cfg.BreakerOpen+cfg.AckWait).After(from) {
			return true
		}
	}
	return false
}

// breakerOpenedAt returns the earliest time in [from - BreakerOpen, to]
// at which some replica's breaker for payload type sub can have opened
// (see breakerOpenings). With no threshold configured (a unit test's
// world), the breaker counts as open from from on.
func (c *checker) breakerOpenedAt(sub string, from, to time.Time) (time.Time, bool) {
	cfg := c.w.s.Config
	if cfg.BreakerThreshold <= 0 {
		return from, true
	}
	var opened time.Time
	for _, at := range c.breakerOpenings(sub) {
		if !at.After(to) && at.Add(cfg.BreakerOpen).After(from) && (opened.IsZero() || at.Before(opened)) {
			opened = at
		}
	}
	return opened, !opened.IsZero()
}

// breakerOpenings returns the times at which some replica's breaker for
// payload type sub can have opened, or opened again after a failed probe:
// each failure that is at least the BreakerThreshold-th of a run of them
// in one process, no success between.
func (c *checker) breakerOpenings(sub string) []time.Time {
	var out []time.Time
	failures := map[int]int{} // consecutive, by pid
	for _, l := range c.w.lines {
		if l.Sub != sub {
			continue
		}
		switch {
		case l.Ev == "done":
			failures[l.PID] = 0
		case l.Ev == "fail" && l.Kind != "badpayload": // an undecodable payload is permanent
			failures[l.PID]++
			if failures[l.PID] >= c.w.s.Config.BreakerThreshold {
				out = append(out, l.Time())
			}
		}
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (c *checker) checkSends() {
	for _, s := range c.w.sends {
		if s.Err == nil {
			res := ""
			if rs := c.w.replies[s.ID]; len(rs) > 0 {
				res = rs[0].Task
			}
			if s.Reply == nil || s.Reply.CorrelationID != s.ID {
				c.add("send-own-reply", s.ID, "", "Send succeeded with a reply that is not its task's: %+v", s.Reply)
			} else if res != "" && res != s.ID {
				c.add("send-own-reply", s.ID, "", "Send's reply carries the result of task %s", res)
			}
			continue
		}
		gaveUp := s.End.Add(-200 * time.Millisecond)
		if l, ok := c.firstDone(s.ID); ok && l.Time().Before(gaveUp) && !c.storedAfter(s.ID, gaveUp) {
			hint := ""
			if c.faultsDuring(s.Start, s.End, "drop") > 0 {
				hint = "the reply was published while the client was reconnecting and the client never looked in the replies stream (issue 14 item 6)"
			}
			c.add("send-error-means-not-done", s.ID, hint, "Send returned %q at %s although the task succeeded at %s (%d replies stored)",
				s.Err, s.End.Format("15:04:05.000"), l.Time().Format("15:04:05.000"), len(c.w.replies[s.ID]))
		}
	}
}

// storedAfter reports whether the replies to task id were all stored after
// t (and there are some): a reply the replies stream kept back (off, or
// the server away) until a Send had given up, which neither its live
// subscription nor its look-up could have read.
func (c *checker) storedAfter(id string, t time.Time) bool {
	rs := c.w.replies[id]
	for _, r := range rs {
		if !r.Stored.After(t) {
			return false
		}
	}
	return len(rs) > 0
}

func (c *checker) checkProcesses() {
	for _, e := range c.w.exits {
		if e.Code == 0 || e.Signaled == "killed" || e.Code == 3 || e.Code == 4 { // 3: poison, 4: could not connect (restarted)
			continue
		}
		if e.Signaled == "terminated" {
			continue // SIGTERM before Go installed its handler (a restart the schedule interrupted at once)
		}
		c.add("agent-exits-cleanly", fmt.Sprintf("pid-%d", e.PID), "", "agent process exited with code %d (signal %q)", e.Code, e.Signaled)
	}
	first, last := map[int]sample{}, map[int]sample{}
	started := map[int]time.Time{}
	for _, e := range c.w.exits {
		started[e.PID] = e.Started
	}
	for _, s := range c.w.samples {
		if s.RSS > maxRSS {
			c.add("bounded-memory", fmt.Sprintf("pid-%d", s.PID), "", "resident memory %.0f MiB (bound %d MiB)", s.RSS/(1<<20), maxRSS>>20)
		}
		if _, ok := first[s.PID]; !ok {
			first[s.PID] = s
		}
		last[s.PID] = s
	}
	for pid, l := range last {
		f := first[pid]
		if l.At.Sub(f.At) < 5*time.Second {
			continue
		}
		if l.Goroutines > f.Goroutines+goroutineGrowth {
			c.add("no-goroutine-growth", fmt.Sprintf("pid-%d", pid), "", "goroutines grew from %.0f to %.0f at quiescence", f.Goroutines, l.Goroutines)
		}
	}
}
