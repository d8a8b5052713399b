package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/snapshot"
)

// DefaultAddr is where the console listens unless told otherwise.
const DefaultAddr = "127.0.0.1:8090"

// Config configures a console. Conn is required; every other zero value
// means the default named on the field.
type Config struct {
	// Conn is the NATS connection the console reads and acts through.
	// Its user needs the permissions of docs/security.md's operator role.
	Conn *bus.Conn
	// Topology names the streams and buckets. Zero: the default topology.
	Topology bus.Topology
	// Addr is the host:port to listen on; port 0 picks a free one (see
	// Server.Addr). Zero: DefaultAddr. An address off loopback needs Auth.
	Addr string
	// Auth says who may use the console. Zero: no authentication, which
	// New allows on loopback only.
	Auth Auth
	// AuditFile, when set, receives every audit record as a JSON line
	// (appended; created with mode 0600).
	AuditFile string
	// SampleInterval is how often the console reads the agents' consumers
	// for the throughput chart. Zero: 5s.
	SampleInterval time.Duration
	// LiveInterval is how often it looks for new dead letters for the
	// live page. Zero: 1s.
	LiveInterval time.Duration
	// Logger receives the console's errors and audit lines. Nil: discard.
	Logger *slog.Logger
}

// ErrStarted is returned by Start when the console was started already,
// and ErrStopped once it was stopped: a Server runs once.
var (
	ErrStarted = fmt.Errorf("console: %w", lifecycle.ErrStarted)
	ErrStopped = fmt.Errorf("console: %w", lifecycle.ErrStopped)
)

// Server is the web console. It runs once: Start, then Stop. It is a
// lifecycle.Service: Done is closed after Stop, or as soon as serving
// fails (the listener broke), with Err saying why.
type Server struct {
	cfg      Config
	store    *dlq.Store
	hub      *hub
	audit    *auditLog
	jobs     jobs
	rates    *rateKeeper
	statuses *statusStore
	pages    *pages
	log      *slog.Logger

	snapMu sync.Mutex
	snaps  *snapshot.KV

	http     *http.Server
	mu       sync.Mutex // guards ln, started
	ln       net.Listener
	started  bool
	end      lifecycle.End
	stopping chan struct{}
	jobCtx   context.Context
	stopJobs context.CancelFunc
	bg       sync.WaitGroup
	stopOnce sync.Once
}

// New checks cfg and returns a console, not yet listening. It returns
// ErrNoAuth for an address off loopback without authentication.
func New(cfg Config) (*Server, error) {
	if cfg.Conn == nil {
		return nil, errors.New("console: no NATS connection")
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = DefaultAddr
	}
	if cfg.SampleInterval <= 0 {
		cfg.SampleInterval = 5 * time.Second
	}
	if cfg.LiveInterval <= 0 {
		cfg.LiveInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	audit, err := newAuditLog(cfg.AuditFile, cfg.Logger)
	if err != nil {
		return nil, err
	}
	pg, err := loadPages()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg: cfg, store: dlq.NewStore(cfg.Conn.JetStream(), cfg.Topology), hub: newHub(), audit: audit,
		rates: newRateKeeper(60), statuses: newStatusStore(), pages: pg, log: cfg.Logger,
		stopping: make(chan struct{}), jobCtx: ctx, stopJobs: cancel,
	}
	s.http = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Check reports what New would refuse in cfg, the connection aside: a
// malformed listen address, ErrNoAuth, a bad topology.
func (cfg Config) Check() error {
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("console: listen address %q: %w", addr, err)
	}
	if !cfg.Auth.Enabled() && !isLoopback(addr) {
		return fmt.Errorf("%w: refusing to listen on %s", ErrNoAuth, addr)
	}
	if err := cfg.Topology.Validate(); err != nil {
		return fmt.Errorf("console: %w", err)
	}
	return nil
}

// Start listens and serves in the background, and starts watching the
// server for the live page and the chart. It returns the listen error
// (wrapped), ErrStarted or ErrStopped. When serving fails for good, the
// error is logged and Done is closed with it.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stopping:
		return ErrStopped
	default:
	}
	if s.started {
		return ErrStarted
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("console: listen: %w", err)
	}
	s.ln, s.started = ln, true
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("console: serve", "err", err)
			s.end.Close(fmt.Errorf("console: serving %s: %w", ln.Addr(), err))
		}
	}()
	s.startWatchers()
	return nil
}

// Addr returns the address the console listens on (after Start).
func (s *Server) Addr() net.Addr { return s.listener().Addr() }

// URL returns the console's base URL (after Start).
func (s *Server) URL() string { return "http://" + s.listener().Addr().String() }

func (s *Server) listener() net.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ln
}

// Stop stops serving, ends the live streams, cancels running jobs after
// their current chunk (waiting up to ctx for them) and closes the audit
// file. Before Start it returns nil, and the console can no longer start;
// a later Stop waits for the first to return and returns nil.
func (s *Server) Stop(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.mu.Lock()
		close(s.stopping) // under mu: Start sees it
		ln := s.ln
		s.mu.Unlock()
		s.hub.close()
		for _, j := range s.jobs.list() {
			if jj := s.jobs.get(j.ID); jj != nil {
				jj.requestCancel()
			}
		}
		done := make(chan struct{})
		go func() { s.jobs.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.stopJobs() // interrupt the chunk in hand
			<-done
		}
		s.stopJobs()
		if ln != nil {
			err = s.http.Shutdown(ctx)
		}
		s.bg.Wait()
		if cerr := s.audit.close(); err == nil {
			err = cerr
		}
		s.end.Close(nil) // a no-op when serving had failed: its error stays
	})
	return err
}

// Done is closed once the console has stopped serving: when Stop returns,
// or when serving failed (see Err).
func (s *Server) Done() <-chan struct{} { return s.end.Done() }

// Err returns why serving failed, once Done is closed; nil while serving
// and after Stop.
func (s *Server) Err() error { return s.end.Err() }

// Handler returns the console's HTTP handler (Start serves it), with
// authentication, CSRF protection and security headers.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	get := func(pattern string, h func(http.ResponseWriter, *http.Request, User)) {
		mux.Handle("GET "+pattern, s.authed(h))
	}
	act := func(pattern, action string, h func(http.ResponseWriter, *http.Request, User)) {
		mux.Handle("POST "+pattern, s.authed(s.action(action, h)))
	}
	get("/{$}", s.overviewPage)
	get("/agents", s.agentsPage)
	get("/agents/{name}", s.agentPage)
	get("/dlq", s.dlqPage)
	get("/dlq/{seq}", s.entryPage)
	get("/dlq/replay", s.replayPreview)
	act("/dlq/replay", "replay", s.replayStart)
	get("/dlq/purge", s.purgePreview)
	act("/dlq/purge", "purge", s.purgeStart)
	get("/jobs", s.jobsPage)
	get("/jobs/{id}", s.jobPage)
	act("/jobs/{id}/cancel", "cancel_job", s.jobCancel)
	get("/tasks", s.tasksPage)
	get("/tasks/{agent}/{id}", s.taskPage)
	act("/tasks/{agent}/{id}/cancel", "cancel_task", s.taskCancel)
	get("/live", s.livePage)
	get("/events", func(w http.ResponseWriter, r *http.Request, _ User) { s.serveEvents(w, r) })
	get("/audit", s.auditPage)
	mux.Handle("GET /static/", s.authed(func(w http.ResponseWriter, r *http.Request, _ User) {
		w.Header().Set("Cache-Control", "max-age=300")
		http.FileServerFS(staticFS).ServeHTTP(w, r)
	}))
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "403 forbidden: cross-origin request refused", http.StatusForbidden)
	}))
	return s.headers(cop.Handler(mux))
}

// headers sets the security headers on every answer and, without
// authentication, refuses requests for another host name than loopback's
// (a DNS-rebinding page).
func (s *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		if !s.cfg.Auth.Enabled() && !loopbackHost(r.Host) {
			http.Error(w, "403 forbidden: this console has no authentication and answers to localhost only", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authed authenticates the request (401 with a basic-auth challenge when
// it fails) and passes its user on.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, User)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, ok := s.cfg.Auth.authenticate(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="jetagent console", charset="UTF-8"`)
			http.Error(w, "401 unauthorized", http.StatusUnauthorized)
			return
		}
		h(w, r, u)
	})
}

// action guards a POST: a viewer gets 403 (and an audit record), as does
// a request without the page's CSRF token.
func (s *Server) action(name string, h func(http.ResponseWriter, *http.Request, User)) func(http.ResponseWriter, *http.Request, User) {
	return func(w http.ResponseWriter, r *http.Request, u User) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		if !u.CanAct() {
			s.audit.add(AuditRecord{User: u.Name, Role: u.Role, Remote: r.RemoteAddr, Action: name, Target: r.URL.Path, Outcome: "refused: read-only role"})
			s.renderError(w, r, u, http.StatusForbidden, "Your role ("+string(u.Role)+") can see everything and change nothing.")
			return
		}
		if !s.checkCSRF(r) {
			s.renderError(w, r, u, http.StatusForbidden, "The form's CSRF token is missing or stale: reload the page and try again.")
			return
		}
		h(w, r, u)
	}
}

const csrfCookie = "jetagent_console_csrf"

// csrfToken returns the request's CSRF token, setting a new one in a
// cookie when it has none (double-submit: a form must send back the
// cookie's value, which another site can neither read nor set).
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	return tok
}

func (s *Server) checkCSRF(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) < 32 {
		return false
	}
	form := r.PostFormValue("csrf")
	if form == "" {
		form = r.Header.Get("X-CSRF-Token")
	}
	return subtle.ConstantTimeCompare([]byte(form), []byte(c.Value)) == 1
}
