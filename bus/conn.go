package bus

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultURL is where an agent started without --nats listens, and where
// tools look for it.
const DefaultURL = "nats://127.0.0.1:4222"

// defaultConnectTimeout bounds the initial connect when ctx has no deadline.
const defaultConnectTimeout = 5 * time.Second

// asyncAckTimeout bounds how long an async publish waits for its
// acknowledgement. nats.go keeps a future whose acknowledgement was lost
// (a network blip, a reconnect) open for ever unless told otherwise, and
// whoever waits on it without a deadline waits for ever; with this bound
// it fails with jetstream.ErrAsyncPublishTimeout. The message may have
// been stored all the same: such a failure is in doubt, not a refusal.
const asyncAckTimeout = 15 * time.Second

// maxAsyncPending bounds the number of unacknowledged async publishes a
// connection keeps in flight; PublishMsgAsync blocks (up to ctx) beyond it.
const maxAsyncPending = 4096

// Conn is a NATS connection with its JetStream context.
// It is safe for concurrent use.
type Conn struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	closeOnce sync.Once
}

// Connect joins the NATS server at url. It reconnects forever after the
// first successful connect (the caller decides when to give up through
// ctx on each operation); the initial connect is bounded by ctx, or by 5s
// when ctx has no deadline. Extra nats options (credentials, TLS, name)
// are applied after jetstream's defaults.
//
// It returns an error wrapping the nats error (nats.ErrNoServers when no
// server answers) when the first connect fails. Errors show the URL
// without its credentials (see RedactURL).
func Connect(ctx context.Context, url string, opts ...nats.Option) (*Conn, error) {
	if url == "" {
		return nil, errors.New("bus: connect: empty URL")
	}
	timeout := defaultConnectTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, fmt.Errorf("bus: connect %s: %w", RedactURL(url), ctx.Err())
		}
	}
	base := []nats.Option{
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectBufSize(8 << 20),
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("bus: connect %s: %w", RedactURL(url), err)
	}
	return newConn(nc)
}

// RedactURL returns a NATS URL (or comma-separated list of URLs) fit for
// logs and errors: credentials embedded in it are replaced by "xxxxx"
// ("nats://alice:xxxxx@host" for a user and password, "nats://xxxxx@host"
// for a token, which NATS takes from the user part).
func RedactURL(rawURL string) string {
	parts := strings.Split(rawURL, ",")
	for i, p := range parts {
		at := strings.LastIndexByte(p, '@')
		if at < 0 {
			continue
		}
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.User == nil {
			// Unparsable: drop everything before the host.
			scheme, _, ok := strings.Cut(p, "://")
			if !ok {
				scheme = ""
			} else {
				scheme += "://"
			}
			parts[i] = scheme + "xxxxx" + p[at:]
			continue
		}
		if _, hasPassword := u.User.Password(); hasPassword {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		} else {
			u.User = url.User("xxxxx")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

func newConn(nc *nats.Conn) (*Conn, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxAsyncPending), jetstream.WithPublishAsyncTimeout(asyncAckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	return &Conn{nc: nc, js: js}, nil
}

// NATS returns the underlying core NATS connection.
func (c *Conn) NATS() *nats.Conn { return c.nc }

// JetStream returns the JetStream context of the connection.
func (c *Conn) JetStream() jetstream.JetStream { return c.js }

// Drain flushes pending publishes and acknowledgements, unsubscribes and
// closes the connection, waiting until done or ctx ends. It is safe to call
// more than once and after Close.
func (c *Conn) Drain(ctx context.Context) error {
	closed := c.nc.StatusChanged(nats.CLOSED)
	defer c.nc.RemoveStatusListener(closed)
	if c.nc.IsClosed() {
		return nil
	}
	if err := c.nc.Drain(); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) {
			return nil
		}
		return fmt.Errorf("bus: drain: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-ctx.Done():
		c.Close()
		return fmt.Errorf("bus: drain: %w", ctx.Err())
	}
}

// Close closes the connection at once. Unflushed publishes are lost; use
// Drain for a graceful close. Safe to call more than once.
func (c *Conn) Close() {
	c.closeOnce.Do(c.nc.Close)
}
