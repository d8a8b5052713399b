package console

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
)

// Job is a long action (a replay or a purge) running in the background,
// with its progress. Its counters are read under its lock (see view).
type Job struct {
	ID      int
	Kind    string // "replay" or "purge"
	User    User
	Remote  string
	Target  string // what it works on, in words
	Options string // rate, target agent, force
	// Expected is the count the operator confirmed.
	Expected int

	mu                                sync.Mutex
	replayed, skipped, failed, purged int
	inDoubt                           int    // published, storage unconfirmed (marked replayed)
	state                             string // running, done, cancelled, failed
	errs                              []string
	started, finished                 time.Time
	seqs                              []uint64 // entries acted on, up to maxAuditSeqs
	cancel                            chan struct{}
	cancelOnce                        sync.Once
	lastEvent                         time.Time
}

// jobView is a consistent copy of a job's state, for templates.
type jobView struct {
	ID                                          int
	Kind, Target, Options, State, User          string
	Expected, Replayed, Skipped, Failed, Purged int
	InDoubt                                     int
	Done                                        int
	Errors                                      []string
	Started, Finished                           time.Time
	Percent                                     int
}

func (j *Job) view() jobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := jobView{ID: j.ID, Kind: j.Kind, Target: j.Target, Options: j.Options, State: j.state, User: j.User.Name,
		Expected: j.Expected, Replayed: j.replayed, Skipped: j.skipped, Failed: j.failed, Purged: j.purged, InDoubt: j.inDoubt,
		Errors: append([]string(nil), j.errs...), Started: j.started, Finished: j.finished}
	v.Done = j.replayed + j.skipped + j.failed + j.purged + j.inDoubt
	if j.Expected > 0 {
		v.Percent = min(100, v.Done*100/j.Expected)
	} else if j.state != "running" {
		v.Percent = 100
	}
	return v
}

// Running reports whether the job has not ended.
func (v jobView) Running() bool { return v.State == "running" }

// Summary says what the job did, in words.
func (v jobView) Summary() string {
	if v.Kind == "purge" {
		return fmt.Sprintf("purged %d of %d", v.Purged, v.Expected)
	}
	s := fmt.Sprintf("replayed %d, already replayed %d, failed %d", v.Replayed, v.Skipped, v.Failed)
	if v.InDoubt > 0 {
		s += fmt.Sprintf(", in doubt %d (published, unconfirmed: marked replayed)", v.InDoubt)
	}
	return s + fmt.Sprintf(" (of %d)", v.Expected)
}

// requestCancel asks the job to stop after the chunk in hand.
func (j *Job) requestCancel() {
	j.cancelOnce.Do(func() { close(j.cancel) })
}

func (j *Job) cancelled() bool {
	select {
	case <-j.cancel:
		return true
	default:
		return false
	}
}

// jobs keeps every job of this console process.
type jobs struct {
	mu   sync.Mutex
	next int
	all  map[int]*Job
	wg   sync.WaitGroup
}

func (js *jobs) add(j *Job) {
	js.mu.Lock()
	defer js.mu.Unlock()
	if js.all == nil {
		js.all = map[int]*Job{}
	}
	js.next++
	j.ID = js.next
	j.state = "running"
	j.started = time.Now().UTC()
	j.cancel = make(chan struct{})
	js.all[j.ID] = j
}

func (js *jobs) get(id int) *Job {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.all[id]
}

// list returns the jobs, newest first.
func (js *jobs) list() []jobView {
	js.mu.Lock()
	all := make([]*Job, 0, len(js.all))
	for _, j := range js.all {
		all = append(all, j)
	}
	js.mu.Unlock()
	out := make([]jobView, len(all))
	for i, j := range all {
		out[i] = j.view()
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID > out[b].ID })
	return out
}

// replaySpec is what an operator confirmed for a replay.
type replaySpec struct {
	q      dlqQuery
	upTo   uint64
	force  bool
	rate   float64
	target string // other agent, "" for the original one
}

// chunkFor is how many entries one dlq.Store.Replay call gets: about half
// a second of work at the rate, so that a cancel takes effect within that
// and never interrupts a call (each call writes its marks before it
// returns, so marks stay right whatever the moment of the cancel).
func chunkFor(rate float64) int {
	if rate <= 0 {
		return 500
	}
	return max(1, min(500, int(rate/2)))
}

// runReplay replays what spec selects, through dlq.Store.Replay, chunk by
// chunk, until done or cancelled.
func (s *Server) runReplay(j *Job, spec replaySpec) {
	ctx := s.jobCtx
	err := s.each(ctx, spec.q, spec.upTo, chunkFor(spec.rate), func(chunk []*dlq.Entry) error {
		if j.cancelled() {
			return errCancelled
		}
		groups := map[string][]*dlq.Entry{}
		var order []string
		for _, e := range chunk {
			to := ""
			if spec.target != "" {
				typ := taskType(s.cfg.Topology, e.Subject)
				if typ == "" {
					j.record(e, dlq.Failed, fmt.Errorf("entry %d: subject %s is not a task subject: cannot send it to %s", e.Seq, e.Subject, spec.target))
					continue
				}
				to = s.cfg.Topology.TaskSubject(spec.target, envelope.PayloadType(typ))
			}
			if _, ok := groups[to]; !ok {
				order = append(order, to)
			}
			groups[to] = append(groups[to], e)
		}
		for _, to := range order {
			_, err := s.store.Replay(ctx, groups[to], dlq.ReplayOptions{
				To: to, Force: spec.force, Rate: spec.rate,
				Progress: func(e *dlq.Entry, o dlq.Outcome, err error) { j.record(e, o, err); s.jobEvent(j, false) },
			})
			if err != nil && ctx.Err() != nil {
				return err
			}
			// Other errors are the failed entries, counted by Progress.
		}
		return nil
	})
	s.finish(j, err)
}

// runPurge deletes what q selects, up to upTo, chunk by chunk.
func (s *Server) runPurge(j *Job, q dlqQuery, upTo uint64) {
	ctx := s.jobCtx
	err := s.each(ctx, q, upTo, 500, func(chunk []*dlq.Entry) error {
		if j.cancelled() {
			return errCancelled
		}
		n, err := s.store.Delete(ctx, chunk)
		j.mu.Lock()
		j.purged += n
		for _, e := range chunk[:n] {
			if len(j.seqs) < maxAuditSeqs {
				j.seqs = append(j.seqs, e.Seq)
			}
		}
		j.mu.Unlock()
		s.jobEvent(j, false)
		return err
	})
	s.finish(j, err)
}

var errCancelled = errors.New("cancelled")

func (j *Job) record(e *dlq.Entry, o dlq.Outcome, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch o {
	case dlq.Replayed:
		j.replayed++
		if len(j.seqs) < maxAuditSeqs {
			j.seqs = append(j.seqs, e.Seq)
		}
	case dlq.AlreadyReplayed:
		j.skipped++
	case dlq.Failed:
		j.failed++
	case dlq.InDoubt:
		j.inDoubt++
	}
	if err != nil && len(j.errs) < 20 { // failed or in doubt
		j.errs = append(j.errs, err.Error())
	}
}

// finish ends j, audits the outcome and tells the pages.
func (s *Server) finish(j *Job, err error) {
	j.mu.Lock()
	j.finished = time.Now().UTC()
	switch {
	case errors.Is(err, errCancelled):
		j.state = "cancelled"
	case err != nil:
		j.state = "failed"
		j.errs = append(j.errs, err.Error())
	default:
		j.state = "done"
	}
	outcome := j.state
	if err != nil && !errors.Is(err, errCancelled) {
		outcome = "failed: " + err.Error()
	}
	count := j.replayed + j.purged
	seqs := append([]uint64(nil), j.seqs...)
	j.mu.Unlock()
	s.audit.add(AuditRecord{User: j.User.Name, Role: j.User.Role, Remote: j.Remote, Action: j.Kind, Target: j.Target,
		Count: count, Outcome: outcome, Job: j.ID, Seqs: seqs})
	s.jobEvent(j, true)
	v := j.view()
	s.hub.publish(Event{Kind: "audit", Text: fmt.Sprintf("job %d (%s by %s) %s: %s", j.ID, j.Kind, j.User.Name, v.State, v.Summary()),
		Link: fmt.Sprintf("/jobs/%d", j.ID)})
}

// jobEvent tells the job's page of its progress, at most every 200ms
// (and always at the end).
func (s *Server) jobEvent(j *Job, final bool) {
	j.mu.Lock()
	now := time.Now()
	if !final && now.Sub(j.lastEvent) < 200*time.Millisecond {
		j.mu.Unlock()
		return
	}
	j.lastEvent = now
	j.mu.Unlock()
	v := j.view()
	s.hub.publish(Event{Kind: "job", Job: j.ID, Done: final, Percent: v.Percent, Text: v.Summary() + " — " + v.State})
}

// startJob registers j and runs fn in the background; Shutdown waits for
// it.
func (s *Server) startJob(j *Job, fn func()) {
	s.jobs.add(j)
	s.audit.add(AuditRecord{User: j.User.Name, Role: j.User.Role, Remote: j.Remote, Action: j.Kind, Target: j.Target,
		Count: j.Expected, Outcome: "started", Job: j.ID})
	s.jobs.wg.Add(1)
	go func() {
		defer s.jobs.wg.Done()
		fn()
	}()
}

// dryRun counts what a replay of q would do: entries that would be
// replayed, and entries already replayed (skipped unless forced).
func (s *Server) dryRun(ctx context.Context, q dlqQuery, upTo uint64) (would, already int, err error) {
	err = s.each(ctx, q, upTo, 500, func(chunk []*dlq.Entry) error {
		res, err := s.store.Replay(ctx, chunk, dlq.ReplayOptions{DryRun: true})
		would += res.WouldReplay
		already += res.Skipped
		return err
	})
	return would, already, err
}

// count counts the entries q selects up to upTo.
func (s *Server) count(ctx context.Context, q dlqQuery, upTo uint64) (int, error) {
	n := 0
	err := s.each(ctx, q, upTo, 500, func(chunk []*dlq.Entry) error {
		n += len(chunk)
		return nil
	})
	return n, err
}
