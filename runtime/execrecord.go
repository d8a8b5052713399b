package runtime

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime/disposition"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
)

// Execution records (issue 14, docs/concepts.md "Once"). The server's
// duplicate window does not survive a restart for a work queue: it is
// rebuilt from the messages still stored, and a work queue has deleted
// the consumed ones. So the runtime keeps its own record of the tasks
// whose handler returned, in the agent's records bucket, and checks it
// before a handler runs: a task it finds is not run again, and its
// stored reply is sent again to the new delivery's reply_to.
//
// The record costs no round trip on a task's path: the tasks that ended
// enter this runtime's index at once and are committed in batches
// ("exec.<runtime id>.<ulid>", one entry per task, written by one
// goroutine while the next batch fills); a plain task is acked at once, a
// checkpointed one once its batch is stored; every replica reads the
// others' batches (a KV watch) into its index.

// execEntry is one task in a batch.
type execEntry struct {
	// Task is the task's id (task_id, or the envelope id).
	Task string `msgpack:"t"`
	// Key is the envelope's idempotency_key, if it had one.
	Key string `msgpack:"k,omitempty"`
	// Replay names the replay that ran ("<DLQ entry>/<replay count>"), if
	// the delivery was one: a replay runs once per replay, whatever the
	// task's own record says.
	Replay string `msgpack:"p,omitempty"`
	// Dead is set when the task was dead-lettered rather than answered: a
	// replay of it from the DLQ runs, a re-send does not.
	Dead bool `msgpack:"d,omitempty"`
	// Seq is the tasks-stream sequence of the message a dead letter is
	// about (set with Verdict, and when a verdict is filed).
	Seq uint64 `msgpack:"s,omitempty"`
	// Verdict, when set, is a dead-letter reason decided by the handler
	// but not yet stored: the DLQ refused it. Redeliveries of message
	// Seq file it again (with Cause and Attempts) instead of running the
	// handler. A later entry of Seq without Verdict says it was filed.
	Verdict  string `msgpack:"v,omitempty"`
	Cause    string `msgpack:"c,omitempty"`
	Attempts uint64 `msgpack:"n,omitempty"`
}

// execBatch is one stored record.
type execBatch struct {
	Entries []execEntry `msgpack:"e"`
}

var _ msgpack.CustomEncoder = (*execBatch)(nil)

// EncodeMsgpack writes b as its struct tags say (a map per entry, empty
// fields left out) without reflection, which was most of the committer's
// CPU. It reads back with the tags (TestExecBatchEncoding).
func (b *execBatch) EncodeMsgpack(enc *msgpack.Encoder) error {
	_ = enc.EncodeMapLen(1)
	_ = enc.EncodeString("e")
	if err := enc.EncodeArrayLen(len(b.Entries)); err != nil {
		return err
	}
	for i := range b.Entries {
		e := &b.Entries[i]
		strs := [...]struct{ key, v string }{{"t", e.Task}, {"k", e.Key}, {"p", e.Replay}, {"v", e.Verdict}, {"c", e.Cause}}
		n := 1 // the task id, always
		for _, s := range strs[1:] {
			if s.v != "" {
				n++
			}
		}
		for _, set := range [...]bool{e.Dead, e.Seq != 0, e.Attempts != 0} {
			if set {
				n++
			}
		}
		_ = enc.EncodeMapLen(n)
		for i, s := range strs {
			if s.v != "" || i == 0 {
				_ = enc.EncodeString(s.key)
				_ = enc.EncodeString(s.v)
			}
		}
		if e.Dead {
			_ = enc.EncodeString("d")
			_ = enc.EncodeBool(true)
		}
		if e.Seq != 0 {
			_ = enc.EncodeString("s")
			_ = enc.EncodeUint(e.Seq)
		}
		if e.Attempts != 0 {
			_ = enc.EncodeString("n")
			_ = enc.EncodeUint(e.Attempts)
		}
	}
	return nil
}

// execSeen is what the index knows of a task that ran.
type execSeen struct {
	dead bool // dead-lettered, never answered
}

// execVerdict is a dead letter decided but not stored yet (see
// execEntry.Verdict).
type execVerdict struct {
	at       time.Time
	task     string
	key      string
	reason   string
	cause    string
	attempts uint64
}

// execCommit is one entry waiting for its batch, and what to do once the
// batch is stored (or could not be).
type execCommit struct {
	entry execEntry
	then  func(stored bool)
}

// execBatchMax bounds the entries of one batch (a record of a few tens of
// KiB at most).
const execBatchMax = 512

// execRecords is the runtime's execution record: the committer, and the
// index of what ran.
type execRecords struct {
	rt  *Runtime
	ttl time.Duration
	on  bool

	mu  sync.Mutex
	idx *execIndex // by task id, idempotency key and replay
	// self prefixes the keys of this runtime's batches: the watch skips
	// them (record put them in the index already).
	self string
	// verdicts holds the dead letters the DLQ refused, by the stream
	// sequence of their message; kept (in this replica) with records
	// off too.
	verdicts map[uint64]execVerdict
	ready    bool // the watch delivered what was stored at start

	commits chan execCommit
	done    chan struct{} // closed when the committer has returned
	stopW   context.CancelFunc
}

func (x *execRecords) init(r *Runtime) {
	x.rt, x.ttl, x.on = r, r.cfg.ExecRecordTTL, !r.cfg.DisableExecRecords
	x.idx = newExecIndex(x.ttl, time.Now())
	x.self = "exec." + envelope.NewID() + "."
	x.verdicts = make(map[uint64]execVerdict)
}

// start opens the bucket, starts the watch and the committer; it waits
// (bounded) for the watch to deliver what was stored before the agent
// started, so that re-sends waiting in the stream are recognised.
func (x *execRecords) start(ctx context.Context) {
	if !x.on {
		return
	}
	r := x.rt
	x.commits = make(chan execCommit, r.cfg.Concurrency+r.cfg.Consumer.Prefetch+1)
	x.done = make(chan struct{})
	wctx, cancel := context.WithCancel(context.Background())
	x.stopW = cancel
	caughtUp := make(chan struct{})
	r.background.Go(func() { x.watch(wctx, caughtUp) })
	go x.commitLoop()
	select {
	case <-caughtUp:
	case <-ctx.Done():
	case <-time.After(recordsTimeout):
		r.cfg.Logger.Warn("execution records not read yet: a re-send of a task that ran before the agent started may run again until they are",
			"agent", r.cfg.Agent)
	}
}

// stop stores what is pending (the workers are done) and ends the watch.
func (x *execRecords) stop() {
	if !x.on || x.commits == nil {
		return
	}
	close(x.commits)
	<-x.done
	x.stopW()
}

// watch reads every batch stored in the agent's records bucket into the
// index, and prunes entries older than the TTL. After the connection
// reconnects it watches again from the revision after the last one read:
// the client library's watch of a restarted server stalls until it misses
// heartbeats (14 s seen), and meanwhile this replica would not know what
// the others ran (TestReplicasThatLiveThroughAServerRestartStillSeeEachOthersRuns).
func (x *execRecords) watch(ctx context.Context, caughtUp chan struct{}) {
	r := x.rt
	signal := sync.OnceFunc(func() { close(caughtUp) })
	defer signal()
	prune := time.NewTicker(max(x.ttl/8, time.Second))
	defer prune.Stop()
	reconnected := r.conn.NATS().StatusChanged(nats.CONNECTED)
	defer r.conn.NATS().RemoveStatusListener(reconnected)
	var next uint64 // the revision to read from; 0: all of the bucket
	for ctx.Err() == nil {
		kv := r.records.open(ctx)
		if kv == nil {
			signal() // unavailable: the check runs on what this replica committed
			select {
			case <-ctx.Done():
				return
			case <-time.After(recordsRetry):
				continue
			}
		}
		opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
		if next > 0 && x.bucketHolds(ctx, kv, next-1) {
			opts = append(opts, jetstream.ResumeFromRevision(next))
		}
		w, err := kv.Watch(ctx, "exec.>", opts...)
		if err != nil {
			r.cfg.Logger.Warn("execution records not watched; will try again", "agent", r.cfg.Agent, "err", err)
			signal()
			select {
			case <-ctx.Done():
				return
			case <-time.After(recordsRetry):
				continue
			}
		}
		next = x.follow(ctx, w, prune.C, reconnected, signal, next)
		_ = w.Stop()
	}
}

// bucketHolds reports whether kv's last revision is at least rev: false
// when the bucket was made anew (a server without its store), whose
// revisions a watch resumed at rev+1 would skip.
func (x *execRecords) bucketHolds(ctx context.Context, kv jetstream.KeyValue, rev uint64) bool {
	sctx, cancel := context.WithTimeout(ctx, recordsTimeout)
	defer cancel()
	st, err := kv.Status(sctx)
	if err != nil {
		return false // read it all again: slower, never blind
	}
	b, ok := st.(*jetstream.KeyValueBucketStatus)
	return ok && b.StreamInfo().State.LastSeq >= rev
}

// follow applies w's updates until ctx ends, w closes or the connection
// reconnects, and returns the revision to watch from next (next, if it
// read none).
func (x *execRecords) follow(ctx context.Context, w jetstream.KeyWatcher, prune <-chan time.Time, reconnected <-chan nats.Status, signal func(), next uint64) uint64 {
	for {
		select {
		case <-ctx.Done():
			return next
		case <-reconnected:
			return next
		case now := <-prune:
			x.prune(now)
		case e, ok := <-w.Updates():
			if !ok {
				return next
			}
			if e != nil {
				next = max(next, e.Revision()+1)
			}
			if e == nil { // the values stored at start are in
				x.mu.Lock()
				x.ready = true
				x.mu.Unlock()
				signal()
				continue
			}
			if strings.HasPrefix(e.Key(), x.self) {
				continue // this runtime's own batch: indexed when recorded
			}
			var b execBatch
			if msgpack.Unmarshal(e.Value(), &b) != nil {
				continue
			}
			at, now := e.Created(), time.Now()
			x.mu.Lock()
			for _, en := range b.Entries {
				x.addLocked(en, at, now)
			}
			x.mu.Unlock()
		}
	}
}

func (x *execRecords) addLocked(en execEntry, at, now time.Time) {
	x.idx.add(x.idx.hash('t', en.Task), en.Dead, at, now)
	if en.Key != "" {
		x.idx.add(x.idx.hash('k', en.Key), en.Dead, at, now)
	}
	if en.Replay != "" {
		x.idx.add(x.idx.hash('p', en.Replay), en.Dead, at, now)
	}
	switch {
	case en.Seq == 0:
	case en.Verdict != "":
		x.verdicts[en.Seq] = execVerdict{at: at, task: en.Task, key: en.Key, reason: en.Verdict, cause: en.Cause, attempts: en.Attempts}
	default:
		delete(x.verdicts, en.Seq) // filed
	}
}

// noteVerdict keeps en, a dead letter the DLQ refused, in this replica's
// index at once and, with records on, in the next batch (other replicas
// learn it from the watch); then runs as for record.
func (x *execRecords) noteVerdict(en execEntry, then func(stored bool)) {
	now := time.Now()
	x.mu.Lock()
	x.addLocked(en, now, now)
	x.mu.Unlock()
	if !x.on || x.commits == nil {
		then(false)
		return
	}
	x.commits <- execCommit{entry: en, then: then}
}

// verdict returns the dead letter decided for message seq and not stored
// yet, if any.
func (x *execRecords) verdict(seq uint64) (execVerdict, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.verdicts) == 0 {
		return execVerdict{}, false
	}
	v, ok := x.verdicts[seq]
	return v, ok
}

// clearVerdict forgets the verdict of message seq: it is filed.
func (x *execRecords) clearVerdict(seq uint64) {
	x.mu.Lock()
	delete(x.verdicts, seq)
	x.mu.Unlock()
}

func (x *execRecords) prune(now time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.idx.prune(now)
	for seq, v := range x.verdicts {
		if now.Sub(v.at) > x.ttl {
			delete(x.verdicts, seq)
		}
	}
}

// lookup returns what the index knows of env's task (or of its
// idempotency key); for a replay (replay is its replayKey), what it knows
// of that replay only.
func (x *execRecords) lookup(env *envelope.Envelope, replay string) (execSeen, bool) {
	if !x.on {
		return execSeen{}, false
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.idx.empty() {
		return execSeen{}, false
	}
	if replay != "" {
		return x.find('p', replay)
	}
	if env.IdempotencyKey != "" {
		if s, ok := x.find('k', env.IdempotencyKey); ok {
			return s, true
		}
	}
	return x.find('t', taskIDOf(env))
}

func (x *execRecords) find(kind byte, name string) (execSeen, bool) {
	seen, dead := x.idx.lookup(x.idx.hash(kind, name))
	return execSeen{dead: dead}, seen
}

// record adds en to the index at once (this replica's next delivery of
// the task sees it) and to the next batch; then runs once the batch is
// stored, or could not be (then is never nil). With records off, then
// runs at once.
func (x *execRecords) record(en execEntry, then func(stored bool)) {
	if !x.on || x.commits == nil {
		then(false)
		return
	}
	now := time.Now()
	x.mu.Lock()
	x.addLocked(en, now, now)
	x.mu.Unlock()
	x.commits <- execCommit{entry: en, then: then}
}

// commitLoop stores batches: it takes what is pending (at least one
// entry), stores it, runs the entries' continuations, and starts again,
// so a batch grows while the previous one is being stored.
func (x *execRecords) commitLoop() {
	defer close(x.done)
	batch := make([]execCommit, 0, execBatchMax)
	for {
		c, ok := <-x.commits
		if !ok {
			return
		}
		batch = append(batch[:0], c)
	fill:
		for len(batch) < execBatchMax {
			select {
			case c, ok := <-x.commits:
				if !ok {
					break fill
				}
				batch = append(batch, c)
			default:
				break fill
			}
		}
		stored := x.store(batch)
		for _, c := range batch {
			c.then(stored)
		}
	}
}

// store writes one batch, retrying briefly; false when it could not.
func (x *execRecords) store(batch []execCommit) bool {
	r := x.rt
	b := execBatch{Entries: make([]execEntry, len(batch))}
	for i, c := range batch {
		b.Entries[i] = c.entry
	}
	body, err := msgpack.Marshal(&b)
	if err != nil {
		return false
	}
	m := nats.NewMsg("$KV." + r.cfg.Topology.RecordsBucket(r.cfg.Agent) + "." + x.self + envelope.NewID())
	m.Data = body
	var last error
	for try := range 3 {
		kv := r.records.open(context.Background())
		if kv == nil {
			last = errors.New("records bucket unavailable")
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), recordsTimeout)
		_, last = r.conn.JetStream().PublishMsg(ctx, m, jetstream.WithMsgTTL(x.ttl))
		cancel()
		if last == nil {
			return true
		}
		time.Sleep(time.Duration(try+1) * 100 * time.Millisecond) // a retry's pause, not synchronisation
	}
	r.stats.unrecorded.Add(uint64(len(batch)))
	r.cfg.Logger.Warn("execution record not stored: a re-send of these tasks after a server restart may run them again",
		"agent", r.cfg.Agent, "tasks", len(batch), "err", last)
	return false
}

// answerDuplicate settles a delivery of a task that already ran: it is not
// run again; its reply_to gets the reply stored there (see
// duplicateReply), retried as any reply; then it is acked. A reply that
// never goes out dead-letters it as reply_failed.
func (r *Runtime) answerDuplicate(j *job, env *envelope.Envelope, seen execSeen) Outcome {
	d := j.d
	log := r.deliveryLogger(d, env)
	if env.ReplyTo != "" {
		if err := r.replyRetrying(env, r.duplicateReply(env, seen)); err != nil {
			if r.aborting() {
				return r.retry(d, 0) // shutting down: the redelivery answers it
			}
			// The task is not run again, and its reply cannot go out:
			// reply_failed says so (handing it back would spend its
			// deliveries until the sweeper called it a crash).
			out := r.deadLetterAttemptsWith(j, d.Header, env, disposition.Decide(disposition.Facts{Finding: disposition.ReplyFailed}).Reason,
				fmt.Errorf("the task ran already (not run again); its reply to %s was not published: %w", env.ReplyTo, err))
			if out.Disposition == DeadLettered {
				r.stats.replyFailed.Add(1)
				r.stats.duplicates.Add(1)
			}
			return out
		}
	}
	if err := d.Ack(); err != nil {
		log.Warn("ack of a duplicate failed; it may be redelivered (and answered again)", "err", err)
	}
	r.forget(j)
	r.stats.duplicates.Add(1)
	log.Info("task already ran: not run again, its reply sent again", "task_id", taskIDOf(env))
	return Outcome{Disposition: Duplicate}
}

// duplicateReply is the reply to env, a task that ran: the reply kept in
// the replies stream on its reply_to (a re-send of the envelope that ran
// has the same reply_to) or, when none is kept there (another envelope of
// the task, a reply_to outside the stream, a reply aged out), a
// task.update saying the task completed (or failed: it was
// dead-lettered).
func (r *Runtime) duplicateReply(env *envelope.Envelope, seen execSeen) Reply {
	if subject := r.storedReplySubject(env); subject != "" {
		stored, err := r.storedReply(subject)
		if err == nil && stored != nil { // re-addressed to this envelope (its correlation id)
			return Reply{Type: stored.PayloadType, Payload: rawPayload(stored.Payload)}
		}
	}
	status := snapshot.Completed
	if seen.dead {
		status = snapshot.Failed // dead-lettered: the DLQ has it
	}
	return Reply{Type: envelope.TaskUpdate, Payload: TaskState{TaskID: taskIDOf(env), Found: true, Status: status}}
}

// storedReply reads the last reply on subject from the replies stream
// (nil when there is none).
func (r *Runtime) storedReply(subject string) (*envelope.Envelope, error) {
	ctx, cancel := context.WithTimeout(r.handlerCtx, recordsTimeout)
	defer cancel()
	m, err := r.conn.NATS().RequestWithContext(ctx, "$JS.API.DIRECT.GET."+r.cfg.Topology.RepliesStream()+"."+subject, nil)
	if err != nil {
		return nil, fmt.Errorf("read the stored reply: %w", err)
	}
	if m.Header.Get("Status") != "" {
		return nil, nil
	}
	var env envelope.Envelope
	if err := envelope.Unmarshal(m.Data, &env); err != nil {
		return nil, fmt.Errorf("decode the stored reply: %w", err)
	}
	return &env, nil
}

// rawPayload is an already-encoded msgpack payload, sent as it is.
type rawPayload []byte

var _ msgpack.CustomEncoder = rawPayload(nil)

func (p rawPayload) EncodeMsgpack(enc *msgpack.Encoder) error {
	if len(p) == 0 {
		return enc.EncodeNil()
	}
	_, err := enc.Writer().Write(p)
	return err
}

// storedReplySubject is where a reply to env is kept ("" when reply_to is
// outside the replies stream).
func (r *Runtime) storedReplySubject(env *envelope.Envelope) string {
	if env.ReplyTo != "" && strings.HasPrefix(env.ReplyTo, r.replyPrefix) {
		return env.ReplyTo
	}
	return ""
}

// replayKey names the replay d is ("<DLQ entry>/<replay count>"), "" when
// d is no replay.
func replayKey(d *bus.Delivery) string {
	if d.Header == nil {
		return ""
	}
	of := d.Header.Get(dlq.HeaderReplayOf)
	if of == "" {
		return ""
	}
	return of + "/" + d.Header.Get(dlq.HeaderReplayCount)
}
