package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Store reads and writes the dead-letter stream of a topology. It is safe
// for concurrent use.
type Store struct {
	js   jetstream.JetStream
	topo bus.Topology
	pub  *bus.Publisher

	collisions atomic.Uint64
}

// NewStore returns the Store of topo's DLQ stream on js. The topology must
// be provisioned (bus.Provision).
func NewStore(js jetstream.JetStream, topo bus.Topology) *Store {
	return &Store{js: js, topo: topo, pub: bus.NewPublisher(js)}
}

// Entry is one dead letter as stored.
type Entry struct {
	// Seq is the entry's sequence in the DLQ stream: its id for show,
	// replay and purge.
	Seq uint64
	// Stored is when the DLQ stream stored it.
	Stored time.Time
	// DLQSubject is the subject it is stored under.
	DLQSubject string
	Record
	// Replays is how many times the entry was replayed (0: never),
	// counting a replay reserved and not settled (in doubt).
	Replays int
	// markRev is the revision of the entry's replay mark, as read (0:
	// none): a replay's compare-and-set.
	markRev uint64
}

// Subject returns the DLQ subject of rec: the original task subject with
// "tasks" replaced by "dlq" ("<p>.tasks.<agent>.<type>" becomes
// "<p>.dlq.<agent>.<type>"); a subject of another shape goes to
// "<p>.dlq.<agent>.other".
func (s *Store) Subject(rec *Record) string {
	prefix := s.topo.AgentTasks(rec.Agent)
	prefix = prefix[:len(prefix)-1] // drop the ">" wildcard
	if rest, ok := strings.CutPrefix(rec.Subject, prefix); ok && rest != "" {
		return s.topo.DLQSubject(rec.Agent, envelope.PayloadType(rest))
	}
	return s.topo.DLQSubject(rec.Agent, "other")
}

// Publish dead-letters rec and waits until the DLQ stream stored it. A
// record this agent already stored (same original stream and sequence,
// within the duplicate window) is not stored twice. It returns the
// entry's sequence, or an error (the DLQ is full, unreachable, a duplicate
// that could not be checked...) in which case the caller must not settle
// the original.
//
// A duplicate answer is not trusted: the stream deduplicates over every
// agent's dead letters, and a neighbour can publish on its own DLQ
// subjects with the id this record will have. Publish reads what the
// stream holds under the id, through a consumer filtered on rec.Agent's
// DLQ subjects (which only that agent may publish on), and believes the
// duplicate only when it is this record (same agent, stream and sequence
// headers). Otherwise it stores the record again under an id nobody can
// predict (counted by IDCollisions).
func (s *Store) Publish(ctx context.Context, rec *Record) (uint64, error) {
	msg := rec.Msg(s.Subject(rec))
	ack, err := s.pub.PublishMsg(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("dlq: dead-letter %s/%d: %w", rec.Stream, rec.Sequence, err)
	}
	if !ack.Duplicate {
		return ack.Sequence, nil
	}
	ours, err := s.storedAs(ctx, rec, ack.Sequence)
	if err != nil {
		return 0, fmt.Errorf("dlq: dead-letter %s/%d: answered as a duplicate of entry %d, which could not be checked: %w", rec.Stream, rec.Sequence, ack.Sequence, err)
	}
	if ours {
		return ack.Sequence, nil
	}
	s.collisions.Add(1)
	msg.Header.Set(bus.HeaderMsgID, rec.MsgID()+"."+strings.ToLower(envelope.NewID()))
	ack, err = s.pub.PublishMsg(ctx, msg)
	switch {
	case err != nil:
		return 0, fmt.Errorf("dlq: dead-letter %s/%d (its id was taken by another message): %w", rec.Stream, rec.Sequence, err)
	case ack.Duplicate:
		return 0, fmt.Errorf("dlq: dead-letter %s/%d: a fresh id was answered as a duplicate", rec.Stream, rec.Sequence)
	}
	return ack.Sequence, nil
}

// IDCollisions counts the dead letters Publish stored under a fresh id
// because a message that was not theirs held their id (a neighbour's
// decoy, or an entry purged and its id reused by another publisher).
func (s *Store) IDCollisions() uint64 { return s.collisions.Load() }

// storedAs reports whether the DLQ entry seq is rec: whether the first of
// rec.Agent's dead letters from seq on is seq itself and carries rec's
// provenance. It reads the headers only, with a short-lived push consumer
// filtered on the agent's DLQ subjects (the filter is in the API subject,
// so an agent's permissions can pin it to its own dead letters), removed
// by the server once unused.
func (s *Store) storedAs(ctx context.Context, rec *Record, seq uint64) (bool, error) {
	nc := s.js.Conn()
	inbox := nc.NewInbox() // not under the request multiplexer's prefix: nothing else reads it
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return false, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	cons, err := s.js.CreatePushConsumer(ctx, s.topo.DLQStream(), jetstream.ConsumerConfig{
		Name:              rec.Agent + "_dlqcheck_" + strings.ToLower(envelope.NewID()[16:]),
		FilterSubject:     s.topo.AgentDLQ(rec.Agent),
		DeliverSubject:    inbox,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       seq,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		InactiveThreshold: 5 * time.Second,
		MemoryStorage:     true,
	})
	if err != nil {
		return false, err
	}
	if cons.CachedInfo().NumPending == 0 {
		return false, nil // none of the agent's dead letters is at seq or after
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return false, err
	}
	md, err := m.Metadata()
	if err != nil {
		return false, err
	}
	h := m.Header
	return md.Sequence.Stream == seq && h.Get(HeaderAgent) == rec.Agent && h.Get(HeaderStream) == rec.Stream &&
		h.Get(HeaderSequence) == strconv.FormatUint(rec.Sequence, 10), nil
}

// Get returns the entry with sequence seq, or ErrNotFound.
func (s *Store) Get(ctx context.Context, seq uint64) (*Entry, error) {
	st, err := s.js.Stream(ctx, s.topo.DLQStream())
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %d", ErrNotFound, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: get %d: %w", seq, err)
	}
	e, err := newEntry(m.Sequence, m.Time, m.Subject, m.Data, m.Header)
	if err != nil {
		return nil, err
	}
	mark, err := s.mark(ctx, e)
	if err != nil {
		return nil, err
	}
	e.Replays, e.markRev = mark.Count, mark.rev
	return e, nil
}

func newEntry(seq uint64, stored time.Time, subject string, data []byte, h nats.Header) (*Entry, error) {
	rec, err := Parse(data, h)
	if err != nil {
		return nil, fmt.Errorf("dlq: entry %d: %w", seq, err)
	}
	return &Entry{Seq: seq, Stored: stored, DLQSubject: subject, Record: *rec}, nil
}

// Each calls fn for every entry matching f, oldest first, until fn
// returns an error (returned as is) or the entries present when Each began
// are exhausted. f.Limit bounds the calls; f.After starts the read past
// that sequence.
func (s *Store) Each(ctx context.Context, f Filter, fn func(*Entry) error) error {
	if len(f.IDs) > 0 {
		return s.eachID(ctx, f, fn)
	}
	marks := map[uint64]replayMark{}
	if !f.WithoutReplays || f.NotReplayed {
		var err error
		if marks, err = s.replayMarks(ctx, f.Agent); err != nil {
			return err
		}
	}
	filter := s.topo.AgentDLQ("*")
	if f.Agent != "" {
		filter = s.topo.AgentDLQ(f.Agent)
	}
	// An ephemeral consumer (not an ordered one) so that its NumPending
	// is known before the first fetch; a page (After) starts past it.
	cc := jetstream.ConsumerConfig{
		FilterSubjects:    []string{filter},
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	}
	if f.After > 0 {
		cc.DeliverPolicy, cc.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.After+1
	}
	cons, err := s.js.CreateConsumer(ctx, s.topo.DLQStream(), cc)
	if err != nil {
		return fmt.Errorf("dlq: read: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.js.DeleteConsumer(dctx, s.topo.DLQStream(), cons.CachedInfo().Name)
	}()
	info := cons.CachedInfo()
	pending := info.NumPending
	calls := 0
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("dlq: read: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("dlq: read: %w", err)
			}
			pending = md.NumPending
			e, err := newEntry(md.Sequence.Stream, md.Timestamp, m.Subject(), m.Data(), m.Headers())
			if err != nil {
				continue // not a dead letter (written by hand?): skip it
			}
			e.Replays, e.markRev = marks[e.Seq].Count, marks[e.Seq].rev
			if !f.Match(e) {
				continue
			}
			if err := fn(e); err != nil {
				return err
			}
			if calls++; f.Limit > 0 && calls >= f.Limit {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("dlq: read: %w", err)
		}
		if got == 0 {
			return ctx.Err() // entries purged meanwhile; nothing more to read
		}
	}
	return nil
}

func (s *Store) eachID(ctx context.Context, f Filter, fn func(*Entry) error) error {
	ids := f.IDs
	f.IDs = nil
	for i, id := range ids {
		if f.Limit > 0 && i >= f.Limit {
			return nil
		}
		e, err := s.Get(ctx, id)
		if err != nil {
			return err
		}
		if !f.Match(e) {
			continue
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// List returns the entries matching f, oldest first.
func (s *Store) List(ctx context.Context, f Filter) ([]*Entry, error) {
	var out []*Entry
	err := s.Each(ctx, f, func(e *Entry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// Purge deletes the entries matching f and returns how many it deleted.
// Replay marks of deleted entries are removed too.
func (s *Store) Purge(ctx context.Context, f Filter) (int, error) {
	entries, err := s.List(ctx, f)
	if err != nil {
		return 0, err
	}
	return s.Delete(ctx, entries)
}

// Delete deletes the given entries and returns how many it deleted.
func (s *Store) Delete(ctx context.Context, entries []*Entry) (int, error) {
	st, err := s.js.Stream(ctx, s.topo.DLQStream())
	if err != nil {
		return 0, fmt.Errorf("dlq: %w", err)
	}
	kv, err := s.replaysBucket(ctx, false)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if err := st.DeleteMsg(ctx, e.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("dlq: delete %d: %w", e.Seq, err)
		}
		n++
		if (e.Replays > 0 || e.markRev > 0) && kv != nil {
			_ = kv.Purge(ctx, s.markKey(e))
		}
	}
	return n, nil
}

// Stats summarises the entries matching f.
type Stats struct {
	Total     int
	ByAgent   map[string]int
	BySubject map[string]int
	ByReason  map[Reason]int
	Replayed  int
	// Oldest is the entry stored first (nil when there is none).
	Oldest *Entry
}

// Stats counts the entries matching f by agent, original subject and
// reason, and finds the oldest.
func (s *Store) Stats(ctx context.Context, f Filter) (*Stats, error) {
	st := &Stats{ByAgent: map[string]int{}, BySubject: map[string]int{}, ByReason: map[Reason]int{}}
	err := s.Each(ctx, f, func(e *Entry) error {
		st.Total++
		st.ByAgent[e.Agent]++
		st.BySubject[e.Subject]++
		st.ByReason[e.Reason]++
		if e.Replays > 0 {
			st.Replayed++
		}
		if st.Oldest == nil {
			st.Oldest = e
		}
		return nil
	})
	return st, err
}
