package benchsuite

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var topo = bus.Topology{}

type env struct {
	ctx  context.Context
	srv  *bus.EmbeddedServer
	conn *bus.Conn
	o    Options
	seq  atomic.Int64
}

// measurement is a pair of functions returning one round's figure.
type measurement struct {
	name, unit, peer string
	higherWins       bool
	target           float64
	oneSize          bool // run at the first payload size only
	raw, ours        func(e *env, size int) (float64, error)
}

var measurements = []measurement{
	{name: "publish (encode + publish + ack)", unit: "msg/s", higherWins: true, target: 0.85, peer: "raw nats.go async publish (with Nats-Msg-Id)",
		raw:  func(e *env, size int) (float64, error) { return e.rawPublish(size, headersMsgID) },
		ours: (*env).jetagentPublish},
	{name: "publish, raw with jetagent's headers", unit: "msg/s", higherWins: true, peer: "raw nats.go async publish of the same bytes and headers jetagent sends (informational)",
		raw:  func(e *env, size int) (float64, error) { return e.rawPublish(size, headersAll) },
		ours: (*env).jetagentPublish},
	{name: "publish, raw without dedup", unit: "msg/s", higherWins: true, peer: "raw nats.go async publish, no Nats-Msg-Id (informational)",
		raw:  func(e *env, size int) (float64, error) { return e.rawPublish(size, headersNone) },
		ours: (*env).jetagentPublish},
	{name: "consume (decode, breaker, dispositions, ack)", unit: "msg/s", higherWins: true, target: 0.85, peer: "raw nats.go pull consume, plain ack",
		raw: (*env).rawConsume, ours: (*env).jetagentConsume},
	{name: "consume, execution records off", unit: "msg/s", higherWins: true, peer: "raw nats.go pull consume, plain ack (informational: the record's cost is the gap to the line above)",
		raw: (*env).rawConsume, ours: func(e *env, size int) (float64, error) { return e.consumeWith(size, false) }},
	{name: "consume vs watermill-nats", unit: "msg/s", higherWins: true, target: 1.15, peer: "watermill-nats v2 jetstream subscriber",
		raw: (*env).watermillConsume, ours: (*env).jetagentConsume},
	{name: "request/reply p50", unit: "us", target: 1.25, oneSize: true, peer: "raw JetStream request + reply",
		raw:  func(e *env, size int) (float64, error) { return e.rawRequest(size, 50) },
		ours: func(e *env, size int) (float64, error) { return e.jetagentRequest(size, 50) }},
	{name: "request/reply p99", unit: "us", target: 1.5, oneSize: true, peer: "raw JetStream request + reply",
		raw:  func(e *env, size int) (float64, error) { return e.rawRequest(size, 99) },
		ours: func(e *env, size int) (float64, error) { return e.jetagentRequest(size, 99) }},
	{name: "DLQ replay", unit: "entries/s", higherWins: true, target: 0.7, oneSize: true, peer: "raw fetch-and-republish loop",
		raw: (*env).rawReplay, ours: (*env).jetagentReplay},
	{name: "checkpoint (CAS save)", unit: "us", target: 1.15, oneSize: true, peer: "raw KV put",
		raw:  func(e *env, size int) (float64, error) { return e.rawKVPut(size, false) },
		ours: (*env).checkpoint},
	{name: "checkpoint, raw with CAS", unit: "us", oneSize: true, peer: "raw KV update with expected revision (informational)",
		raw:  func(e *env, size int) (float64, error) { return e.rawKVPut(size, true) },
		ours: (*env).checkpoint},
}

func (e *env) measure(m measurement, size int) (Result, error) {
	r := Result{Name: m.name, Size: size, Unit: m.unit, HigherWins: m.higherWins, Target: m.target, Peer: m.peer}
	for i := 0; i < e.o.Rounds; i++ {
		first, second := m.raw, m.ours
		if i%2 == 1 { // alternate, so neither always runs on a warmer server
			first, second = m.ours, m.raw
		}
		a, err := first(e, size)
		if err != nil {
			return r, err
		}
		b, err := second(e, size)
		if err != nil {
			return r, err
		}
		if i%2 == 1 {
			a, b = b, a
		}
		r.Raw, r.Ours = append(r.Raw, a), append(r.Ours, b)
	}
	return r, nil
}

// unique returns a fresh agent name for one round.
func (e *env) unique(kind string) string {
	return kind + strconv.FormatInt(e.seq.Add(1), 10)
}

// roundTimeout bounds one round of a measurement: a round that does not
// finish in it fails the run with what it saw, instead of waiting forever
// for a message that will not come.
const roundTimeout = 2 * time.Minute

// awaitRound waits for done, at most roundTimeout; then it fails with
// progress's account.
func awaitRound(done <-chan struct{}, progress func() string) error {
	t := time.NewTimer(roundTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("benchsuite: round not done after %v: %s", roundTimeout, progress())
	}
}

// consumerState describes the tasks consumer of agent, for a round that
// did not finish.
func (e *env) consumerState(agent string) string {
	c, err := e.conn.JetStream().Consumer(e.ctx, topo.TasksStream(), agent)
	if err != nil {
		return err.Error()
	}
	info, err := c.Info(e.ctx)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("pending %d, ack pending %d, redelivered %d, waiting pulls %d, delivered %d/%d",
		info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting, info.Delivered.Consumer, info.AckFloor.Consumer)
}

func payload(size int) []byte { return make([]byte, size) }

// envelopes builds n encoded task envelopes of payload size for agent.
func (e *env) envelopes(agent string, n, size int, replyTo string) ([]*nats.Msg, error) {
	p := payload(size)
	msgs := make([]*nats.Msg, n)
	for i := range msgs {
		env, err := envelope.New("bench", agent, envelope.TaskRequest, p)
		if err != nil {
			return nil, err
		}
		env.ReplyTo = replyTo
		if msgs[i], err = bus.EnvelopeMsg(topo.TaskSubject(agent, envelope.TaskRequest), env); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

func (e *env) purgeTasks() error {
	st, err := e.conn.JetStream().Stream(e.ctx, topo.TasksStream())
	if err != nil {
		return err
	}
	return st.Purge(e.ctx)
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

// rawPublish: the same envelope bytes, PublishMsgAsync, then wait for every
// ack. With dedup it sends the same Nats-Msg-Id header jetagent does, so
// both pay for the server's duplicate window, which makes re-sends safe;
// without, it shows what that guarantee costs.
// Headers of the raw publish: none, only the Nats-Msg-Id deduplication
// needs, or all jetagent sends (Nats-Msg-Id, Content-Type, traceparent).
const (
	headersNone = iota
	headersMsgID
	headersAll
)

func (e *env) rawPublish(size int, headers int) (float64, error) {
	msgs, err := e.envelopes("rawpub", e.o.Messages, size, "")
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		switch headers {
		case headersNone:
			m.Header = nil
		case headersMsgID:
			m.Header = nats.Header{jetstream.MsgIDHeader: m.Header[jetstream.MsgIDHeader]}
		}
	}
	js := e.conn.JetStream()
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			return 0, err
		}
		futures = append(futures, f)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("raw publish: acks missing")
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, err
		}
	}
	d := time.Since(start)
	return rate(len(msgs), d), e.purgeTasks()
}

// jetagentPublish: the envelopes are built before the clock starts, as
// rawPublish's bytes and message ids are; the clock measures encoding,
// headers, PublishEnvelopes and waiting for every ack.
func (e *env) jetagentPublish(size int) (float64, error) {
	p := payload(size)
	pub := bus.NewPublisher(e.conn.JetStream())
	envs := make([]*envelope.Envelope, e.o.Messages)
	for i := range envs {
		env, err := envelope.New("bench", "pub", envelope.TaskRequest, p)
		if err != nil {
			return 0, err
		}
		envs[i] = env
	}
	start := time.Now()
	if _, err := pub.PublishEnvelopes(e.ctx, topo.TaskSubject("pub", envelope.TaskRequest), envs); err != nil {
		return 0, err
	}
	d := time.Since(start)
	return rate(len(envs), d), e.purgeTasks()
}

func (e *env) fill(agent string, size int, replyTo string) error {
	msgs, err := e.envelopes(agent, e.o.Messages, size, replyTo)
	if err != nil {
		return err
	}
	_, err = bus.NewPublisher(e.conn.JetStream()).PublishBatch(e.ctx, msgs)
	return err
}

// rawConsume: pull consume with the runtime's prefetch, plain ack.
func (e *env) rawConsume(size int) (float64, error) {
	agent := e.unique("raw")
	if err := e.fill(agent, size, ""); err != nil {
		return 0, err
	}
	js := e.conn.JetStream()
	cons, err := js.CreateOrUpdateConsumer(e.ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: agent, FilterSubject: topo.AgentTasks(agent), AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: bus.DefaultMaxAckPending, AckWait: bus.DefaultAckWait,
	})
	if err != nil {
		return 0, err
	}
	n := int64(e.o.Messages)
	var count atomic.Int64
	done := make(chan struct{})
	start := time.Now()
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		if count.Add(1) == n {
			close(done)
		}
	}, jetstream.PullMaxMessages(bus.DefaultPrefetch), jetstream.PullExpiry(bus.DefaultPullExpiry))
	if err != nil {
		return 0, err
	}
	if err := awaitRound(done, func() string { return fmt.Sprintf("raw consume: %d of %d messages", count.Load(), n) }); err != nil {
		cc.Stop()
		return 0, err
	}
	d := time.Since(start)
	cc.Stop()
	<-cc.Closed()
	return rate(e.o.Messages, d), js.DeleteConsumer(e.ctx, topo.TasksStream(), agent)
}

// jetagentConsume: a runtime with a no-op handler (decode, validation,
// breaker, dispositions, heartbeat bookkeeping, the execution record, ack).
func (e *env) jetagentConsume(size int) (float64, error) { return e.consumeWith(size, true) }

// consumeWith is jetagentConsume, with the execution records on or off.
// The agent is provisioned (its records bucket exists), as `agent run`
// does.
func (e *env) consumeWith(size int, records bool) (float64, error) {
	agent := e.unique("agent")
	if err := bus.ProvisionAgent(e.ctx, e.conn.JetStream(), topo, agent); err != nil {
		return 0, err
	}
	if err := e.fill(agent, size, ""); err != nil {
		return 0, err
	}
	rt, err := runtime.New(e.conn, runtime.Config{Agent: agent, DisableSweeper: true, DisableExecRecords: !records})
	if err != nil {
		return 0, err
	}
	n := int64(e.o.Messages)
	var count atomic.Int64
	done := make(chan struct{})
	rt.Handle(envelope.TaskRequest, func(context.Context, *runtime.Task) (any, error) {
		if count.Add(1) == n {
			close(done)
		}
		return nil, nil
	})
	start := time.Now()
	if err := rt.Start(e.ctx); err != nil {
		return 0, err
	}
	if err := awaitRound(done, func() string {
		return fmt.Sprintf("jetagent consume: %d of %d tasks handled (runtime stats %+v; consumer %s)", count.Load(), n, rt.Stats(), e.consumerState(agent))
	}); err != nil {
		_ = rt.Stop(e.ctx)
		return 0, err
	}
	d := time.Since(start)
	if err := rt.Stop(e.ctx); err != nil {
		return 0, err
	}
	return rate(e.o.Messages, d), e.conn.JetStream().DeleteConsumer(e.ctx, topo.TasksStream(), agent)
}

// watermillConsume: the official watermill-nats jetstream subscriber on a
// stream of its own (its convention: stream name = topic), acking each
// message.
func (e *env) watermillConsume(size int) (float64, error) {
	topic := e.unique("wmbench")
	js := e.conn.JetStream()
	if _, err := js.CreateStream(e.ctx, jetstream.StreamConfig{Name: topic, Subjects: []string{topic}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		return 0, err
	}
	defer js.DeleteStream(context.Background(), topic)
	msgs, err := e.envelopes("wm", e.o.Messages, size, "")
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		m.Subject = topic
	}
	if _, err := bus.NewPublisher(js).PublishBatch(e.ctx, msgs); err != nil {
		return 0, err
	}
	nc, err := e.srv.Connect(e.ctx) // watermill-nats drains the connection it is given on Close
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
		Conn:                nc.NATS(),
		Logger:              watermill.NopLogger{},
		ResourceInitializer: wmjs.GroupedConsumer("bench"),
		ConfigureStream: func(t string) jetstream.StreamConfig {
			return jetstream.StreamConfig{Name: t, Subjects: []string{t}, Retention: jetstream.WorkQueuePolicy}
		},
		ConsumeOptions: []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(bus.DefaultPrefetch)},
	})
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	start := time.Now()
	ch, err := sub.Subscribe(ctx, topic)
	if err != nil {
		return 0, err
	}
	limit := time.NewTimer(roundTimeout)
	defer limit.Stop()
	for i := 0; i < e.o.Messages; i++ {
		select {
		case m, ok := <-ch:
			if !ok {
				return 0, fmt.Errorf("watermill-nats: channel closed after %d", i)
			}
			m.Ack()
		case <-limit.C:
			return 0, fmt.Errorf("watermill-nats: %d of %d messages after %v", i, e.o.Messages, roundTimeout)
		}
	}
	return rate(e.o.Messages, time.Since(start)), nil
}

func percentile(us []float64, p int) float64 {
	slices.Sort(us)
	return us[min(len(us)-1, len(us)*p/100)]
}

// rawRequest: publish a task to the tasks stream with reply_to, a raw
// consumer replies through JetStream to the replies stream, the caller
// waits on a core subscription: the shape of Client.Send, by hand.
func (e *env) rawRequest(size, p int) (float64, error) {
	agent := e.unique("rawrr")
	js, nc := e.conn.JetStream(), e.conn.NATS()
	cons, err := js.CreateOrUpdateConsumer(e.ctx, topo.TasksStream(), jetstream.ConsumerConfig{
		Durable: agent, FilterSubject: topo.AgentTasks(agent), AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return 0, err
	}
	defer js.DeleteConsumer(context.Background(), topo.TasksStream(), agent)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		reply := m.Headers().Get("Reply-To")
		_, _ = js.PublishMsg(e.ctx, &nats.Msg{Subject: reply, Data: m.Data(), Header: nats.Header{jetstream.MsgIDHeader: {m.Headers().Get(jetstream.MsgIDHeader) + "-r"}}})
		_ = m.Ack()
	})
	if err != nil {
		return 0, err
	}
	defer cc.Stop()
	replyTo := topo.ReplySubject(agent)
	inbox := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe(replyTo, inbox)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	body := payload(size)
	lat := make([]float64, 0, e.o.Requests)
	for i := 0; i < e.o.Requests; i++ {
		id := agent + "-" + strconv.Itoa(i)
		start := time.Now()
		m := &nats.Msg{Subject: topo.TaskSubject(agent, envelope.TaskRequest), Data: body,
			Header: nats.Header{jetstream.MsgIDHeader: {id}, "Reply-To": {replyTo}}}
		if _, err := js.PublishMsg(e.ctx, m); err != nil {
			return 0, err
		}
		select {
		case <-inbox:
		case <-time.After(10 * time.Second):
			return 0, fmt.Errorf("raw request %d: no reply", i)
		}
		lat = append(lat, float64(time.Since(start).Microseconds()))
	}
	return percentile(lat, p), nil
}

// jetagentRequest: Client.Send to an echo runtime.
func (e *env) jetagentRequest(size, p int) (float64, error) {
	agent := e.unique("echo")
	rt, err := runtime.New(e.conn, runtime.Config{Agent: agent, DisableSweeper: true})
	if err != nil {
		return 0, err
	}
	rt.Handle(envelope.TaskRequest, runtime.Echo)
	if err := rt.Start(e.ctx); err != nil {
		return 0, err
	}
	defer rt.Stop(context.Background())
	client, err := runtime.NewClient(e.conn, runtime.ClientConfig{})
	if err != nil {
		return 0, err
	}
	defer client.Close()
	body := payload(size)
	lat := make([]float64, 0, e.o.Requests)
	for i := 0; i < e.o.Requests; i++ {
		env, err := envelope.New("bench", agent, envelope.TaskRequest, body)
		if err != nil {
			return 0, err
		}
		start := time.Now()
		if _, err := client.Send(e.ctx, env); err != nil {
			return 0, err
		}
		lat = append(lat, float64(time.Since(start).Microseconds()))
	}
	return percentile(lat, p), nil
}

// dlqEntries stores n dead letters of agent and returns when stored.
func (e *env) dlqEntries(agent string, n, size int) error {
	msgs, err := e.envelopes(agent, n, size, "")
	if err != nil {
		return err
	}
	store := dlq.NewStore(e.conn.JetStream(), topo)
	now := time.Now()
	for i, m := range msgs {
		// Original sequences must differ between rounds: a dead letter's
		// message id derives from them, and the DLQ drops duplicates.
		rec := &dlq.Record{Data: m.Data, Header: m.Header, Reason: dlq.ReasonMaxAttempts, Agent: agent, Subject: m.Subject,
			Stream: topo.TasksStream(), Sequence: uint64(e.seq.Add(1)), Deliveries: 3, FirstFailure: now, LastFailure: now}
		msgs[i] = rec.Msg(store.Subject(rec))
	}
	_, err = bus.NewPublisher(e.conn.JetStream()).PublishBatch(e.ctx, msgs)
	return err
}

const replayEntries = 5000

// rawReplay: fetch every DLQ entry of the agent and republish it to its
// original subject under a new id, waiting for all acks.
func (e *env) rawReplay(size int) (float64, error) {
	agent := e.unique("rawdlq")
	if err := e.dlqEntries(agent, replayEntries, size); err != nil {
		return 0, err
	}
	js := e.conn.JetStream()
	start := time.Now()
	cons, err := js.OrderedConsumer(e.ctx, topo.DLQStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{topo.AgentDLQ(agent)}})
	if err != nil {
		return 0, err
	}
	futures := make([]jetstream.PubAckFuture, 0, replayEntries)
	for len(futures) < replayEntries {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return 0, err
		}
		for m := range batch.Messages() {
			h := nats.Header{}
			for k, v := range m.Headers() {
				h[k] = v
			}
			md, _ := m.Metadata()
			h.Set(jetstream.MsgIDHeader, "raw-replay-"+strconv.FormatUint(md.Sequence.Stream, 10))
			f, err := js.PublishMsgAsync(&nats.Msg{Subject: h.Get(dlq.HeaderSubject), Data: m.Data(), Header: h})
			if err != nil {
				return 0, err
			}
			futures = append(futures, f)
		}
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return 0, err
		}
	}
	d := time.Since(start)
	return rate(replayEntries, d), e.purgeTasks()
}

// jetagentReplay: dlq.Store List + Replay (replay marks, new ids).
func (e *env) jetagentReplay(size int) (float64, error) {
	agent := e.unique("dlq")
	if err := e.dlqEntries(agent, replayEntries, size); err != nil {
		return 0, err
	}
	store := dlq.NewStore(e.conn.JetStream(), topo)
	start := time.Now()
	entries, err := store.List(e.ctx, dlq.Filter{Agent: agent})
	if err != nil {
		return 0, err
	}
	res, err := store.Replay(e.ctx, entries, dlq.ReplayOptions{})
	if err != nil || res.Replayed != replayEntries {
		return 0, fmt.Errorf("replayed %d of %d (listed %d, result %+v): %v", res.Replayed, replayEntries, len(entries), res, err)
	}
	d := time.Since(start)
	return rate(replayEntries, d), e.purgeTasks()
}

const kvOps = 2000

// checkpointAgent owns the snapshot bucket the checkpoint pair measures
// (raw puts and checkpoints go to the same bucket).
const checkpointAgent = "ckpt"

// snapshotBucket ensures checkpointAgent's snapshot bucket and returns it.
func (e *env) snapshotBucket() (jetstream.KeyValue, error) {
	if err := bus.ProvisionAgent(e.ctx, e.conn.JetStream(), topo, checkpointAgent); err != nil {
		return nil, err
	}
	return e.conn.JetStream().KeyValue(e.ctx, topo.SnapshotBucket(checkpointAgent))
}

// rawKVPut: kvOps puts of one key; with cas, each an update expecting the
// revision the one before returned, as a checkpoint does.
func (e *env) rawKVPut(size int, cas bool) (float64, error) {
	kv, err := e.snapshotBucket()
	if err != nil {
		return 0, err
	}
	key := checkpointAgent + "." + e.unique("raw")
	val := payload(size + 128) // about what a snapshot with that state weighs
	start := time.Now()
	var rev uint64
	for i := 0; i < kvOps; i++ {
		switch {
		case !cas:
			_, err = kv.Put(e.ctx, key, val)
		case rev == 0:
			rev, err = kv.Create(e.ctx, key, val)
		default:
			rev, err = kv.Update(e.ctx, key, val, rev)
		}
		if err != nil {
			return 0, err
		}
	}
	return float64(time.Since(start).Microseconds()) / kvOps, kv.Purge(e.ctx, key)
}

func (e *env) checkpoint(size int) (float64, error) {
	if _, err := e.snapshotBucket(); err != nil {
		return 0, err
	}
	store, err := snapshot.NewKV(e.conn.JetStream(), topo)
	if err != nil {
		return 0, err
	}
	agent, task := checkpointAgent, e.unique("task")
	s := &snapshot.Snapshot{Agent: agent, TaskID: task, Status: snapshot.Working, State: payload(size), Updated: time.Now()}
	var rev uint64
	start := time.Now()
	for i := 0; i < kvOps; i++ {
		s.Step = i + 1
		if rev, err = store.Save(e.ctx, s, rev); err != nil {
			return 0, err
		}
	}
	return float64(time.Since(start).Microseconds()) / kvOps, store.Delete(e.ctx, agent, task)
}
