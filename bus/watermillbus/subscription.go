package watermillbus

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/nats-io/nats.go/jetstream"
)

// subscription is one Subscribe call: its consumer and output channel.
type subscription struct {
	s      *Subscriber
	name   string
	ctx    context.Context // the Subscribe ctx, also cancelled by Close
	cancel context.CancelFunc
	out    chan *message.Message

	// mu is held by the callback while it hands a message over, so that
	// run closes out only once no callback can send on it.
	mu sync.Mutex
	// ending is set by run once pulling has stopped: a late callback
	// gives its message back itself.
	ending bool
	// giveBack holds messages to nak once pulling has stopped; a nak sent
	// earlier would come straight back to this ending subscription.
	giveBack []jetstream.Msg
	// beat paces the heartbeats of the message in hand. It runs only
	// while one is (one message at a time: one ticker per subscription).
	beat *time.Ticker
}

// run owns the subscription: it ends it when ctx ends, Close is called or
// the consumption stops (consumer deleted, connection closed), closes the
// output channel and gives back the messages it held.
func (sub *subscription) run(consumption jetstream.ConsumeContext, cc jetstream.ConsumerConfig, stopOnClose func() bool) {
	defer sub.s.subs.Done()
	select {
	case <-sub.ctx.Done():
	case <-consumption.Closed():
	}
	sub.cancel() // the callback stops handing over and holds what it gets
	stopOnClose()
	consumption.Drain() // unsubscribes, then passes the buffer through the callback
	<-consumption.Closed()
	sub.mu.Lock() // waits for a callback still running after a Stop
	sub.ending = true
	giveBack := sub.giveBack
	sub.giveBack = nil
	sub.mu.Unlock()
	close(sub.out)
	if cc.Durable != "" { // an ephemeral consumer is deleted instead
		for _, m := range giveBack {
			sub.settle("nak", m.Nak())
		}
	}
	sub.deleteEphemeral(cc)
	sub.s.log.Debug("watermill subscription ended", "consumer", sub.name)
}

// deleteEphemeral removes the consumer of a groupless subscription.
func (sub *subscription) deleteEphemeral(cc jetstream.ConsumerConfig) {
	if cc.Durable != "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := sub.s.js.DeleteConsumer(ctx, sub.s.cfg.Stream, cc.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		sub.s.log.Debug("watermill subscription: consumer not deleted; the server removes it when inactive", "consumer", cc.Name, "err", err)
	}
}

// handle hands one JetStream message to watermill and settles it.
func (sub *subscription) handle(m jetstream.Msg) {
	s := sub.s
	sub.mu.Lock()
	defer sub.mu.Unlock()
	switch {
	case sub.ending:
		sub.settle("nak", m.Nak())
		return
	case sub.ctx.Err() != nil:
		sub.giveBack = append(sub.giveBack, m)
		return
	}
	md, err := m.Metadata()
	if err != nil {
		s.badMeta.Add(1)
		s.log.Error("message without JetStream metadata terminated", "consumer", sub.name, "subject", m.Subject(), "err", err)
		_ = m.Term()
		return
	}
	h := m.Headers()
	uuid := h.Get(HeaderUUID)
	if uuid == "" {
		uuid = h.Get(bus.HeaderMsgID)
	}
	wm := message.NewMessage(uuid, m.Data())
	for k, v := range h {
		if k != bus.HeaderMsgID && k != HeaderUUID && !isDeliveryKey(k) && len(v) > 0 {
			wm.Metadata[k] = v[0]
		}
	}
	wm.Metadata[MetadataNumDelivered] = strconv.FormatUint(md.NumDelivered, 10)
	wm.Metadata[MetadataStreamSeq] = strconv.FormatUint(md.Sequence.Stream, 10)
	wm.Metadata[MetadataStream] = md.Stream
	wm.Metadata[MetadataSubject] = m.Subject()
	wm.Metadata[MetadataPublished] = md.Timestamp.UTC().Format(time.RFC3339Nano)
	ctx, cancel := context.WithCancel(sub.ctx)
	defer cancel()
	wm.SetContext(ctx)

	select {
	case sub.out <- wm:
		s.delivered.Add(1)
	case <-sub.ctx.Done():
		sub.giveBack = append(sub.giveBack, m)
		return
	}
	sub.await(m, wm)
	// An outcome that arrived with ctx's end wins over giving it back.
	switch {
	case isDone(wm.Acked()):
		sub.settle("ack", m.Ack())
	case !isDone(wm.Nacked()):
		sub.giveBack = append(sub.giveBack, m)
	default:
		if delay := sub.nakDelay(wm); delay > 0 {
			sub.settle("nak", m.NakWithDelay(delay))
		} else {
			sub.settle("nak", m.Nak())
		}
	}
}

// await waits until wm is acked or nacked, or the subscription ends,
// sending InProgress for m meanwhile so that the server does not redeliver
// it however long the handler takes.
func (sub *subscription) await(m jetstream.Msg, wm *message.Message) {
	sub.beat.Reset(sub.s.heartbeat)
	defer sub.beat.Stop()
	for {
		select {
		case <-wm.Acked():
			return
		case <-wm.Nacked():
			return
		case <-sub.ctx.Done():
			return
		case <-sub.beat.C:
			if err := m.InProgress(); err != nil {
				sub.s.log.Debug("watermill subscription: heartbeat failed", "consumer", sub.name, "err", err)
				continue
			}
			sub.s.heartbeats.Add(1)
		}
	}
}

// nakDelay returns the redelivery delay of a nacked wm: its
// MetadataNakDelay when valid, else the configured NakDelay.
func (sub *subscription) nakDelay(wm *message.Message) time.Duration {
	v, ok := wm.Metadata[MetadataNakDelay]
	if !ok {
		return sub.s.cfg.NakDelay
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		sub.s.log.Warn("watermill subscription: invalid nak delay metadata; using NakDelay",
			"consumer", sub.name, "key", MetadataNakDelay, "value", v, "nak_delay", sub.s.cfg.NakDelay)
		return sub.s.cfg.NakDelay
	}
	return d
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (sub *subscription) settle(op string, err error) {
	if err != nil {
		sub.s.log.Warn("watermill subscription: settle failed; the server redelivers after AckWait", "op", op, "consumer", sub.name, "err", err)
	}
}

func (sub *subscription) onConsumeError(_ jetstream.ConsumeContext, err error) {
	sub.s.consumeErrs.Add(1)
	if errors.Is(err, jetstream.ErrNoHeartbeat) {
		sub.s.missedHB.Add(1)
	}
	sub.s.log.Warn("watermill subscription: consume error", "consumer", sub.name, "err", err)
}
