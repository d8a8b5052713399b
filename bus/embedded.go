package bus

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Defaults of [EmbeddedOptions].
const (
	DefaultListen       = "127.0.0.1:4222"
	DefaultMaxMemory    = 256 << 20 // JetStream memory storage limit
	DefaultMaxStore     = 8 << 30   // JetStream file storage limit
	defaultReadyTimeout = 10 * time.Second
)

// EmbeddedOptions configures [StartEmbedded]. The zero value is usable: it
// stores JetStream data under [DefaultDataDir] and listens on 127.0.0.1:4222.
type EmbeddedOptions struct {
	// DataDir holds the JetStream store. Zero: DefaultDataDir().
	// Only one embedded server may use a directory at a time.
	DataDir string

	// Listen is the host:port of the client listener. Zero: "127.0.0.1:4222".
	// Port 0 picks a free port (see [EmbeddedServer.ClientURL]).
	Listen string

	// DontListen opens no network listener at all: only in-process
	// connections from [EmbeddedServer.Connect] reach the server.
	DontListen bool

	// InsecureListenWithoutAuth lets Listen be an address other than a
	// loopback one ("localhost", 127.0.0.0/8, ::1). The embedded server
	// has no authentication: whoever reaches the address can read, send
	// and delete every task and dead letter. Without it, StartEmbedded
	// refuses such an address with [ErrListenNotLoopback]. To serve other
	// machines, run a nats-server that authenticates and join it instead.
	InsecureListenWithoutAuth bool

	// MaxMemory and MaxStore cap JetStream memory and file storage in bytes.
	// Zero: 256 MiB and 8 GiB (the server's own defaults are 75% of RAM
	// and disk, too much for a library to take silently).
	MaxMemory int64
	MaxStore  int64

	// ServerName names the server in logs and advisories. Zero: "jetagent".
	ServerName string

	// Logger receives the server's log lines (notices at Info, warnings at
	// Warn, errors at Error). Nil: the server logs nothing.
	Logger *slog.Logger
}

// EmbeddedServer is a nats-server running inside this process.
type EmbeddedServer struct {
	srv      *server.Server
	lock     *dirLock
	dataDir  string
	stopOnce sync.Once
	stopErr  error
}

// DefaultDataDir returns $XDG_DATA_HOME/jetagent, or ~/.local/share/jetagent
// when XDG_DATA_HOME is not set.
func DefaultDataDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "jetagent"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("bus: default data dir: %w", err)
	}
	return filepath.Join(home, ".local", "share", "jetagent"), nil
}

// StartEmbedded starts a nats-server with JetStream in this process and
// returns once it accepts connections, or when ctx ends (10s when ctx has
// no deadline). Call Shutdown on every path to release the data directory.
//
// It returns a [*DataDirLockedError] (wrapping [ErrDataDirLocked]) when
// another process serves the same data directory, an error wrapping
// [ErrListenNotLoopback] for a listen address other than loopback without
// InsecureListenWithoutAuth, and a wrapped net error when the listen
// address is taken. Once ready, the server records its process id and
// client URL in the directory's lock file, for the tools that find the
// directory in use.
func StartEmbedded(ctx context.Context, opts EmbeddedOptions) (*EmbeddedServer, error) {
	dir := opts.DataDir
	if dir == "" {
		d, err := DefaultDataDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("bus: embedded server data dir: %w", err)
	}
	sopts, err := opts.serverOptions(dir)
	if err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	unlock := lock.unlock
	if !sopts.DontListen && sopts.Port != server.RANDOM_PORT {
		// Fail fast with a clear message: nats-server itself only logs a
		// listen failure and never becomes ready.
		addr := net.JoinHostPort(sopts.Host, strconv.Itoa(sopts.Port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			unlock()
			return nil, fmt.Errorf("bus: embedded server cannot listen on %s (is another agent running? pick another address, or join it with --nats): %w", addr, err)
		}
		_ = ln.Close()
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	if opts.Logger != nil {
		srv.SetLogger(slogAdapter{opts.Logger}, false, false)
	}
	e := &EmbeddedServer{srv: srv, lock: lock, dataDir: dir}
	srv.Start() // returns at once; readiness is awaited below
	ready := defaultReadyTimeout
	if dl, ok := ctx.Deadline(); ok {
		ready = time.Until(dl)
	}
	if !srv.ReadyForConnections(ready) {
		_ = e.Shutdown(context.Background())
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("bus: embedded server not ready: %w", err)
		}
		return nil, fmt.Errorf("bus: embedded server not ready after %s", ready)
	}
	if err := lock.record(DataDirOwner{PID: os.Getpid(), URL: e.ClientURL(), Started: time.Now().UTC()}); err != nil {
		_ = e.Shutdown(context.Background())
		return nil, err
	}
	return e, nil
}

func (o EmbeddedOptions) serverOptions(dir string) (*server.Options, error) {
	name := o.ServerName
	if name == "" {
		name = "jetagent"
	}
	so := &server.Options{
		ServerName:         name,
		JetStream:          true,
		StoreDir:           dir,
		JetStreamMaxMemory: orDefault(o.MaxMemory, DefaultMaxMemory),
		JetStreamMaxStore:  orDefault(o.MaxStore, DefaultMaxStore),
		NoSigs:             true,
		NoLog:              o.Logger == nil,
		DontListen:         o.DontListen,
	}
	if o.DontListen {
		return so, nil
	}
	listen := o.Listen
	if listen == "" {
		listen = DefaultListen
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("bus: embedded server listen address %q: port must be 0..65535", listen)
	}
	if !o.InsecureListenWithoutAuth && !IsLoopback(host) {
		return nil, fmt.Errorf("%w: %q (the embedded server has no authentication)", ErrListenNotLoopback, listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	so.Host, so.Port = host, port
	return so, nil
}

// IsLoopback reports whether host (of a host:port) names a loopback
// address only: "localhost", or an IP address in 127.0.0.0/8 or ::1. An
// empty host, 0.0.0.0 and :: mean every interface, and are not.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func orDefault(v, def int64) int64 {
	if v == 0 {
		return def
	}
	return v
}

// ClientURL returns the nats:// URL other processes use to join, or "" when
// the server was started with DontListen.
func (e *EmbeddedServer) ClientURL() string {
	if e.srv.Addr() == nil {
		return ""
	}
	return e.srv.ClientURL()
}

// DataDir returns the directory holding the JetStream store.
func (e *EmbeddedServer) DataDir() string { return e.dataDir }

// Connect opens an in-process connection to the server (no TCP), with the
// same reconnect behaviour as [Connect].
func (e *EmbeddedServer) Connect(ctx context.Context, opts ...nats.Option) (*Conn, error) {
	if !e.srv.Running() {
		return nil, fmt.Errorf("bus: connect to embedded server: %w", ErrClosed)
	}
	opts = append([]nats.Option{nats.InProcessServer(e.srv)}, opts...)
	return Connect(ctx, "nats://in-process", opts...)
}

// Shutdown stops the server, waits for it to finish (up to ctx) and releases
// the data directory. It is safe to call more than once.
func (e *EmbeddedServer) Shutdown(ctx context.Context) error {
	e.stopOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			e.srv.Shutdown()
			e.srv.WaitForShutdown()
			close(done)
		}()
		select {
		case <-done:
			e.lock.unlock()
		case <-ctx.Done():
			e.stopErr = fmt.Errorf("bus: embedded server shutdown: %w", ctx.Err())
			// The lock is released when the shutdown finishes.
			go func() { <-done; e.lock.unlock() }()
		}
	})
	return e.stopErr
}

// slogAdapter routes nats-server log lines to slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Noticef(f string, v ...any) {
	a.l.Info(fmt.Sprintf(f, v...), "component", "nats-server")
}
func (a slogAdapter) Warnf(f string, v ...any) {
	a.l.Warn(fmt.Sprintf(f, v...), "component", "nats-server")
}
func (a slogAdapter) Fatalf(f string, v ...any) {
	a.l.Error(fmt.Sprintf(f, v...), "component", "nats-server")
}
func (a slogAdapter) Errorf(f string, v ...any) {
	a.l.Error(fmt.Sprintf(f, v...), "component", "nats-server")
}
func (a slogAdapter) Debugf(f string, v ...any) {
	a.l.Debug(fmt.Sprintf(f, v...), "component", "nats-server")
}
func (a slogAdapter) Tracef(f string, v ...any) {
	a.l.Debug(fmt.Sprintf(f, v...), "component", "nats-server")
}
