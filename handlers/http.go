package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// Defaults of [HTTPConfig].
const (
	DefaultMaxResponse   = 1 << 20 // bytes: the envelope size limit
	DefaultMaxRetryAfter = 5 * time.Minute
)

// Request headers the HTTP handler sets, besides Content-Type, Accept,
// Idempotency-Key and traceparent.
const (
	HeaderAgent       = "Jetagent-Agent"
	HeaderEnvelopeID  = "Jetagent-Envelope-Id"
	HeaderAttempt     = "Jetagent-Attempt"
	HeaderPayloadType = "Jetagent-Payload-Type"
	HeaderTaskID      = "Jetagent-Task-Id"
	HeaderTraceID     = "Jetagent-Trace-Id"
	HeaderDeadline    = "Jetagent-Deadline"
)

// ErrBadURL is returned by HTTP when HTTPConfig.URL is not an absolute
// http or https URL.
var ErrBadURL = errors.New("handlers: http: URL must be absolute, http:// or https://")

// HTTPConfig configures [HTTP]. URL is required; other zero values mean
// the default named on the field.
type HTTPConfig struct {
	// URL receives a POST per task. Required: http or https.
	URL string

	// Header adds request headers (e.g. a token for the local service).
	// Zero: none added.
	Header map[string]string

	// MaxResponse bounds the body of a 2xx response: a longer one fails
	// the task permanently. Zero: 1 MiB.
	MaxResponse int64

	// MaxRetryAfter caps the delay a Retry-After header may ask for.
	// Zero: 5 minutes.
	MaxRetryAfter time.Duration

	// Statuses sets the kind of failure a response status means,
	// overriding the defaults (see DefaultStatusKind): for each status
	// from 300 to 599, resilience.KindTransient (redelivered after the
	// backoff delay, or its Retry-After; counted by the subject's breaker)
	// or resilience.KindPermanent (dead-lettered at once). Zero: the
	// defaults.
	Statuses map[int]resilience.Kind

	// ResponseHeaderTimeout bounds the wait for the response's headers
	// once the request is sent: a service that accepts and never answers
	// fails the attempt as a timeout (transient) then, rather than at the
	// handler's deadline. Zero: the handler's deadline only (a service that
	// answers when its work is done, say a model call, may take minutes).
	ResponseHeaderTimeout time.Duration

	// Client sends the requests. Nil: a client shared by every HTTP
	// handler, with no proxy (the service is local), 5s to connect, idle
	// connections closed after 30s, and redirects not followed. Either
	// way each request ends at the handler's deadline.
	Client *http.Client
}

// StatusError is the error (marked transient, retry-after or permanent,
// see the package doc) of a response with a status other than 2xx. Match
// it with errors.As.
type StatusError struct {
	// URL is the handler's URL, its password (if any) redacted.
	URL string
	// Code is the HTTP status code.
	Code int
	// Body is the start of the response body, quoted.
	Body string
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("http POST %s: %d %s", e.URL, e.Code, http.StatusText(e.Code))
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

var sharedClient = &http.Client{
	Transport: &http.Transport{
		Proxy:                 nil, // the service is local: never through a proxy
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
		ExpectContinueTimeout: time.Second,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// DefaultStatusKind is the kind of failure a non-2xx status means unless
// HTTPConfig.Statuses says otherwise: transient for 401, 403 and 404 (an
// expired credential or a route not deployed yet says something about
// the service, not the task: the breaker holds tasks until it is fixed
// instead of dead-lettering every one of them in seconds), 408, 425, 429
// and 5xx; permanent for the other 4xx (the service refused this task),
// and for 1xx and 3xx, which a POST to a local service should never get
// (redirects are not followed).
func DefaultStatusKind(code int) resilience.Kind {
	switch {
	case code == http.StatusUnauthorized, code == http.StatusForbidden, code == http.StatusNotFound,
		code == http.StatusRequestTimeout, code == http.StatusTooEarly, code == http.StatusTooManyRequests, code >= 500:
		return resilience.KindTransient
	default:
		return resilience.KindPermanent
	}
}

// HTTP returns a handler that POSTs each task's envelope JSON to cfg.URL,
// with the contract of the package doc. It returns an error wrapping
// ErrBadURL when cfg.URL is not an absolute http or https URL, and an
// error naming the entry when cfg.Statuses has a status outside 300..599
// or a kind other than transient or permanent.
func HTTP(cfg HTTPConfig) (runtime.Handler, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("%w: got %q", ErrBadURL, cfg.URL)
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = DefaultMaxResponse
	}
	if cfg.MaxRetryAfter <= 0 {
		cfg.MaxRetryAfter = DefaultMaxRetryAfter
	}
	for code, kind := range cfg.Statuses {
		if code < 300 || code > 599 {
			return nil, fmt.Errorf("handlers: http: Statuses: %d is not a failure status (300..599)", code)
		}
		if kind != resilience.KindTransient && kind != resilience.KindPermanent {
			return nil, fmt.Errorf("handlers: http: Statuses[%d]: %s, want transient or permanent", code, kind)
		}
	}
	if cfg.ResponseHeaderTimeout < 0 {
		return nil, fmt.Errorf("handlers: http: negative ResponseHeaderTimeout %v", cfg.ResponseHeaderTimeout)
	}
	if cfg.Client == nil {
		cfg.Client = sharedClient
	}
	h := &httpHandler{cfg: cfg, header: make(http.Header, len(cfg.Header)), shown: u.Redacted()}
	for k, v := range cfg.Header {
		h.header.Set(k, v)
	}
	return h.handle, nil
}

type httpHandler struct {
	cfg    HTTPConfig
	header http.Header
	shown  string // the URL without its password, for errors
}

// errorBodyLen bounds what is read of a non-2xx body (quoted in the
// error, the rest drained so the connection can be reused).
const errorBodyLen = 64 << 10

func (h *httpHandler) handle(ctx context.Context, t *runtime.Task) (any, error) {
	what := "http POST " + h.shown
	body, err := t.Envelope.MarshalJSON()
	if err != nil {
		return nil, resilience.Permanent(fmt.Errorf("%s: envelope has no JSON form: %w", what, err))
	}
	rctx, release := h.headerDeadline(ctx)
	defer release()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, h.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, resilience.Permanent(fmt.Errorf("%s: %w", what, err))
	}
	h.setHeaders(ctx, req, t)
	// A header value the task carries that HTTP cannot send is the task's
	// fault (bad input), never the service's: refuse it before sending,
	// permanently, rather than as a connection error the breaker counts.
	for name, vs := range req.Header {
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				return nil, resilience.Permanent(fmt.Errorf("%s: header %s: %.80q cannot be sent (control characters)", what, name, v))
			}
		}
	}

	resp, err := h.cfg.Client.Do(req)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, deadlineError(ctx, what)
		case errors.Is(context.Cause(rctx), errNoResponseHeaders):
			return nil, fmt.Errorf("%s: %w: no response headers within %v", what, resilience.ErrTimeout, h.cfg.ResponseHeaderTimeout)
		}
		return nil, fmt.Errorf("%s: %w: %w", what, resilience.ErrConnection, err)
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 200 && resp.StatusCode <= 299 {
		if resp.ContentLength > h.cfg.MaxResponse {
			return nil, resilience.Permanent(fmt.Errorf("%s: %w: Content-Length %d exceeds %d bytes", what, ErrAnswerTooLarge, resp.ContentLength, h.cfg.MaxResponse))
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, h.cfg.MaxResponse+1))
		if err != nil {
			if ctx.Err() != nil {
				return nil, deadlineError(ctx, what+": reading the body")
			}
			return nil, fmt.Errorf("%s: reading the body: %w: %w", what, resilience.ErrConnection, err)
		}
		if int64(len(b)) > h.cfg.MaxResponse {
			return nil, resilience.Permanent(fmt.Errorf("%s: %w: body exceeds %d bytes", what, ErrAnswerTooLarge, h.cfg.MaxResponse))
		}
		return answerPayload(b, what+": body")
	}

	b, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLen))
	serr := &StatusError{URL: h.shown, Code: resp.StatusCode}
	if text := bytes.TrimSpace(b); len(text) > 0 {
		serr.Body = snippet(text)
	}
	if h.kindOf(resp.StatusCode) == resilience.KindPermanent {
		return nil, resilience.Permanent(serr)
	}
	if d, ok := retryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
		return nil, resilience.RetryAfter(min(d, h.cfg.MaxRetryAfter), serr)
	}
	return nil, resilience.Transient(serr)
}

// kindOf is the kind of failure status code means for this handler.
func (h *httpHandler) kindOf(code int) resilience.Kind {
	if k, ok := h.cfg.Statuses[code]; ok {
		return k
	}
	return DefaultStatusKind(code)
}

// errNoResponseHeaders is the cancellation cause of a request whose
// response headers did not come within ResponseHeaderTimeout.
var errNoResponseHeaders = errors.New("no response headers in time")

// headerDeadline returns the request's context: ctx, cancelled with
// errNoResponseHeaders when ResponseHeaderTimeout passes after the request
// was written and before the response's first byte. release frees it once
// the response is done with. It works with any HTTPConfig.Client.
func (h *httpHandler) headerDeadline(ctx context.Context) (rctx context.Context, release func()) {
	if h.cfg.ResponseHeaderTimeout <= 0 {
		return ctx, func() {}
	}
	rctx, cancel := context.WithCancelCause(ctx)
	var mu sync.Mutex
	var timer *time.Timer
	done := false
	stopTimer := func() {
		mu.Lock()
		defer mu.Unlock()
		done = true
		if timer != nil {
			timer.Stop()
		}
	}
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{
		WroteRequest: func(httptrace.WroteRequestInfo) {
			mu.Lock()
			defer mu.Unlock()
			if !done && timer == nil {
				timer = time.AfterFunc(h.cfg.ResponseHeaderTimeout, func() { cancel(errNoResponseHeaders) })
			}
		},
		GotFirstResponseByte: stopTimer,
	})
	return rctx, func() {
		stopTimer()
		cancel(nil)
	}
}

func (h *httpHandler) setHeaders(ctx context.Context, req *http.Request, t *runtime.Task) {
	env := t.Envelope
	hd := req.Header
	for k, v := range h.header {
		hd[k] = v
	}
	hd.Set("Content-Type", "application/json")
	hd.Set("Accept", "application/json")
	hd.Set("User-Agent", "jetagent")
	hd.Set(HeaderAgent, env.Recipient)
	hd.Set(HeaderEnvelopeID, env.ID)
	hd.Set(HeaderAttempt, strconv.Itoa(t.Attempt))
	hd.Set(HeaderPayloadType, string(env.PayloadType))
	if env.TaskID != "" {
		hd.Set(HeaderTaskID, env.TaskID)
	}
	if env.TraceID != "" {
		hd.Set(HeaderTraceID, env.TraceID)
	}
	if dl, ok := ctx.Deadline(); ok {
		hd.Set(HeaderDeadline, dl.UTC().Format(time.RFC3339Nano))
	}
	key := env.IdempotencyKey
	if key == "" {
		key = env.ID
	}
	hd.Set("Idempotency-Key", key)
	if tp := traceParent(ctx, t); tp != "" {
		hd.Set("traceparent", tp)
	}
}

// retryAfter parses a Retry-After value: delay-seconds or an HTTP date
// (a date in the past is a zero delay). ok is false when v is empty or
// neither.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second) // avoid overflow; capped later anyway
		}
		return time.Duration(secs) * time.Second, true
	}
	at, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(at.Sub(now), 0), true
}
