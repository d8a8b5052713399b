package bus

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of [ConsumerConfig].
const (
	DefaultAckWait       = 30 * time.Second
	DefaultMaxDeliver    = 10
	DefaultMaxAckPending = 1000
	DefaultPrefetch      = 256
	DefaultPullExpiry    = 5 * time.Second
)

// UnlimitedDeliveries, as [ConsumerConfig.MaxDeliver], asks the server never
// to stop redelivering a message (its MaxDeliver -1): whoever consumes it
// counts the attempts itself, as package runtime does.
const UnlimitedDeliveries = -1

// ConsumerConfig configures a durable pull consumer. Durable and
// FilterSubjects are required; every other zero value means the default
// named on the field.
type ConsumerConfig struct {
	// Durable is the consumer's name; replicas of one agent share it and
	// so share the work. Required.
	Durable string

	// FilterSubjects selects the subjects consumed. Required.
	FilterSubjects []string

	// Description is shown by the NATS tooling.
	Description string

	// AckWait is how long the server waits for a settlement (or an
	// InProgress heartbeat) before redelivering. Zero: 30s.
	AckWait time.Duration

	// MaxDeliver is the number of deliveries after which the server stops
	// redelivering and emits a MAX_DELIVERIES advisory, or
	// [UnlimitedDeliveries]. Zero: 10.
	MaxDeliver int

	// BackOff is the redelivery schedule after ack timeouts (not after
	// naks). It replaces AckWait with its first step; it may not have
	// more steps than MaxDeliver. Nil: redeliver after AckWait each time.
	BackOff []time.Duration

	// MaxAckPending bounds deliveries outstanding (unsettled) across all
	// subscribers of the consumer. It must be at least Prefetch. Zero: 1000.
	MaxAckPending int

	// Prefetch is the most messages a subscriber asks the server for in
	// one pull request. Zero: 256.
	Prefetch int

	// Window bounds what one subscriber holds at once: the deliveries it
	// handed to its callback that are not settled yet (or released), plus
	// the messages it asked the server for and has not received. It is
	// how much of a backlog one replica can take before others get any,
	// and all a replica can hold when its callback stops settling. Zero:
	// Prefetch. (package runtime sets it to its Concurrency plus Prefetch.)
	Window int

	// PullExpiry is the lifetime of one pull request; the server sends
	// idle heartbeats every half of it while the request waits, and a
	// subscriber that misses two asks again. Zero: 5s.
	PullExpiry time.Duration
}

// WithDefaults returns c with each zero field set to the default named on
// it.
func (c ConsumerConfig) WithDefaults() ConsumerConfig {
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.Window == 0 {
		c.Window = c.Prefetch
	}
	if c.MaxAckPending == 0 {
		c.MaxAckPending = max(DefaultMaxAckPending, c.Prefetch)
	}
	if c.PullExpiry == 0 {
		c.PullExpiry = DefaultPullExpiry
	}
	return c
}

// Validate reports settings of c (after [ConsumerConfig.WithDefaults]) the
// server would reject or that break the subscribers' assumptions, before
// anything is sent: the error wraps [ErrInvalidName] for a bad Durable.
func (c ConsumerConfig) Validate() error {
	if err := ValidateName(c.Durable); err != nil {
		return fmt.Errorf("consumer durable name: %w", err)
	}
	if len(c.FilterSubjects) == 0 {
		return errors.New("bus: consumer: at least one filter subject is required")
	}
	switch {
	case c.AckWait < time.Second:
		return fmt.Errorf("bus: consumer %s: AckWait %v is below 1s", c.Durable, c.AckWait)
	case c.MaxDeliver < 1 && c.MaxDeliver != UnlimitedDeliveries:
		return fmt.Errorf("bus: consumer %s: MaxDeliver must be at least 1, got %d", c.Durable, c.MaxDeliver)
	case c.MaxDeliver > 0 && len(c.BackOff) > c.MaxDeliver:
		return fmt.Errorf("bus: consumer %s: BackOff has %d steps, more than MaxDeliver %d", c.Durable, len(c.BackOff), c.MaxDeliver)
	case c.Prefetch < 1:
		return fmt.Errorf("bus: consumer %s: Prefetch must be at least 1, got %d", c.Durable, c.Prefetch)
	case c.Window < 1:
		return fmt.Errorf("bus: consumer %s: Window must be at least 1, got %d", c.Durable, c.Window)
	case c.MaxAckPending < c.Prefetch:
		return fmt.Errorf("bus: consumer %s: MaxAckPending %d is below Prefetch %d (buffered messages count as pending)", c.Durable, c.MaxAckPending, c.Prefetch)
	case c.PullExpiry < time.Second:
		return fmt.Errorf("bus: consumer %s: PullExpiry %v is below 1s", c.Durable, c.PullExpiry)
	}
	for i, d := range c.BackOff {
		if d <= 0 {
			return fmt.Errorf("bus: consumer %s: BackOff step %d is %v, must be positive", c.Durable, i, d)
		}
	}
	return nil
}

// JetStreamConfig returns the server's configuration of the consumer c
// describes: explicit acks, delivery from the stream's first message.
// Prefetch, Window and PullExpiry are the subscriber's, not the server's.
func (c ConsumerConfig) JetStreamConfig() jetstream.ConsumerConfig {
	cc := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		Description:   c.Description,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		BackOff:       c.BackOff,
		MaxAckPending: c.MaxAckPending,
	}
	if len(c.FilterSubjects) == 1 {
		cc.FilterSubject = c.FilterSubjects[0]
	} else {
		cc.FilterSubjects = c.FilterSubjects
	}
	return cc
}

// AckTimeout returns how long the server waits for a settlement or a
// heartbeat of a delivery made delivered times before redelivering it:
// BackOff's step for that delivery (its last step beyond), else AckWait.
func (c ConsumerConfig) AckTimeout(delivered uint64) time.Duration {
	if len(c.BackOff) == 0 {
		return c.AckWait
	}
	i := min(max(delivered, 1)-1, uint64(len(c.BackOff)-1))
	return c.BackOff[i]
}

// ackTimeouts are the ack timeouts the server applies: AckWait and
// BackOff as the consumer on the server has them.
type ackTimeouts struct {
	ackWait time.Duration
	backOff []time.Duration
}

func (a ackTimeouts) of(delivered uint64) time.Duration {
	return ConsumerConfig{AckWait: a.ackWait, BackOff: a.backOff}.AckTimeout(delivered)
}

// consumerDiff lists, as "name local->server" items, the settings of the
// consumer on the server that differ from c's: the ones replicas compute
// their heartbeats and their attempt counting from. Empty: they agree.
func (c ConsumerConfig) consumerDiff(server jetstream.ConsumerConfig) string {
	var diffs []string
	if server.AckWait != c.AckWait {
		diffs = append(diffs, fmt.Sprintf("ack_wait %v->%v", c.AckWait, server.AckWait))
	}
	if !slices.Equal(server.BackOff, c.BackOff) {
		diffs = append(diffs, fmt.Sprintf("backoff %v->%v", c.BackOff, server.BackOff))
	}
	if server.MaxDeliver != c.MaxDeliver {
		diffs = append(diffs, fmt.Sprintf("max_deliver %d->%d", c.MaxDeliver, server.MaxDeliver))
	}
	if server.MaxAckPending != c.MaxAckPending {
		diffs = append(diffs, fmt.Sprintf("max_ack_pending %d->%d", c.MaxAckPending, server.MaxAckPending))
	}
	return strings.Join(diffs, ", ")
}
