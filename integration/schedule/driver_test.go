package schedule

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const agentName = "sched"

// work is the payload the schedule agent reads (see testdata/scheduleagent).
type work struct {
	Kind  string `msgpack:"kind"`
	Ms    int    `msgpack:"ms"`
	Fail  int    `msgpack:"fail"`
	Steps int    `msgpack:"steps"`
}

// taskRec is what the driver knows of one task it published.
type taskRec struct {
	ID        string // envelope id (for malformed bytes: the message id)
	Kind      string // the agent's kind, or unknown, malformed, expired, badpayload, cancel
	Type      envelope.PayloadType
	Fail      int
	Step      int // index of the step that published it
	Published time.Time
	Seq       uint64 // tasks-stream sequence (first store)
	Accepted  bool   // the server acknowledged it (or the Send returned its reply)
	Via       string // raw or send
	Msg       *nats.Msg
	CancelOf  string // a task.cancel: the task it cancels
	Cancelled bool   // a task.cancel was sent for it
	Healthy   bool   // a healthy-subject task published while a breaker was open
	Fair      int    // fair burst number + 1
}

type sendRec struct {
	ID         string
	Start, End time.Time
	Err        error
	Reply      *envelope.Envelope
}

// fault is one fault the driver injected. PID 0 means every process (the
// server went away).
type fault struct {
	Kind     string // kill, freeze, term, server, drop, latency, replies-off, dlq-full, down
	Replica  int
	PID      int
	From, To time.Time
}

type resendRec struct {
	ID           string
	At           time.Time
	AfterRestart bool
}

type replayRun struct {
	Mode       string
	Args       []string
	Start, End time.Time
	Code       int
	Out        string
}

type fairBurst struct {
	IDs      []string
	At       time.Time
	Eligible bool // every replica up for 2 AckWaits when it began, none frozen
}

// driver runs a schedule against the system and records everything it did.
type driver struct {
	t        testing.TB
	s        Schedule
	dir      string
	topo     bus.Topology
	srv      *server
	admin    *bus.Conn
	js       jetstream.JetStream
	client   *runtime.Client
	clientPx *proxy
	pxs      []*proxy
	replicas []*replica
	downFile string
	ledger   string
	replay   string // cmd/replay binary
	begin    time.Time

	mu       sync.Mutex
	tasks    map[string]*taskRec
	order    []string
	sends    []*sendRec
	faults   []*fault
	resends  []resendRec
	replays  []replayRun
	fair     []fairBurst
	restarts []time.Time // server restarts (ready again)
	notes    []string
	poisons  int
	// replaySeen are the replayed runs the ledger had when the last replay
	// began.
	replaySeen map[string]bool
}

func (d *driver) logf(format string, a ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.notes = append(d.notes, fmt.Sprintf("%6.2fs ", time.Since(d.begin).Seconds())+fmt.Sprintf(format, a...))
}

func (d *driver) addFault(f *fault) *fault {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.faults = append(d.faults, f)
	return f
}

func (d *driver) endFault(f *fault) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f.To = time.Now()
}

func (d *driver) addTask(r *taskRec) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.tasks[r.ID]; !ok {
		d.order = append(d.order, r.ID)
	}
	d.tasks[r.ID] = r
}

// publishRaw publishes msg, re-sending it under the same id while the
// server is away (a bounded number of times). It returns the stream
// sequence, or 0 when it was never acknowledged.
func (d *driver) publishRaw(msg *nats.Msg) (uint64, bool) {
	for range 40 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := d.js.PublishMsg(ctx, msg)
		cancel()
		if err == nil {
			return ack.Sequence, true
		}
		time.Sleep(200 * time.Millisecond) // the server restarts: retry the publish
	}
	return 0, false
}

// task publishes one task of kind on typ and records it.
func (d *driver) task(step int, kind string, typ envelope.PayloadType, w work, mutate func(*envelope.Envelope)) *taskRec {
	d.t.Helper()
	w.Kind = kind
	env, err := envelope.New("driver", agentName, typ, w)
	if err != nil {
		d.t.Fatal(err)
	}
	env.ReplyTo = d.topo.ReplySubject("raw") + "." + env.ID
	if mutate != nil {
		mutate(env)
	}
	msg, err := bus.EnvelopeMsg(d.topo.TaskSubject(agentName, typ), env)
	if err != nil {
		d.t.Fatal(err)
	}
	r := &taskRec{ID: env.ID, Kind: kind, Type: typ, Fail: w.Fail, Step: step, Via: "raw", Msg: msg, Published: time.Now()}
	d.addTask(r)
	seq, ok := d.publishRaw(msg)
	d.mu.Lock()
	r.Seq, r.Accepted = seq, ok
	d.mu.Unlock()
	return r
}

// special publishes a task the runtime must dead-letter at receipt.
func (d *driver) special(step int, kind string, rng *rand.Rand) *taskRec {
	switch kind {
	case "unknown": // no handler for task.response on a tasks subject
		return d.task(step, kind, envelope.TaskResponse, work{}, nil)
	case "expired":
		return d.task(step, kind, envelope.TaskRequest, work{Ms: 10}, func(e *envelope.Envelope) {
			e.Deadline = time.Now().Add(-time.Second)
		})
	case "badpayload": // a valid envelope whose payload the handler cannot decode
		r := d.task(step, kind, envelope.TaskRequest, work{}, func(e *envelope.Envelope) {
			e.Payload, _ = envelope.EncodePayload("not a work map")
		})
		return r
	case "malformed":
		id := "junk-" + envelope.NewID()
		junk := make([]byte, 16+rng.IntN(64))
		for i := range junk {
			junk[i] = byte(rng.IntN(256))
		}
		junk[0] = 0xc1 // never valid msgpack
		msg := &nats.Msg{Subject: d.topo.TaskSubject(agentName, envelope.TaskRequest), Data: junk, Header: nats.Header{bus.HeaderMsgID: []string{id}}}
		r := &taskRec{ID: id, Kind: kind, Type: envelope.TaskRequest, Step: step, Via: "raw", Msg: msg, Published: time.Now()}
		d.addTask(r)
		seq, ok := d.publishRaw(msg)
		d.mu.Lock()
		r.Seq, r.Accepted = seq, ok
		d.mu.Unlock()
		return r
	}
	panic("special kind " + kind)
}

// send runs one client Send of an ok task and records its result.
func (d *driver) send(ctx context.Context, step, ms int) {
	env, err := envelope.New("driver", agentName, envelope.TaskRequest, work{Kind: "ok", Ms: ms})
	if err != nil {
		d.t.Error(err)
		return
	}
	r := &taskRec{ID: env.ID, Kind: "ok", Type: envelope.TaskRequest, Step: step, Via: "send", Published: time.Now()}
	d.addTask(r)
	rec := &sendRec{ID: env.ID, Start: time.Now()}
	rep, err := d.client.Send(ctx, env)
	rec.End, rec.Err, rec.Reply = time.Now(), err, rep
	d.mu.Lock()
	d.sends = append(d.sends, rec)
	r.Accepted = err == nil
	d.mu.Unlock()
}

// load publishes n tasks of a mix of kinds.
func (d *driver) load(step int, n int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for range n {
		c := d.s.Config
		switch x := rng.IntN(100); {
		case x < 40:
			d.task(step, "ok", envelope.TaskRequest, work{Ms: 20 + rng.IntN(180)}, nil)
		case x < 45:
			d.task(step, "long", envelope.TaskRequest, work{Ms: int(c.AckWait.Milliseconds()) * 3 / 2}, nil)
		case x < 53:
			d.task(step, "steps", envelope.TaskRequest, work{Steps: 3, Ms: 150}, nil)
		case x < 65:
			d.task(step, "transient", envelope.TaskRequest, work{Ms: 10, Fail: 1 + rng.IntN(c.MaxDeliver+1)}, nil)
		case x < 71:
			d.task(step, "perm", envelope.TaskRequest, work{}, nil)
		case x < 73:
			d.mu.Lock()
			ok := d.poisons < 2
			d.poisons++
			d.mu.Unlock()
			if ok {
				d.task(step, "poison", envelope.TaskRequest, work{}, nil)
			}
		case x < 78:
			d.special(step, "unknown", rng)
		case x < 83:
			d.special(step, "malformed", rng)
		case x < 88:
			d.special(step, "expired", rng)
		case x < 92:
			d.special(step, "badpayload", rng)
		case x < 96: // the same task twice before it is consumed
			r := d.task(step, "ok", envelope.MessageSend, work{Ms: 50}, nil)
			if _, ok := d.publishRaw(r.Msg); ok {
				d.mu.Lock()
				d.resends = append(d.resends, resendRec{ID: r.ID, At: time.Now()})
				d.mu.Unlock()
			}
		default:
			d.task(step, "ok", envelope.MessageSend, work{Ms: 20 + rng.IntN(80)}, nil)
		}
	}
}

func (d *driver) backlog(step, n int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	for range n {
		d.task(step, "ok", envelope.TaskRequest, work{Ms: 50 + rng.IntN(100)}, nil)
	}
}

// run executes the schedule's steps, each at its offset, and returns when
// all are done and every fault is healed.
func (d *driver) run(ctx context.Context) {
	d.begin = time.Now()
	var wg sync.WaitGroup
	for i, st := range d.s.Steps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Until(d.begin.Add(st.At))):
			case <-ctx.Done():
				return
			}
			d.logf("step %d begins: %s", i, st)
			d.step(ctx, i, st)
			d.logf("step %d ends", i)
		}()
	}
	wg.Wait()
}

func (d *driver) step(ctx context.Context, i int, st Step) {
	c := d.s.Config
	switch st.Op {
	case OpLoad:
		d.load(i, st.N, st.Seed)
	case OpSends:
		rng := rand.New(rand.NewPCG(st.Seed, 3))
		var wg sync.WaitGroup
		for range st.N {
			ms := 50 + rng.IntN(250)
			wg.Go(func() { d.send(ctx, i, ms) })
		}
		wg.Wait()
	case OpSendsDrop:
		var wg sync.WaitGroup
		for range st.N {
			wg.Go(func() { d.send(ctx, i, st.Ms) })
		}
		time.Sleep(300 * time.Millisecond) // the handlers are running now
		f := d.addFault(&fault{Kind: "drop", Replica: -1, PID: os.Getpid(), From: time.Now()})
		d.clientPx.drop()
		time.Sleep(st.For)
		if err := d.clientPx.restore(); err != nil {
			d.t.Errorf("restore client proxy: %v", err)
		}
		d.endFault(f)
		wg.Wait()
	case OpBreaker:
		if err := os.WriteFile(d.downFile, nil, 0o644); err != nil {
			d.t.Error(err)
			return
		}
		f := d.addFault(&fault{Kind: "down", Replica: -1, From: time.Now()})
		for range st.N {
			d.task(i, "down", envelope.TaskRequest, work{Ms: 10}, nil)
		}
		for time.Since(f.From) < st.For {
			r := d.task(i, "ok", envelope.MessageSend, work{Ms: 20}, nil)
			d.mu.Lock()
			r.Healthy = true
			d.mu.Unlock()
			time.Sleep(250 * time.Millisecond) // a steady trickle of healthy work
		}
		_ = os.Remove(d.downFile)
		d.endFault(f)
	case OpFair:
		// Scale-up: replica Target is down while a backlog arrives, then
		// joins; the replicas up meanwhile must leave it its share.
		r := d.replicas[st.Target]
		eligible := true
		for ri, o := range d.replicas {
			o.mu.Lock()
			if ri != st.Target && (o.cmd == nil || o.frozen || time.Since(o.started) < 2*c.AckWait) {
				eligible = false
			}
			o.mu.Unlock()
		}
		pid := r.holdDown()
		f := d.addFault(&fault{Kind: "scale", Replica: st.Target, PID: pid, From: time.Now()})
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		for r.pid() != 0 && wctx.Err() == nil {
			time.Sleep(20 * time.Millisecond) // waiting for the scale-down
		}
		b := fairBurst{At: time.Now(), Eligible: eligible && r.pid() == 0}
		d.mu.Lock()
		n := len(d.fair)
		d.fair = append(d.fair, fairBurst{})
		d.mu.Unlock()
		ms := 80 * c.Concurrency // the others' throughput is the same whatever their concurrency
		for range st.N {
			t := d.task(i, "ok", envelope.TaskRequest, work{Ms: ms}, nil)
			d.mu.Lock()
			t.Fair = n + 1
			d.mu.Unlock()
			b.IDs = append(b.IDs, t.ID)
		}
		r.release()
		err := r.waitUp(wctx)
		cancel()
		d.endFault(f)
		if err != nil {
			b.Eligible = false
		}
		d.mu.Lock()
		d.fair[n] = b
		d.mu.Unlock()
		time.Sleep(time.Duration(st.N*80)*time.Millisecond + 2*time.Second)
	case OpKill:
		d.backlog(i, st.N, st.Seed)
		time.Sleep(300 * time.Millisecond)
		r := d.replicas[st.Target]
		now := time.Now()
		if pid := r.signal(syscall.SIGKILL); pid != 0 {
			d.addFault(&fault{Kind: "kill", Replica: st.Target, PID: pid, From: now, To: now})
		}
		time.Sleep(c.RestartDelay + time.Second)
	case OpFreeze:
		d.backlog(i, st.N, st.Seed)
		time.Sleep(300 * time.Millisecond)
		r := d.replicas[st.Target]
		now := time.Now()
		pid := r.signal(syscall.SIGSTOP)
		if pid == 0 {
			return
		}
		f := d.addFault(&fault{Kind: "freeze", Replica: st.Target, PID: pid, From: now})
		time.Sleep(st.For)
		r.signal(syscall.SIGCONT)
		d.endFault(f)
	case OpRolling:
		// A backlog arrives before each restart: queued work, and tasks at
		// their last delivery (MaxDeliver-1 failures behind them), which a
		// restart must hand back without spending an attempt.
		rng := rand.New(rand.NewPCG(st.Seed, 5))
		chunk := max(1, st.N/(st.Rounds*c.Replicas))
		for range st.Rounds {
			for ri, r := range d.replicas {
				for range chunk {
					if rng.IntN(10) < 3 {
						d.task(i, "transient", envelope.TaskRequest, work{Ms: 10, Fail: c.MaxDeliver - 1}, nil)
					} else {
						d.task(i, "ok", envelope.TaskRequest, work{Ms: 100 * c.Concurrency}, nil)
					}
				}
				time.Sleep(200 * time.Millisecond)
				now := time.Now()
				pid := r.signal(syscall.SIGTERM)
				if pid == 0 {
					continue
				}
				f := d.addFault(&fault{Kind: "term", Replica: ri, PID: pid, From: now})
				wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				for r.pid() == pid && wctx.Err() == nil {
					time.Sleep(20 * time.Millisecond) // waiting for the old process to exit
				}
				err := r.waitUp(wctx)
				cancel()
				d.endFault(f)
				if err != nil {
					d.logf("rolling: %v", err)
				}
				time.Sleep(300 * time.Millisecond)
			}
		}
	case OpServerCrash:
		// Tasks answered just before the crash, re-sent (same ids, inside
		// the duplicate window) once the server is back: a client that
		// could not tell whether its publish got through.
		var fresh []*taskRec
		for range st.N {
			fresh = append(fresh, d.task(i, "ok", envelope.TaskRequest, work{Ms: 20}, nil))
		}
		d.waitAnswered(ctx, fresh, 5*time.Second)
		// Consumed for good: past the settlement's slack, so the checker
		// excuses no re-run of them.
		time.Sleep(2 * settleSlack)
		f := d.addFault(&fault{Kind: "server", Replica: -1, From: time.Now()})
		d.srv.kill()
		time.Sleep(st.For)
		if err := d.srv.start(); err != nil {
			d.t.Errorf("server restart: %v", err)
		}
		d.endFault(f)
		d.mu.Lock()
		d.restarts = append(d.restarts, time.Now())
		d.mu.Unlock()
		for _, r := range fresh {
			if r.Accepted {
				if _, ok := d.publishRaw(r.Msg); ok {
					d.mu.Lock()
					d.resends = append(d.resends, resendRec{ID: r.ID, At: time.Now(), AfterRestart: true})
					d.mu.Unlock()
				}
			}
		}
	case OpResend:
		d.resend(st.N, st.Seed)
	case OpDrop:
		r := d.replicas[st.Target]
		f := d.addFault(&fault{Kind: "drop", Replica: st.Target, PID: r.pid(), From: time.Now()})
		d.pxs[st.Target].drop()
		time.Sleep(st.For)
		if err := d.pxs[st.Target].restore(); err != nil {
			d.t.Errorf("restore proxy: %v", err)
		}
		d.endFault(f)
	case OpLatency:
		r := d.replicas[st.Target]
		f := d.addFault(&fault{Kind: "latency", Replica: st.Target, PID: r.pid(), From: time.Now()})
		if err := d.pxs[st.Target].latency(st.Ms); err != nil {
			d.t.Errorf("latency: %v", err)
			return
		}
		time.Sleep(st.For)
		d.pxs[st.Target].clearLatency()
		d.endFault(f)
	case OpRepliesOff:
		f := d.addFault(&fault{Kind: "replies-off", Replica: -1, From: time.Now()})
		restore := d.updateStream(ctx, d.topo.RepliesStream(), func(c *jetstream.StreamConfig) {
			c.Subjects = []string{"schedule-off.replies.>"}
		})
		for range st.N {
			d.task(i, "ok", envelope.TaskRequest, work{Ms: 50}, nil)
		}
		time.Sleep(st.For)
		restore()
		d.endFault(f)
	case OpDLQFull:
		f := d.addFault(&fault{Kind: "dlq-full", Replica: -1, From: time.Now()})
		restore := d.updateStream(ctx, d.topo.DLQStream(), func(c *jetstream.StreamConfig) {
			c.MaxMsgs = -1 // set below from the state
		})
		restore()
		st2, err := d.js.Stream(ctx, d.topo.DLQStream())
		if err == nil {
			info, ierr := st2.Info(ctx)
			if ierr == nil {
				restore = d.updateStream(ctx, d.topo.DLQStream(), func(c *jetstream.StreamConfig) {
					c.MaxMsgs = max(int64(info.State.Msgs), 1)
				})
			}
		}
		for range st.N {
			d.task(i, "perm", envelope.TaskRequest, work{}, nil)
		}
		time.Sleep(st.For)
		restore()
		d.endFault(f)
	case OpReplay:
		var ids []*taskRec
		for range st.N {
			ids = append(ids, d.task(i, "permreplay", envelope.TaskRequest, work{}, nil))
		}
		d.waitDeadLettered(ctx, ids, 45*time.Second) // an open breaker may hold them a while
		base := []string{"--nats", d.srv.URL(), "--timeout", "20s"}
		switch st.Mode {
		case "whole":
			d.runReplay(ctx, st.Mode, append(base, "replay", "--yes", "-q")...)
		case "filtered":
			d.runReplay(ctx, st.Mode, append(base, "replay", "--yes", "-q", "--reason", "permanent", "--agent", agentName)...)
		case "interrupted":
			// Ctrl-C once the first replayed task ran (the rate limiter
			// keeps the rest waiting).
			d.runReplayUntil(ctx, st.Mode, d.firstReplayRan, "--nats", d.srv.URL(), "--timeout", "30s", "replay", "--yes", "-q", "--rate", "2", "--reason", "permanent")
			time.Sleep(c.DupWindow + time.Second) // past the duplicate window, an operator runs it again
			d.runReplay(ctx, st.Mode+"-rerun", append(base, "replay", "--yes", "-q", "--reason", "permanent")...)
		case "twice":
			var wg sync.WaitGroup
			for k := range 2 {
				wg.Go(func() {
					d.runReplay(ctx, fmt.Sprintf("%s-%d", st.Mode, k), append(base, "replay", "--yes", "-q", "--reason", "permanent", "--rate", "20")...)
				})
			}
			wg.Wait()
		}
	case OpCancel:
		r := d.task(i, "steps", envelope.TaskRequest, work{Steps: st.N, Ms: st.Ms}, nil)
		d.mu.Lock()
		r.Cancelled = true
		d.mu.Unlock()
		time.Sleep(time.Duration(st.Ms*3/2) * time.Millisecond)
		cr := d.task(i, "cancel", envelope.TaskCancel, work{}, func(e *envelope.Envelope) { e.TaskID = r.ID; e.Payload = nil })
		d.mu.Lock()
		cr.CancelOf = r.ID
		d.mu.Unlock()
	}
}

// resend re-publishes n answered tasks (same message, same id).
func (d *driver) resend(n int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 4))
	d.mu.Lock()
	var cands []*taskRec
	for _, id := range d.order {
		r := d.tasks[id]
		// Answered by now, and still inside the duplicate window: the
		// server must drop the copy (a re-send later than the window is a
		// new task by design).
		age := time.Since(r.Published)
		if r.Via == "raw" && r.Kind == "ok" && r.Accepted && !r.Healthy && r.Fair == 0 && age > 2*time.Second && age < d.s.Config.DupWindow-2*time.Second {
			cands = append(cands, r)
		}
	}
	d.mu.Unlock()
	rng.Shuffle(len(cands), func(a, b int) { cands[a], cands[b] = cands[b], cands[a] })
	for _, r := range cands[:min(n, len(cands))] {
		d.mu.Lock()
		after := len(d.restarts) > 0 && d.restarts[len(d.restarts)-1].After(r.Published)
		d.mu.Unlock()
		if _, ok := d.publishRaw(r.Msg); ok {
			d.mu.Lock()
			d.resends = append(d.resends, resendRec{ID: r.ID, At: time.Now(), AfterRestart: after})
			d.mu.Unlock()
		}
	}
}

// updateStream changes a stream's configuration and returns the function
// that puts the original back.
func (d *driver) updateStream(ctx context.Context, name string, change func(*jetstream.StreamConfig)) (restore func()) {
	s, err := d.js.Stream(ctx, name)
	if err != nil {
		d.t.Errorf("stream %s: %v", name, err)
		return func() {}
	}
	orig := s.CachedInfo().Config
	next := orig
	change(&next)
	if _, err := d.js.UpdateStream(ctx, next); err != nil {
		d.t.Errorf("update stream %s: %v", name, err)
		return func() {}
	}
	return func() {
		for range 20 {
			uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := d.js.UpdateStream(uctx, orig)
			cancel()
			if err == nil {
				return
			}
			time.Sleep(250 * time.Millisecond) // the server may be restarting
		}
		d.t.Errorf("stream %s: could not restore its configuration", name)
	}
}

// waitDeadLettered waits (bounded) until every task of ids is in the DLQ.
func (d *driver) waitDeadLettered(ctx context.Context, ids []*taskRec, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		dl, err := readDLQ(ctx, d.js, d.topo)
		if err == nil {
			missing := 0
			for _, r := range ids {
				if _, ok := dl.byTask[r.ID]; !ok {
					missing++
				}
			}
			if missing == 0 {
				return
			}
		}
		time.Sleep(300 * time.Millisecond) // polling the DLQ
	}
	d.logf("replay: not every task reached the DLQ within %v", limit)
}

func (d *driver) runReplay(ctx context.Context, mode string, args ...string) {
	d.runReplayUntil(ctx, mode, nil, args...)
}

// firstReplayRan waits (bounded) until the ledger shows a replayed task.
func (d *driver) firstReplayRan(ctx context.Context) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if b, err := os.ReadFile(d.ledger); err == nil && bytes.Contains(b, []byte(`"replay":"`)) {
			lines, _ := readLedger(d.ledger)
			for _, l := range lines {
				if l.Replay != "" && l.Time().After(d.begin) {
					d.mu.Lock()
					seen := d.replaySeen[l.Task+"/"+l.Replay]
					d.mu.Unlock()
					if !seen {
						return
					}
				}
			}
		}
		time.Sleep(50 * time.Millisecond) // polling the ledger
	}
}

// runReplayUntil runs cmd/replay; when until is set, it interrupts it
// (SIGINT, as Ctrl-C) once until returns.
func (d *driver) runReplayUntil(ctx context.Context, mode string, until func(context.Context), args ...string) {
	cctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	run := replayRun{Mode: mode, Args: args, Start: time.Now()}
	d.markReplaysSeen()
	cmd := exec.CommandContext(cctx, d.replay, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Start()
	if err == nil {
		if until != nil {
			done := make(chan struct{})
			go func() {
				until(cctx)
				select {
				case <-done:
				default:
					_ = cmd.Process.Signal(os.Interrupt)
				}
			}()
			err = cmd.Wait()
			close(done)
		} else {
			err = cmd.Wait()
		}
	}
	run.End, run.Out = time.Now(), out.String()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		run.Code = ee.ExitCode()
	} else if err != nil {
		run.Code = -1
		run.Out += err.Error()
	}
	d.mu.Lock()
	d.replays = append(d.replays, run)
	d.mu.Unlock()
	d.logf("replay %s: exit %d: %s", mode, run.Code, bytes.TrimSpace(out.Bytes()))
}

// markReplaysSeen remembers the replayed runs in the ledger so far, so
// that firstReplayRan waits for a new one.
func (d *driver) markReplaysSeen() {
	lines, _ := readLedger(d.ledger)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.replaySeen == nil {
		d.replaySeen = map[string]bool{}
	}
	for _, l := range lines {
		if l.Replay != "" {
			d.replaySeen[l.Task+"/"+l.Replay] = true
		}
	}
}

// waitAnswered waits (bounded) until every task of rs has a reply.
func (d *driver) waitAnswered(ctx context.Context, rs []*taskRec, limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		replies, err := readReplies(ctx, d.js, d.topo)
		if err == nil {
			n := 0
			for _, r := range rs {
				if len(replies[r.ID]) > 0 {
					n++
				}
			}
			if n == len(rs) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond) // polling the replies
	}
}

// agentArgs are the command line of every replica.
func (d *driver) agentArgs(i int, url string) []string {
	c := d.s.Config
	return []string{
		"--nats", url, "--name", agentName, "--ledger", d.ledger, "--down-file", d.downFile,
		"--metrics-file", filepath.Join(d.dir, fmt.Sprintf("metrics-%d", i)),
		"--ack-wait", c.AckWait.String(), "--max-deliver", fmt.Sprint(c.MaxDeliver),
		"--max-ack-pending", fmt.Sprint(c.MaxAckPending), "--prefetch", fmt.Sprint(c.Prefetch),
		"--concurrency", fmt.Sprint(c.Concurrency), "--breaker-threshold", fmt.Sprint(c.BreakerThreshold),
		"--breaker-open", c.BreakerOpen.String(),
	}
}
