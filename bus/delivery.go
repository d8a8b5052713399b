package bus

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Delivery is one delivery of a JetStream message to a consumer, with the
// metadata the runtime decides on and the ways to settle it. Exactly one of
// Ack, Nak, NakWithDelay or Term should end it; InProgress may be called
// any number of times before that to reset the server's AckWait timer.
type Delivery struct {
	msg jetstream.Msg

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

	// settled, when not nil, is closed by the first settlement (recovery
	// mode waits on it before pulling the next message).
	settled    chan struct{}
	settleOnce sync.Once
}

func (d *Delivery) markSettled() {
	if d.settled != nil {
		d.settleOnce.Do(func() { close(d.settled) })
	}
}

// newDelivery wraps m, reading its metadata from the ack subject.
func newDelivery(m jetstream.Msg) (*Delivery, error) {
	d := &Delivery{msg: m, Subject: m.Subject(), Data: m.Data(), Header: m.Headers()}
	if a, ok := parseAckSubject(m.Reply()); ok {
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
	return wrapSettle("ack", d.msg.Ack())
}

// AckSync acknowledges the delivery and waits for the server to confirm.
func (d *Delivery) AckSync(ctx context.Context) error {
	d.markSettled()
	return wrapSettle("ack", d.msg.DoubleAck(ctx))
}

// Nak asks for immediate redelivery.
func (d *Delivery) Nak() error {
	d.markSettled()
	return wrapSettle("nak", d.msg.Nak())
}

// NakWithDelay asks for redelivery after delay; the server does the waiting.
func (d *Delivery) NakWithDelay(delay time.Duration) error {
	d.markSettled()
	return wrapSettle("nak", d.msg.NakWithDelay(delay))
}

// InProgress tells the server the delivery is still being worked on,
// restarting its AckWait timer.
func (d *Delivery) InProgress() error { return wrapSettle("in-progress", d.msg.InProgress()) }

// Term ends the delivery for good: the server never redelivers it. The
// reason is recorded in the server's advisory.
func (d *Delivery) Term(reason string) error {
	d.markSettled()
	if reason == "" {
		return wrapSettle("term", d.msg.Term())
	}
	return wrapSettle("term", d.msg.TermWithReason(reason))
}

// Msg returns the underlying jetstream message.
func (d *Delivery) Msg() jetstream.Msg { return d.msg }

func wrapSettle(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("bus: %s: %w", op, err)
}
