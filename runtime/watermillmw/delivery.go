package watermillmw

import (
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus/watermillbus"
)

// unknownSubject stands for the subject of a message that names none (not
// from a watermillbus.Subscriber, outside a Router): it keys the breaker
// and ends the dead-letter subject.
const unknownSubject = "watermill"

// delivery is what the middleware knows about one delivery of a message,
// read from the metadata a watermillbus.Subscriber sets.
type delivery struct {
	// n is the delivery count, 1 when unknown.
	n uint64
	// subject is the subject the message was published on, or the
	// Router's subscribed topic, or "" when neither is known.
	subject string
	// stream and seq locate the message; "" and 0 when unknown.
	stream string
	seq    uint64
	// published is when the server stored the message; zero when unknown.
	published time.Time
}

func deliveryOf(msg *message.Message) delivery {
	d := delivery{n: 1}
	if n, err := strconv.ParseUint(msg.Metadata.Get(watermillbus.MetadataNumDelivered), 10, 64); err == nil && n > 0 {
		d.n = n
	}
	d.subject = msg.Metadata.Get(watermillbus.MetadataSubject)
	if d.subject == "" {
		d.subject = message.SubscribeTopicFromCtx(msg.Context())
	}
	d.stream = msg.Metadata.Get(watermillbus.MetadataStream)
	d.seq, _ = strconv.ParseUint(msg.Metadata.Get(watermillbus.MetadataStreamSeq), 10, 64)
	if at, err := time.Parse(time.RFC3339Nano, msg.Metadata.Get(watermillbus.MetadataPublished)); err == nil {
		d.published = at
	}
	return d
}

// breakerKey names the breaker of d's subject.
func (d delivery) breakerKey() string {
	if d.subject == "" {
		return unknownSubject
	}
	return d.subject
}

// attempt is n as the int the backoff policy takes.
func (d delivery) attempt() int {
	return int(min(d.n, 1<<30))
}
