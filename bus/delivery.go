package bus

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Delivery is one delivery of a JetStream message to a consumer, with the
// metadata the runtime decides on and the ways to settle it. Exactly one of
// Ack, Nak, NakWithDelay or Term should end it; InProgress may be called
// any number of times before that to reset the server's AckWait timer.
type Delivery struct {
	msg  *nats.Msg
	nc   *nats.Conn
	ackd atomic.Bool // settled (InProgress does not count)

	// Subject is the subject the message was published on.
	Subject string
	// Data is the message body. It is owned by the delivery: do not keep
	// it after settling unless you copy it.
	Data []byte
	// Header holds the message headers (nil when there are none).
	Header nats.Header
	// NumDelivered counts deliveries of this message, starting at 1.
	NumDelivered uint64
	// StreamSeq is the message's sequence in its stream (stable across
	// redeliveries; it identifies the message).
	StreamSeq uint64
	// ConsumerSeq is this delivery's sequence in the consumer.
	ConsumerSeq uint64
	// Published is when the server stored the message.
	Published time.Time
	// Pending is how many messages the consumer had left after this one.
	Pending uint64
	// Stream and Consumer name where the delivery comes from.
	Stream, Consumer string

	// alive is when the server last restarted this delivery's ack timer,
	// as far as the receiver can tell (Unix nanoseconds): when it was
	// received (or the start of a freeze it was received right after),
	// then each InProgress sent.
	alive      atomic.Int64
	ackTimeout time.Duration

	// release gives the delivery's place in its subscriber's window back,
	// once (nil for deliveries not made by a Subscriber).
	release     func()
	releaseOnce sync.Once
}

func (d *Delivery) markSettled() { d.Release() }

// Release gives the delivery's place in its Subscriber's window back
// without settling it: for a delivery left to the server to redeliver
// (its ack timeout passed, another delivery of the message owns it).
// Settling releases it too; later calls do nothing.
func (d *Delivery) Release() {
	if d.release != nil {
		d.releaseOnce.Do(d.release)
	}
}

// Settled reports whether the delivery was acked, nak'd or terminated.
func (d *Delivery) Settled() bool { return d.ackd.Load() }

// AckTimeout is how long the server waits, after it sent this delivery or
// heard a heartbeat for it, before redelivering it (BackOff's step for
// its delivery count, else AckWait). Zero when unknown.
func (d *Delivery) AckTimeout() time.Duration { return d.ackTimeout }

// LastAlive returns when the server last (re)started this delivery's ack
// timer, as far as the receiver can tell: its arrival, or the start of a
// pause of the process it arrived right after, or the last InProgress.
func (d *Delivery) LastAlive() time.Time { return time.Unix(0, d.alive.Load()) }

// Expired reports whether the delivery's ack timeout has visibly passed
// at now since the server last heard of it, less margin: the server has
// then redelivered it (or is about to), and another delivery of the
// message owns it. Such a delivery should not be started, nor settled
// with Nak; Release it. It is false when the timeout is unknown.
func (d *Delivery) Expired(now time.Time, margin time.Duration) bool {
	if d.ackTimeout <= 0 {
		return false
	}
	return now.Sub(d.LastAlive()) >= d.ackTimeout-margin
}

// newDelivery wraps m, received on nc, reading its metadata from the ack
// subject.
func newDelivery(nc *nats.Conn, m *nats.Msg) (*Delivery, error) {
	d := &Delivery{msg: m, nc: nc, Subject: m.Subject, Data: m.Data, Header: m.Header}
	if len(d.Header) == 0 {
		d.Header = nil
	}
	if a, ok := parseAckSubject(m.Reply); ok {
		d.NumDelivered, d.StreamSeq, d.ConsumerSeq, d.Pending = a.delivered, a.streamSeq, a.consumerSeq, a.pending
		d.Published = time.Unix(0, a.timestamp)
		d.Stream, d.Consumer = a.stream, a.consumer
		return d, nil
	}
	md, err := m.Metadata() // its error says what is wrong with the subject
	if err != nil {
		return nil, fmt.Errorf("bus: delivery metadata: %w", err)
	}
	d.NumDelivered, d.StreamSeq, d.ConsumerSeq, d.Pending = md.NumDelivered, md.Sequence.Stream, md.Sequence.Consumer, md.NumPending
	d.Published = md.Timestamp
	d.Stream, d.Consumer = md.Stream, md.Consumer
	return d, nil
}

// ackMeta is what a JetStream ack subject says about a delivery.
type ackMeta struct {
	stream, consumer                           string
	delivered, streamSeq, consumerSeq, pending uint64
	timestamp                                  int64 // Unix nanoseconds
}

// parseAckSubject reads the metadata of a delivery from its ack subject
// without allocating (Metadata allocates, and this runs once per
// delivery). Two forms exist:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>
//	$JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending>[.<token>...]
//
// ok is false for anything else; the caller then asks nats.go, whose
// error explains the problem.
func parseAckSubject(s string) (a ackMeta, ok bool) {
	const prefix = "$JS.ACK."
	if len(s) <= len(prefix) || s[:len(prefix)] != prefix {
		return a, false
	}
	var tok [9]string // the first nine tokens after the prefix
	n := 0
	for rest := s[len(prefix):]; ; n++ {
		t, more, found := strings.Cut(rest, ".")
		if n < len(tok) {
			tok[n] = t
		}
		if !found {
			n++
			break
		}
		rest = more
	}
	var f []string // stream, consumer, delivered, sseq, cseq, tm, pending
	switch {
	case n == 7:
		f = tok[0:7]
	case n >= 9:
		f = tok[2:9]
	default:
		return a, false
	}
	var nums [5]uint64
	for i, t := range f[2:] {
		v, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return a, false
		}
		nums[i] = v
	}
	if f[0] == "" || f[1] == "" || nums[3] > math.MaxInt64 {
		return a, false
	}
	return ackMeta{
		stream: f[0], consumer: f[1],
		delivered: nums[0], streamSeq: nums[1], consumerSeq: nums[2], timestamp: int64(nums[3]), pending: nums[4],
	}, true
}

// Ack acknowledges the delivery: the server removes a work-queue task. The
// acknowledgement itself is not confirmed (see AckSync); if it is lost, the
// message is redelivered after AckWait.
func (d *Delivery) Ack() error {
	d.markSettled()
	return wrapSettle("ack", d.settle(ackAck))
}

// AckSync acknowledges the delivery and waits for the server to confirm.
func (d *Delivery) AckSync(ctx context.Context) error {
	d.markSettled()
	if err := d.claim(); err != nil {
		return wrapSettle("ack", err)
	}
	_, err := d.nc.RequestWithContext(ctx, d.msg.Reply, ackAck)
	return wrapSettle("ack", err)
}

// Nak asks for immediate redelivery.
func (d *Delivery) Nak() error {
	d.markSettled()
	return wrapSettle("nak", d.settle(ackNak))
}

// NakWithDelay asks for redelivery after delay; the server does the waiting.
func (d *Delivery) NakWithDelay(delay time.Duration) error {
	d.markSettled()
	if delay <= 0 {
		return wrapSettle("nak", d.settle(ackNak))
	}
	return wrapSettle("nak", d.settle([]byte(fmt.Sprintf(`%s {"delay": %d}`, ackNak, delay.Nanoseconds()))))
}

// InProgress tells the server the delivery is still being worked on,
// restarting its ack timer (see AckTimeout).
func (d *Delivery) InProgress() error {
	if d.ackd.Load() {
		return wrapSettle("in-progress", jetstream.ErrMsgAlreadyAckd)
	}
	now := time.Now()
	if err := d.nc.Publish(d.msg.Reply, ackProgress); err != nil {
		return wrapSettle("in-progress", err)
	}
	d.alive.Store(now.UnixNano())
	return nil
}

// Term ends the delivery for good: the server never redelivers it. The
// reason is recorded in the server's advisory.
func (d *Delivery) Term(reason string) error {
	d.markSettled()
	if reason == "" {
		return wrapSettle("term", d.settle(ackTerm))
	}
	return wrapSettle("term", d.settle([]byte(string(ackTerm)+" "+reason)))
}

// Msg returns the underlying NATS message.
func (d *Delivery) Msg() *nats.Msg { return d.msg }

// The bodies of JetStream acknowledgements.
var (
	ackAck      = []byte("+ACK")
	ackNak      = []byte("-NAK")
	ackProgress = []byte("+WPI")
	ackTerm     = []byte("+TERM")
)

// claim marks the delivery settled; it fails if it was already.
func (d *Delivery) claim() error {
	if d.msg.Reply == "" {
		return jetstream.ErrMsgNoReply
	}
	if !d.ackd.CompareAndSwap(false, true) {
		return jetstream.ErrMsgAlreadyAckd
	}
	return nil
}

// settle sends body to the delivery's ack subject, once.
func (d *Delivery) settle(body []byte) error {
	if err := d.claim(); err != nil {
		return err
	}
	return d.nc.Publish(d.msg.Reply, body)
}

func wrapSettle(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("bus: %s: %w", op, err)
}
