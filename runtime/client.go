package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
)

// Client errors callers branch on.
var (
	// ErrClientClosed is returned by Send after Close.
	ErrClientClosed = errors.New("runtime: client closed")
)

// ClientConfig configures a [Client]. The zero value is usable.
type ClientConfig struct {
	// Name is the sender name on envelopes built by the client and the
	// client's reply subject token. Zero: "client-<ulid>".
	Name string

	// Topology must match the agents'. Zero: the default topology.
	Topology bus.Topology

	// Logger receives the client's logs. Nil: discard.
	Logger *slog.Logger
}

// ClientStats counts replies the client received.
type ClientStats struct {
	// Replies counts replies matched to a waiting Send.
	Replies uint64
	// Unmatched counts replies dropped because no Send waited for their
	// correlation id (late replies after a timeout, duplicates, strays).
	Unmatched uint64
	// Undecodable counts reply messages that were not valid envelopes.
	Undecodable uint64
}

// Client sends envelopes to agents over the tasks stream and waits for the
// correlated reply. It is safe for concurrent use; replies arrive on one
// subscription and are matched by correlation id.
type Client struct {
	conn    *bus.Conn
	pub     *bus.Publisher
	topo    bus.Topology
	name    string
	replyTo string
	log     *slog.Logger
	sub     *nats.Subscription

	mu      sync.Mutex
	waiting map[string]chan *envelope.Envelope
	closed  bool
	done    chan struct{} // closed by Close

	replies, unmatched, undecodable atomic.Uint64
}

// NewClient subscribes to the client's reply subject and returns the
// client. It returns a wrapped error when the name is invalid or the
// subscription fails.
func NewClient(conn *bus.Conn, cfg ClientConfig) (*Client, error) {
	name := cfg.Name
	if name == "" {
		name = "client-" + strings.ToLower(envelope.NewID())
	}
	if err := bus.ValidateName(name); err != nil {
		return nil, fmt.Errorf("runtime: client name: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		conn:    conn,
		pub:     bus.NewPublisher(conn.JetStream()),
		topo:    cfg.Topology,
		name:    name,
		replyTo: cfg.Topology.ReplySubject(name),
		log:     log,
		waiting: make(map[string]chan *envelope.Envelope),
		done:    make(chan struct{}),
	}
	sub, err := conn.NATS().Subscribe(c.replyTo, c.onReply)
	if err != nil {
		return nil, fmt.Errorf("runtime: client subscribe %s: %w", c.replyTo, err)
	}
	c.sub = sub
	return c, nil
}

// Name returns the client's name (the sender of envelopes it builds).
func (c *Client) Name() string { return c.name }

// ReplyTo returns the subject the client's replies arrive on.
func (c *Client) ReplyTo() string { return c.replyTo }

func (c *Client) onReply(m *nats.Msg) {
	var env envelope.Envelope
	if err := envelope.Unmarshal(m.Data, &env); err != nil {
		c.undecodable.Add(1)
		c.log.Warn("undecodable reply dropped", "subject", m.Subject, "err", err)
		return
	}
	c.mu.Lock()
	ch := c.waiting[env.CorrelationID]
	delete(c.waiting, env.CorrelationID)
	c.mu.Unlock()
	if ch == nil {
		c.unmatched.Add(1)
		c.log.Debug("reply without a waiting request dropped", "correlation_id", env.CorrelationID)
		return
	}
	c.replies.Add(1)
	ch <- &env // buffered: never blocks
}

// Send publishes env to its recipient's tasks subject
// ("<prefix>.tasks.<recipient>.<payload_type>") with reply_to set to the
// client's reply subject, and waits until the reply whose correlation id is
// env.ID arrives or ctx ends. A reply with any other correlation id is never
// returned. env.ReplyTo is overwritten.
//
// Errors: ErrClientClosed; the publish error (wrapped, e.g. when no server
// or no stream answers); ctx's error when no reply came in time.
func (c *Client) Send(ctx context.Context, env *envelope.Envelope) (*envelope.Envelope, error) {
	if err := bus.ValidateName(env.Recipient); err != nil {
		return nil, fmt.Errorf("runtime: send: recipient: %w", err)
	}
	if !env.PayloadType.Valid() {
		return nil, fmt.Errorf("runtime: send: %w: payload type %q", envelope.ErrInvalidField, env.PayloadType)
	}
	env.ReplyTo = c.replyTo
	ch := make(chan *envelope.Envelope, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClientClosed
	}
	c.waiting[env.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiting, env.ID)
		c.mu.Unlock()
	}()

	subject := c.topo.TaskSubject(env.Recipient, env.PayloadType)
	if _, err := c.pub.PublishEnvelope(ctx, subject, env); err != nil {
		return nil, fmt.Errorf("runtime: send %s: %w", env.ID, err)
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-c.done:
		return nil, fmt.Errorf("runtime: send %s: %w", env.ID, ErrClientClosed)
	case <-ctx.Done():
		return nil, fmt.Errorf("runtime: send %s: no reply: %w", env.ID, ctx.Err())
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() ClientStats {
	return ClientStats{Replies: c.replies.Load(), Unmatched: c.unmatched.Load(), Undecodable: c.undecodable.Load()}
}

// Close unsubscribes and ends Sends still waiting for a reply with
// ErrClientClosed. It does not close the connection. Safe to call more
// than once.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	if err := c.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("runtime: client close: %w", err)
	}
	return nil
}
