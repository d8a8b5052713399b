package schedule

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"
)

// Line is one ledger line, as the schedule agent writes it.
type Line struct {
	T      int64  `json:"t"`
	PID    int    `json:"pid"`
	Ev     string `json:"ev"`
	Task   string `json:"task"`
	Att    int    `json:"att"`
	Replay string `json:"replay,omitempty"`
	Kind   string `json:"kind,omitempty"`
	Sub    string `json:"sub,omitempty"`
	Step   int    `json:"step,omitempty"`
	Err    string `json:"err,omitempty"`
}

func (l Line) Time() time.Time { return time.Unix(0, l.T) }

func (l Line) String() string {
	s := fmt.Sprintf("%s pid=%d %-9s task=%s att=%d kind=%s", l.Time().Format("15:04:05.000"), l.PID, l.Ev, l.Task, l.Att, l.Kind)
	if l.Replay != "" {
		s += " replay_of=" + l.Replay
	}
	if l.Step != 0 {
		s += " step=" + strconv.Itoa(l.Step)
	}
	if l.Err != "" {
		s += " err=" + strconv.Quote(l.Err)
	}
	return s
}

// readLedger parses the ledger file.
func readLedger(path string) ([]Line, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Line
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l Line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return nil, fmt.Errorf("ledger line %q: %w", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// dlqView is the DLQ at one moment: entries by the task they hold.
type dlqView struct {
	entries  []*dlq.Entry
	byTask   map[string][]*dlq.Entry // envelope id, or "seq:<n>" when the body is no envelope; replays excluded
	replayed map[string][]*dlq.Entry // dead letters of replayed tasks, by the DLQ entry they replayed
}

func readDLQ(ctx context.Context, js jetstream.JetStream, topo bus.Topology) (*dlqView, error) {
	entries, err := dlq.NewStore(js, topo).List(ctx, dlq.Filter{})
	if err != nil {
		return nil, err
	}
	v := &dlqView{entries: entries, byTask: map[string][]*dlq.Entry{}, replayed: map[string][]*dlq.Entry{}}
	for _, e := range entries {
		if of := e.Header.Get(dlq.HeaderReplayOf); of != "" {
			v.replayed[of] = append(v.replayed[of], e)
			continue
		}
		key := "seq:" + strconv.FormatUint(e.Sequence, 10)
		var env envelope.Envelope
		if err := envelope.Unmarshal(e.Data, &env); err == nil && env.ID != "" {
			key = env.ID
		}
		v.byTask[key] = append(v.byTask[key], e)
	}
	return v, nil
}

// reply is one message of the replies stream.
type reply struct {
	Env    *envelope.Envelope
	Stored time.Time
	Task   string // the Result's task, when the payload is one
}

// readReplies reads the whole replies stream, by correlation id.
func readReplies(ctx context.Context, js jetstream.JetStream, topo bus.Topology) (map[string][]reply, error) {
	cons, err := js.CreateConsumer(ctx, topo.RepliesStream(), jetstream.ConsumerConfig{
		AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if err != nil {
		return nil, fmt.Errorf("replies: %w", err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteConsumer(dctx, topo.RepliesStream(), cons.CachedInfo().Name)
	}()
	out := map[string][]reply{}
	pending := cons.CachedInfo().NumPending
	for pending > 0 {
		batch, err := cons.Fetch(int(min(pending, 500)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, fmt.Errorf("replies: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var env envelope.Envelope
			if err := envelope.Unmarshal(m.Data(), &env); err != nil {
				continue
			}
			r := reply{Env: &env}
			if md, err := m.Metadata(); err == nil {
				r.Stored = md.Timestamp
			}
			var res struct {
				Task string `msgpack:"task"`
			}
			if env.PayloadType == envelope.TaskResponse && len(env.Payload) > 0 && msgpack.Unmarshal(env.Payload, &res) == nil {
				r.Task = res.Task
			}
			out[env.CorrelationID] = append(out[env.CorrelationID], r)
		}
		if batch.Error() != nil {
			return nil, fmt.Errorf("replies: %w", batch.Error())
		}
		if n == 0 {
			break
		}
		pending -= uint64(n)
	}
	return out, nil
}
