package runtime_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
)

// fuzzAgent is the agent FuzzReceive runs; execType the payload type of
// its exec handler.
const (
	fuzzAgent = "fz"
	execType  = envelope.PayloadType("exec.run")
)

// receiveRig is one runtime with an echo (task.request), an http
// (message.send, to an httptest server) and an exec (exec.run) handler, and
// taps on what it sends: settlements (the ack subjects), replies and dead
// letters, and what each handler reported.
type receiveRig struct {
	conn  *bus.Conn
	rt    *runtime.Runtime
	acks  *nats.Subscription // $JS.ACK.<tasks>.fz.>
	reps  *nats.Subscription // <prefix>.replies.>
	dead  *nats.Subscription // <prefix>.dlq.>
	tasks string

	mu    sync.Mutex
	kinds map[uint64][]resilience.Kind // by stream sequence: what the handler returned
	ends  map[uint64]int               // terminal settlements seen per stream sequence
}

// The sidecar programs' answers depend on markers in the payload, so that
// the fuzzer reaches every outcome a handler can report.
const execScript = `in=$(cat)
case "$in" in
*tempfail*) exit 75 ;;
*refuse*) echo "refused" >&2; exit 2 ;;
*garbage*) echo "not json"; exit 0 ;;
esac
echo '{"ok":true}'`

func httpService(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	switch s := string(b); {
	case strings.Contains(s, "busy"):
		w.Header().Set("Retry-After", "3600")
		w.WriteHeader(http.StatusServiceUnavailable)
	case strings.Contains(s, "broken"):
		w.WriteHeader(http.StatusInternalServerError)
	case strings.Contains(s, "unauthorized"):
		w.WriteHeader(http.StatusUnauthorized)
	case strings.Contains(s, "refuse"):
		w.WriteHeader(http.StatusUnprocessableEntity)
	case strings.Contains(s, "garbage"):
		_, _ = io.WriteString(w, "<html>")
	default:
		_, _ = io.WriteString(w, `{"ok":true}`)
	}
}

func newReceiveRig(f *testing.F) *receiveRig {
	srv := natstest.Start(f, natstest.Options{})
	conn := natstest.Connect(f, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		f.Fatal(err)
	}
	web := httptest.NewServer(http.HandlerFunc(httpService))
	f.Cleanup(web.Close)
	rig := &receiveRig{conn: conn, tasks: topo.TasksStream(), kinds: map[uint64][]resilience.Kind{}, ends: map[uint64]int{}}
	var err error
	if rig.acks, err = conn.NATS().SubscribeSync("$JS.ACK." + rig.tasks + "." + fuzzAgent + ".>"); err != nil {
		f.Fatal(err)
	}
	if rig.reps, err = conn.NATS().SubscribeSync(topo.ReplySubject(">")); err != nil {
		f.Fatal(err)
	}
	if rig.dead, err = conn.NATS().SubscribeSync(topo.AgentDLQ(fuzzAgent)); err != nil {
		f.Fatal(err)
	}
	httpH, err := handlers.HTTP(handlers.HTTPConfig{URL: web.URL})
	if err != nil {
		f.Fatal(err)
	}
	execH, err := handlers.Exec(handlers.ExecConfig{Command: []string{"/bin/sh", "-c", execScript}, EnvInherit: []string{"PATH"},
		Env: map[string]string{"GORACE": "atexit_sleep_ms=0"}})
	if err != nil {
		f.Fatal(err)
	}
	rig.rt, err = runtime.New(conn, runtime.Config{
		Agent: fuzzAgent, Topology: topo, Concurrency: 2, HandlerTimeout: 5 * time.Second,
		// A retried delivery must not come back while the fuzzer runs (it
		// is removed once seen), and no breaker may hold one.
		Backoff:  resilience.Backoff{Base: time.Hour, Max: time.Hour, NoJitter: true},
		Breaker:  resilience.BreakerSettings{Threshold: 1 << 30},
		Consumer: bus.ConsumerConfig{MaxDeliver: 100},
	})
	if err != nil {
		f.Fatal(err)
	}
	for typ, h := range map[envelope.PayloadType]runtime.Handler{envelope.TaskRequest: runtime.Echo, envelope.MessageSend: httpH, execType: execH} {
		rig.rt.Handle(typ, rig.recording(h))
	}
	if err := rig.rt.Start(ctx); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer scancel()
		_ = rig.rt.Stop(sctx)
	})
	return rig
}

// recording wraps h to note the kind of every outcome it reports.
func (r *receiveRig) recording(h runtime.Handler) runtime.Handler {
	return func(ctx context.Context, t *runtime.Task) (any, error) {
		res, err := h(ctx, t)
		r.mu.Lock()
		r.kinds[t.StreamSeq] = append(r.kinds[t.StreamSeq], resilience.Classify(err))
		r.mu.Unlock()
		return res, err
	}
}

// settlement is how one delivery ended, as the server was told.
type settlement struct {
	verb  string // +ACK, -NAK, +TERM
	delay time.Duration
}

// settled waits for the terminal settlement of stream sequence seq (heartbeats
// are skipped) and counts every terminal one it reads on the way.
func (r *receiveRig) settled(t *testing.T, seq uint64) settlement {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m, err := r.acks.NextMsg(time.Until(deadline))
		if err != nil {
			t.Fatalf("task %d was never settled (%v): stats %+v", seq, err, r.rt.Stats())
		}
		tok := strings.Split(m.Subject, ".")
		if len(tok) < 9 {
			t.Fatalf("ack subject %q", m.Subject)
		}
		got, _ := strconv.ParseUint(tok[5], 10, 64)
		body := string(m.Data)
		if body == "+WPI" {
			continue
		}
		r.ends[got]++
		if r.ends[got] > 1 {
			t.Fatalf("task %d settled %d times (last %q)", got, r.ends[got], body)
		}
		if got != seq {
			t.Fatalf("a settlement %q of task %d while waiting for task %d", body, got, seq)
		}
		s := settlement{verb: body}
		switch {
		case strings.HasPrefix(body, "-NAK"):
			s.verb = "-NAK"
			var d struct {
				Delay int64 `json:"delay"`
			}
			if rest := strings.TrimSpace(strings.TrimPrefix(body, "-NAK")); rest != "" {
				_ = json.Unmarshal([]byte(rest), &d)
			}
			s.delay = time.Duration(d.Delay)
		case strings.HasPrefix(body, "+TERM"):
			s.verb = "+TERM"
		}
		return s
	}
}

// drain returns what sub has received so far.
func drain(sub *nats.Subscription) []*nats.Msg {
	var out []*nats.Msg
	for {
		m, err := sub.NextMsg(0)
		if err != nil {
			return out
		}
		out = append(out, m)
	}
}

// FuzzReceive sends arbitrary envelopes (any field value, any subject
// tail, undecodable bodies) through the whole receive path: parse,
// validate, dispatch, and the echo, http and exec handlers. Each delivery
// must end in exactly one of: a reply (when it asked for one) and an ack;
// a delayed nak, only after its handler reported a transient failure; a
// dead letter and a term. The runtime must never panic.
func FuzzReceive(f *testing.F) {
	for _, seed := range []struct {
		typ, tail, replyTo, taskID, payload string
		recipient                           bool
		raw                                 []byte
	}{
		{typ: "task.request", replyTo: "jetagent.replies.c.1", payload: "hi", recipient: true},
		{typ: "message.send", replyTo: "jetagent.replies.c.2", payload: "broken", recipient: true},
		{typ: "message.send", payload: "busy", recipient: true},
		{typ: "message.send", payload: "unauthorized", recipient: true},
		{typ: "exec.run", replyTo: "jetagent.replies.c.3", payload: "tempfail", recipient: true},
		{typ: "exec.run", payload: "refuse", recipient: true},
		{typ: "exec.run", payload: "garbage", recipient: true},
		{typ: "task.cancel", taskID: "t1", replyTo: "_INBOX.x.y", recipient: true},
		{typ: "state.query", taskID: "t\r\n1", recipient: true},
		{typ: "task.request", tail: "task.cancel", recipient: true},
		{typ: "task.request", replyTo: "jetagent.replies.>", recipient: true},
		{typ: "task.request", recipient: false},
		{typ: "nobody.handles", recipient: true},
		{raw: []byte{0x93, 1, 2, 3}},
	} {
		f.Add(seed.typ, seed.tail, seed.replyTo, seed.taskID, "", seed.payload, seed.recipient, int64(0), int64(0), seed.raw)
	}
	rig := newReceiveRig(f)
	f.Fuzz(func(t *testing.T, typ, tail, replyTo, taskID, idem, payload string, recipient bool, skew, deadline int64, raw []byte) {
		env, err := envelope.New("fuzzer", fuzzAgent, envelope.TaskRequest, payload)
		if err != nil {
			t.Fatal(err)
		}
		env.PayloadType = envelope.PayloadType(typ) // any value: validation judges it
		if !recipient {
			env.Recipient = "not-" + fuzzAgent
		}
		env.ReplyTo, env.TaskID, env.IdempotencyKey = replyTo, taskID, idem
		env.Timestamp = env.Timestamp.Add(time.Duration(skew%600) * time.Second)
		if deadline != 0 {
			env.Deadline = time.Now().Add(time.Duration(deadline%60) * time.Second)
		}
		data := raw
		if len(raw) == 0 {
			if data, err = envelope.Marshal(env); err != nil {
				data = []byte(typ + payload) // not an envelope at all
			}
		}
		if tail == "" {
			tail = typ
		}
		subject := topo.TaskSubject(fuzzAgent, envelope.PayloadType(tail))
		if !envelope.ValidReplyTo(subject) || strings.Contains(tail, "..") {
			subject = topo.TaskSubject(fuzzAgent, envelope.TaskRequest)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		unstored := rig.rt.Stats().UnstoredReplies
		ack, err := rig.conn.JetStream().PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data})
		if err != nil {
			t.Skip() // refused by the server (e.g. a body above its limit)
		}
		seq := ack.Sequence
		s := rig.settled(t, seq)
		if err := rig.conn.NATS().Flush(); err != nil {
			t.Fatal(err)
		}
		replies, dead := drain(rig.reps), drain(rig.dead)
		rig.mu.Lock()
		kinds := rig.kinds[seq]
		rig.mu.Unlock()
		replied := false
		for _, m := range replies {
			var rep envelope.Envelope
			if envelope.Unmarshal(m.Data, &rep) == nil && rep.CorrelationID == env.ID {
				replied = true
			}
		}
		deadLettered := false
		for _, m := range dead {
			if m.Header.Get(dlq.HeaderSequence) == strconv.FormatUint(seq, 10) {
				deadLettered = true
			}
		}
		what := fmt.Sprintf("task %d (subject %q, type %q, reply_to %q, handler kinds %v)", seq, subject, typ, replyTo, kinds)
		switch s.verb {
		case "+ACK":
			if deadLettered {
				t.Fatalf("%s: acked and dead-lettered", what)
			}
			switch {
			case strings.HasPrefix(env.ReplyTo, topo.ReplySubject("")):
				if !replied {
					t.Fatalf("%s: acked without its reply", what)
				}
			case env.ReplyTo != "":
				if rig.rt.Stats().UnstoredReplies != unstored+1 {
					t.Fatalf("%s: acked, its unstored reply not counted", what)
				}
			}
		case "-NAK":
			if deadLettered || replied {
				t.Fatalf("%s: nak'd and also dead-lettered %v / answered %v", what, deadLettered, replied)
			}
			if s.delay <= 0 {
				t.Fatalf("%s: nak'd without a delay", what)
			}
			if len(kinds) != 1 || !kinds[0].Retryable() {
				t.Fatalf("%s: redelivered, but its handler reported no transient failure", what)
			}
			// Remove it: it must not come back while the fuzzer runs.
			st, err := rig.conn.JetStream().Stream(ctx, rig.tasks)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.DeleteMsg(ctx, seq); err != nil {
				t.Fatal(err)
			}
		case "+TERM":
			if !deadLettered {
				t.Fatalf("%s: termed without its dead letter", what)
			}
			if replied {
				t.Fatalf("%s: termed and answered", what)
			}
		default:
			t.Fatalf("%s: settled with %q", what, s.verb)
		}
	})
}
