package watermillbus

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natsheader"
	"github.com/nats-io/nats.go"
)

// publishTimeout bounds how long Publish waits for the acknowledgements
// (watermill's Publish takes no context).
const publishTimeout = 30 * time.Second

var _ message.Publisher = (*Publisher)(nil)

// Publisher publishes watermill messages to JetStream, implementing
// watermill's message.Publisher. It is safe for concurrent use.
type Publisher struct {
	pub    *bus.Publisher
	closed atomic.Bool
}

// NewPublisher returns a Publisher that sends through pub (required), which
// may go on publishing envelopes and raw messages of its own.
func NewPublisher(pub *bus.Publisher) *Publisher {
	return &Publisher{pub: pub}
}

// Publish publishes messages to topic (a NATS subject captured by a
// stream), implementing watermill's message.Publisher. Each message becomes
// one NATS message: the payload is the body, each metadata entry a header
// (except the jetagent-* delivery keys), the UUID goes in Watermill-Uuid,
// and Nats-Msg-Id is topic + ":" + UUID. So re-publishing a message to the
// same topic, as watermill retries do, is dropped by the server inside the
// stream's duplicate window, while the same message published to several
// topics of one stream (watermill's fan-out and forwarding patterns keep
// the UUID) is stored once per topic. Metadata entries named Nats-Msg-Id
// or Watermill-Uuid are ignored; a message with an empty UUID is sent
// without either header, and is not deduplicated.
//
// NATS header values are single lines: CR and LF become spaces and
// surrounding blanks are trimmed, so only such values round-trip exactly.
//
// All messages are sent asynchronously (at most 2048 in flight) in order,
// and Publish waits for every acknowledgement, up to 30s, or until a
// message's Context is done for that message. Publishing is not atomic: the
// error joins one error per failed or unacknowledged message, each naming
// its UUID; the others are stored. Re-publishing all of them is safe.
//
// It returns [bus.ErrClosed] after Close (of p or of the bus.Publisher it
// sends through), and an error wrapping [ErrInvalidMetadata] (having
// published nothing) when a metadata key cannot be a header name.
func (p *Publisher) Publish(topic string, messages ...*message.Message) error {
	if p.closed.Load() {
		return bus.ErrClosed
	}
	msgs := make([]*nats.Msg, len(messages))
	var errs []error
	for i, wm := range messages {
		m, err := natsMsg(topic, wm)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		msgs[i] = m
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	_, failed := p.pub.PublishEach(ctx, msgs, func(i int) context.Context { return messages[i].Context() })
	for i, err := range failed {
		if err != nil {
			errs = append(errs, fmt.Errorf("watermillbus: publish message %s to %s: %w", messages[i].UUID, topic, err))
		}
	}
	return errors.Join(errs...)
}

// natsMsg converts wm into the NATS message published on topic.
func natsMsg(topic string, wm *message.Message) (*nats.Msg, error) {
	h := make(nats.Header, len(wm.Metadata)+1)
	for k, v := range wm.Metadata {
		if k == bus.HeaderMsgID || k == HeaderUUID || isDeliveryKey(k) {
			continue
		}
		if !natsheader.ValidName(k) {
			return nil, fmt.Errorf("%w: message %s: %q", ErrInvalidMetadata, wm.UUID, k)
		}
		h[k] = []string{v}
	}
	if wm.UUID != "" {
		h[HeaderUUID] = []string{wm.UUID}
		h[bus.HeaderMsgID] = []string{topic + ":" + wm.UUID}
	}
	return &nats.Msg{Subject: topic, Data: wm.Payload, Header: h}, nil
}

// Close marks p closed: later publishes return bus.ErrClosed. It closes
// neither the bus.Publisher p sends through nor the connection. It always
// returns nil.
func (p *Publisher) Close() error {
	p.closed.Store(true)
	return nil
}
