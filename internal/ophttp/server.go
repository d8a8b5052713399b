package ophttp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Defaults of [Config].
const (
	DefaultAddr         = "127.0.0.1:9464"
	DefaultCheckTimeout = 2 * time.Second
)

// ErrStarted is returned by Start when the server was started already,
// and ErrStopped once it was stopped. They wrap lifecycle.ErrStarted and
// lifecycle.ErrStopped.
var (
	ErrStarted = fmt.Errorf("ophttp: %w", lifecycle.ErrStarted)
	ErrStopped = fmt.Errorf("ophttp: server %w", lifecycle.ErrStopped)
)

// Check is one readiness condition: Func returns nil when ready, or an
// error saying why not. It must honour ctx.
type Check struct {
	Name string
	Func func(ctx context.Context) error
}

// Connection is ready while conn is connected to a NATS server.
func Connection(conn *bus.Conn) Check {
	return Check{Name: "nats", Func: func(context.Context) error {
		nc := conn.NATS()
		if !nc.IsConnected() {
			return fmt.Errorf("connection %s", strings.ToLower(nc.Status().String()))
		}
		return nil
	}}
}

// Runtime is ready while rt is taking tasks (see runtime.Runtime.Ready).
func Runtime(rt *runtime.Runtime) Check {
	return Check{Name: "agent " + rt.Agent(), Func: rt.Ready}
}

// Part is a long-running part of the process, as a /healthz check sees
// it (a lifecycle.Service, such as a *runtime.Runtime, is one).
type Part interface {
	Done() <-chan struct{}
	Err() error
}

// Alive is a /healthz check: it passes until p has ended on its own (its
// Done closed with a non-nil Err), and fails from then on with p's error.
// A part stopped by its Stop is not dead: the process is shutting down.
func Alive(name string, p Part) Check {
	return Check{Name: name, Func: func(context.Context) error {
		select {
		case <-p.Done():
			return p.Err()
		default:
			return nil
		}
	}}
}

// Config configures a [Server]. Every zero value means the default named
// on the field.
type Config struct {
	// Addr is the host:port to listen on; port 0 picks a free one (see
	// Server.Addr). Zero: "127.0.0.1:9464".
	Addr string

	// Gatherer is served on /metrics. Nil: no /metrics (404).
	Gatherer prometheus.Gatherer

	// Checks must all pass for /readyz to answer 200. None: ready while
	// the server runs.
	Checks []Check

	// Health checks must all pass for /healthz to answer 200 (see Alive):
	// the process is alive, its parts all running. None: alive while the
	// server runs.
	Health []Check

	// CheckTimeout bounds one /readyz request's checks. Zero: 2s.
	CheckTimeout time.Duration

	// Logger receives the server's errors. Nil: discard.
	Logger *slog.Logger
}

// Server serves /metrics, /healthz and /readyz. It runs once: Start, then
// Stop. It is a lifecycle.Service: Done is closed after Stop, or as soon
// as serving fails (the listener broke), with Err saying why.
type Server struct {
	cfg Config
	srv *http.Server
	end lifecycle.End

	mu        sync.Mutex
	ln        net.Listener
	started   bool
	stopped   bool
	served    chan struct{} // closed when the serving goroutine returns
	firstStop chan struct{} // closed when the first Stop returns
}

// New returns a server for cfg; it does not listen yet. It returns an
// error when a check has no name or no func.
func New(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	for i, c := range cfg.Checks {
		if c.Name == "" || c.Func == nil {
			return nil, fmt.Errorf("ophttp: check %d needs a name and a func", i)
		}
	}
	for i, c := range cfg.Health {
		if c.Name == "" || c.Func == nil {
			return nil, fmt.Errorf("ophttp: health check %d needs a name and a func", i)
		}
	}
	s := &Server{cfg: cfg, served: make(chan struct{}), firstStop: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelError),
	}
	return s, nil
}

// Handler returns the endpoints as a handler (what Start serves).
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		s.check(w, r, s.cfg.Health, "dead")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		s.check(w, r, s.cfg.Checks, "not ready")
	})
	if s.cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelError),
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	return mux
}

// check answers 200 "ok" when every check passes, else 503 with one line
// per failed check ("<what>: <name>: <error>").
func (s *Server) check(w http.ResponseWriter, r *http.Request, checks []Check, what string) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CheckTimeout)
	defer cancel()
	var failed strings.Builder
	for _, c := range checks {
		if err := c.Func(ctx); err != nil {
			fmt.Fprintf(&failed, "%s: %s: %v\n", what, c.Name, err)
		}
	}
	if failed.Len() > 0 {
		writeText(w, http.StatusServiceUnavailable, failed.String())
		return
	}
	writeText(w, http.StatusOK, "ok\n")
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body))
}

// Start listens on Config.Addr (ctx bounds the listen only) and serves
// from a goroutine of the server's until Stop. It returns the listen
// error (wrapped), ErrStarted or ErrStopped. When serving fails (accept
// fails for good: the listener broke), the error is logged and Done is
// closed with it.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return ErrStopped
	case s.started:
		return ErrStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("ophttp: listen %s: %w", s.cfg.Addr, err)
	}
	s.ln, s.started = ln, true
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("operations endpoint stopped", "addr", ln.Addr().String(), "err", err)
			s.end.Close(fmt.Errorf("ophttp: serving %s: %w", ln.Addr(), err))
		}
	}()
	return nil
}

// Addr returns the address listened on (nil before Start).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Stop stops the server gracefully: it stops listening, waits for
// requests in flight and for the serving goroutine to return. When ctx
// ends first it closes the remaining connections and returns ctx's error
// (wrapped). Before Start it returns nil, and the server can no longer
// start; a later Stop waits for the serving goroutine and returns nil.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	started, already := s.started, s.stopped
	s.stopped = true
	s.mu.Unlock()
	if already {
		<-s.firstStop
		return nil
	}
	defer close(s.firstStop)
	var err error
	if started {
		if err = s.srv.Shutdown(ctx); err != nil {
			_ = s.srv.Close()
			err = fmt.Errorf("ophttp: stop: %w", err)
		}
		<-s.served // Serve returns at once after Shutdown or Close
	}
	s.end.Close(nil) // a no-op when serving had failed: its error stays
	return err
}

// Done is closed once the server has stopped serving: when Stop returns,
// or when serving failed (see Err).
func (s *Server) Done() <-chan struct{} { return s.end.Done() }

// Err returns why serving failed, once Done is closed; nil while serving
// and after Stop.
func (s *Server) Err() error { return s.end.Err() }
