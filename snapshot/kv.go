package snapshot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
)

// scanTimeout bounds List, History and PurgeDeleteMarkers when ctx has no
// deadline (single requests use the jetstream default of 5 seconds).
const scanTimeout = 30 * time.Second

// KV is a [Store] on JetStream key-value buckets, one per agent (see
// bus.Topology.SnapshotBucket): one key per task (see [Key]), its value the
// msgpack encoding of the [Snapshot], its revision the stream sequence of
// that message. A bucket's history depth is how many revisions History can
// return, and its TTL (if any) removes snapshots not updated for that long.
//
// Each agent's bucket is its own because a KV bucket allows rollups (its
// purges are rollups) and NATS permissions filter subjects, not headers:
// in a bucket shared by agents, one allowed to write a single key of its
// own could purge everyone's snapshots with a "Nats-Rollup: all" header.
//
// Buckets are opened when first used, not by NewKV: an agent that never
// checkpoints needs no bucket. The handles of a few agents are kept
// (its own, and those it restores from); others are opened per call.
//
// Save is one compare-and-swap publish (Create or Update with the expected
// last sequence of the key), so it holds across replicas and processes.
// Delete purges the key: its history goes, and one purge marker stays
// behind (see [KV.Delete] and [KV.PurgeDeleteMarkers]).
type KV struct {
	js   jetstream.JetStream
	topo bus.Topology
	one  *bucket // NewKVFromBucket: every agent in this one bucket

	mu      sync.Mutex
	buckets map[string]*bucket // by agent, at most maxOpenBuckets
}

// bucket is one opened bucket.
type bucket struct {
	kv jetstream.KeyValue
	// markerTTL, when positive, makes Delete's purge marker expire (the
	// bucket allows per-message TTLs: bus.Topology sets LimitMarkerTTL),
	// so deleted tasks leave nothing behind for good.
	markerTTL time.Duration
}

// maxOpenBuckets bounds the bucket handles a KV keeps: agent names come
// from envelopes too (state.restore), so they must not grow a cache.
const maxOpenBuckets = 16

var _ Store = (*KV)(nil)

// ErrNoBucket: the agent's snapshot bucket does not exist (provision it
// with bus.ProvisionAgent). Errors wrapping it also wrap
// jetstream.ErrBucketNotFound.
var ErrNoBucket = errors.New("snapshot: no snapshot bucket for the agent")

// NewKV returns a store on the snapshot buckets of topo's agents (each
// created by bus.ProvisionAgent). It opens nothing: each agent's bucket is
// opened the first time it is needed, and a missing one is then an error
// wrapping ErrNoBucket. It returns the error of topo.Validate for an
// unusable topology.
func NewKV(js jetstream.JetStream, topo bus.Topology) (*KV, error) {
	if err := topo.Validate(); err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &KV{js: js, topo: topo, buckets: make(map[string]*bucket)}, nil
}

// NewKVFromBucket returns a KV that keeps every agent's snapshots in one
// bucket the caller opened (any bucket; its history depth bounds History,
// and Snapshot.TTL needs a bucket with LimitMarkerTTL). Give such a bucket
// to one agent only: see KV for why.
func NewKVFromBucket(kv jetstream.KeyValue) *KV { return &KV{one: &bucket{kv: kv}} }

// bucket returns agent's bucket, opening it if need be.
func (k *KV) bucket(ctx context.Context, agent string) (*bucket, error) {
	if k.one != nil {
		return k.one, nil
	}
	k.mu.Lock()
	b := k.buckets[agent]
	k.mu.Unlock()
	if b != nil {
		return b, nil
	}
	name := k.topo.SnapshotBucket(agent)
	kv, err := k.js.KeyValue(ctx, name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("%w %s: bucket %s does not exist (run bus.ProvisionAgent for it): %w", ErrNoBucket, agent, name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: open bucket %s: %w", name, err)
	}
	b = &bucket{kv: kv}
	if st, err := kv.Status(ctx); err == nil {
		b.markerTTL = st.LimitMarkerTTL()
	}
	k.mu.Lock()
	if len(k.buckets) < maxOpenBuckets {
		k.buckets[agent] = b
	}
	k.mu.Unlock()
	return b, nil
}

// Save writes s if the task's stored revision is expected (0: the task
// has no snapshot, or it was deleted) and returns the new revision. It
// does not modify s. A TTL is the message's own (Nats-TTL).
//
// Errors: ErrInvalid (see Store.Save); ErrNoBucket; ErrConflict wrapping the server's
// answer (jetstream.ErrKeyExists, jetstream.ErrKeyRevisionMismatch, or the
// API error 10071 / 10164) when another writer got there first; otherwise
// the request's error (timeout, no JetStream) wrapped.
func (k *KV) Save(ctx context.Context, s *Snapshot, expected uint64) (uint64, error) {
	key, err := checkSnapshot(s)
	if err != nil {
		return 0, err
	}
	if err := checkTTL(s, expected); err != nil {
		return 0, err
	}
	b, err := k.bucket(ctx, s.Agent)
	if err != nil {
		return 0, err
	}
	enc := getEncoder()
	defer putEncoder(enc)
	if err := enc.enc.Encode(s); err != nil {
		return 0, fmt.Errorf("snapshot: encode %s: %w", key, err)
	}
	// The publish copies data into the connection's buffer before it
	// returns, so the pooled buffer can be reused afterwards.
	data := enc.buf.Bytes()
	var rev uint64
	switch {
	case expected == 0 && s.TTL > 0:
		rev, err = b.kv.Create(ctx, key, data, jetstream.KeyTTL(s.TTL))
	case expected == 0:
		// Create also succeeds over a delete or purge marker.
		rev, err = b.kv.Create(ctx, key, data)
	default:
		rev, err = b.kv.Update(ctx, key, data, expected)
	}
	if err != nil {
		if isConflict(err) {
			return 0, fmt.Errorf("%w: %s at revision %d: %w", ErrConflict, key, expected, err)
		}
		return 0, fmt.Errorf("snapshot: save %s: %w", key, err)
	}
	return rev, nil
}

// isConflict reports whether err is the server refusing a write because
// the key's last revision is not the one expected. Single-replica streams
// answer 10071 (which jetstream.ErrKeyExists matches by code); replicated
// ones 10164; and Create after a delete marker returns the raw API error.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Load returns the task's latest snapshot with its Revision.
// Errors: ErrInvalid; ErrNotFound (never saved, deleted, or expired by
// the bucket's TTL or its own); ErrNoBucket; ErrCorrupt; the request's
// error wrapped.
func (k *KV) Load(ctx context.Context, agent, taskID string) (*Snapshot, error) {
	key, err := Key(agent, taskID)
	if err != nil {
		return nil, err
	}
	b, err := k.bucket(ctx, agent)
	if err != nil {
		return nil, err
	}
	e, err := b.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: load %s: %w", key, err)
	}
	return decode(agent, taskID, e)
}

// History returns up to n of the task's snapshots, newest first, as many
// as the bucket's history depth keeps and none from before the last
// Delete. When ctx has no deadline it gives up after 30 seconds.
// Errors: ErrInvalid (also for n < 1); ErrNotFound; ErrCorrupt; the
// request's error wrapped.
func (k *KV) History(ctx context.Context, agent, taskID string, n int) ([]*Snapshot, error) {
	key, err := Key(agent, taskID)
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("%w: history of %d snapshots", ErrInvalid, n)
	}
	b, err := k.bucket(ctx, agent)
	if err != nil {
		return nil, err
	}
	entries, err := b.scan(ctx, key, jetstream.IncludeHistory())
	if err != nil {
		return nil, fmt.Errorf("snapshot: history %s: %w", key, err)
	}
	var out []*Snapshot
	// Entries come oldest first; a marker ends the task's current life.
	for i := len(entries) - 1; i >= 0 && len(out) < n; i-- {
		e := entries[i]
		if e.Operation() != jetstream.KeyValuePut {
			break
		}
		s, err := decode(agent, taskID, e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return out, nil
}

// Delete purges the task: its snapshots and history are removed. Missing
// tasks are not an error.
//
// A purge leaves one marker message behind (it is how watchers learn of
// the delete, and it consumes a revision), even for a task that had no
// snapshot: call Delete only for tasks that checkpointed, and remove old
// markers with PurgeDeleteMarkers, or give the bucket a TTL.
// Errors: ErrInvalid; ErrNoBucket; the request's error wrapped.
func (k *KV) Delete(ctx context.Context, agent, taskID string) error {
	key, err := Key(agent, taskID)
	if err != nil {
		return err
	}
	b, err := k.bucket(ctx, agent)
	if err != nil {
		return err
	}
	var opts []jetstream.KVDeleteOpt
	if b.markerTTL > 0 {
		opts = append(opts, jetstream.PurgeTTL(b.markerTTL))
	}
	if err := b.kv.Purge(ctx, key, opts...); err != nil {
		return fmt.Errorf("snapshot: delete %s: %w", key, err)
	}
	return nil
}

// List returns the latest snapshot of every task of agent, ordered by
// task id, read with one watcher (not one request per task). Keys in the
// bucket that Key would not produce are ignored. A task saved or deleted
// while List runs may or may not be in the result. When ctx has no
// deadline it gives up after 30 seconds.
// Errors: ErrInvalid; ErrCorrupt; the request's error wrapped.
func (k *KV) List(ctx context.Context, agent string) ([]*Snapshot, error) {
	if err := checkAgent(agent); err != nil {
		return nil, err
	}
	b, err := k.bucket(ctx, agent)
	if err != nil {
		return nil, err
	}
	entries, err := b.scan(ctx, agent+".>")
	if err != nil {
		return nil, fmt.Errorf("snapshot: list %s: %w", agent, err)
	}
	// A key written during the scan may come twice: keep the newest.
	latest := make(map[string]jetstream.KeyValueEntry, len(entries))
	for _, e := range entries {
		if prev, ok := latest[e.Key()]; !ok || e.Revision() > prev.Revision() {
			latest[e.Key()] = e
		}
	}
	out := make([]*Snapshot, 0, len(latest))
	for key, e := range latest {
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		a, id, err := ParseKey(key)
		if err != nil || a != agent {
			continue
		}
		s, err := decode(a, id, e)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *Snapshot) int { return strings.Compare(a.TaskID, b.TaskID) })
	return out, nil
}

// scan returns what a watcher on filter delivers before its end-of-initial
// marker, then stops it. It gives the watcher its own cancellable context
// (nats.go keeps one goroutine per watcher waiting on that context) and
// drains the watcher after Stop (its callback blocks on a full channel).
func (b *bucket) scan(ctx context.Context, filter string, opts ...jetstream.WatchOpt) ([]jetstream.KeyValueEntry, error) {
	ctx, cancel := withScanTimeout(ctx)
	defer cancel()
	w, err := b.kv.Watch(ctx, filter, opts...)
	if err != nil {
		return nil, err
	}
	defer stopAndDrain(w)
	var out []jetstream.KeyValueEntry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("watcher closed (connection closed?)")
			}
			if e == nil {
				return out, nil
			}
			out = append(out, e)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func withScanTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, scanTimeout)
}

// stopAndDrain stops w and reads its channel until the subscription's
// close handler closes it, so that no nats.go goroutine stays blocked
// delivering to it.
func stopAndDrain(w jetstream.KeyWatcher) {
	_ = w.Stop()
	for range w.Updates() {
	}
}

// Watch sends an Event for every change to agent's snapshots after the
// call: a Snapshot (with Revision) for a save, nil for a delete, purge or
// TTL expiry. Values that do not decode and keys that Key would not
// produce are skipped. The channel is unbuffered (the watcher below it
// buffers 256 changes) and closes when ctx ends or the connection
// closes; its goroutine ends with it.
// Errors: ErrInvalid; ctx's error; the watcher's error wrapped.
func (k *KV) Watch(ctx context.Context, agent string) (<-chan Event, error) {
	if err := checkAgent(agent); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b, err := k.bucket(ctx, agent)
	if err != nil {
		return nil, err
	}
	// The watcher's own context ends with forward, also when the
	// connection closes first: nats.go waits on it in a goroutine.
	ctx, cancel := context.WithCancel(ctx)
	w, err := b.kv.Watch(ctx, agent+".>", jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("snapshot: watch %s: %w", agent, err)
	}
	out := make(chan Event)
	go forward(ctx, cancel, agent, w, out)
	return out, nil
}

func forward(ctx context.Context, cancel context.CancelFunc, agent string, w jetstream.KeyWatcher, out chan<- Event) {
	defer close(out)
	defer cancel()
	defer stopAndDrain(w)
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return
		case e, ok = <-w.Updates():
			if !ok {
				return
			}
		}
		if e == nil {
			continue
		}
		a, id, err := ParseKey(e.Key())
		if err != nil || a != agent {
			continue
		}
		ev := Event{Agent: a, TaskID: id}
		if e.Operation() == jetstream.KeyValuePut {
			if ev.Snapshot, err = decode(a, id, e); err != nil {
				continue
			}
		}
		select {
		case out <- ev:
		case <-ctx.Done():
			return
		}
	}
}

// PurgeDeleteMarkers removes the markers Delete leaves in agent's bucket
// that are older than olderThan (zero or less: all of them), so that a
// bucket without marker TTL does not grow by one marker per deleted task.
// Watchers are not affected. When ctx has no deadline it gives up after
// 30 seconds. Errors: ErrInvalid; ErrNoBucket; the requests' errors wrapped.
func (k *KV) PurgeDeleteMarkers(ctx context.Context, agent string, olderThan time.Duration) error {
	if err := checkAgent(agent); err != nil {
		return err
	}
	b, err := k.bucket(ctx, agent)
	if err != nil {
		return err
	}
	ctx, cancel := withScanTimeout(ctx)
	defer cancel()
	if olderThan <= 0 {
		olderThan = -1 // jetstream: any age (its zero means 30 minutes)
	}
	if err := b.kv.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(olderThan)); err != nil {
		return fmt.Errorf("snapshot: purge delete markers: %w", err)
	}
	return nil
}

// encoder is a reusable msgpack encoder and its buffer: msgpack.Marshal
// grows a new buffer from nothing for every value (about 10 allocations
// and 1.5 KB for a snapshot with a 256-byte state).
type encoder struct {
	buf bytes.Buffer
	enc *msgpack.Encoder
}

var encoders = sync.Pool{New: func() any {
	e := new(encoder)
	e.enc = msgpack.NewEncoder(&e.buf)
	return e
}}

func getEncoder() *encoder {
	e := encoders.Get().(*encoder)
	e.buf.Reset()
	return e
}

func putEncoder(e *encoder) {
	if e.buf.Cap() <= 64<<10 { // do not keep a rare huge state alive
		encoders.Put(e)
	}
}

// decode turns a bucket entry into a Snapshot. The key is authoritative
// for Agent and TaskID. It never panics: a value that does not decode is
// an error wrapping ErrCorrupt.
func decode(agent, taskID string, e jetstream.KeyValueEntry) (s *Snapshot, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("%w: %s revision %d: %v", ErrCorrupt, e.Key(), e.Revision(), r)
		}
	}()
	s = new(Snapshot)
	if err := msgpack.Unmarshal(e.Value(), s); err != nil {
		return nil, fmt.Errorf("%w: %s revision %d: %w", ErrCorrupt, e.Key(), e.Revision(), err)
	}
	if !s.Status.Valid() {
		return nil, fmt.Errorf("%w: %s revision %d: status %q", ErrCorrupt, e.Key(), e.Revision(), s.Status)
	}
	s.Agent, s.TaskID, s.Revision = agent, taskID, e.Revision()
	return s, nil
}
