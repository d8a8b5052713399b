// Package logsample keeps a flood of identical warnings from flooding the
// log: a slog.Handler that passes the first few records of a kind in each
// window and counts the rest, then says how many it held back.
package logsample

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultBurst  = 5
	DefaultWindow = 10 * time.Second
)

// Options configure New. The zero value samples with the defaults.
type Options struct {
	// Burst is how many records of one kind pass per window. Zero: 5.
	Burst int
	// Window is the sampling period. Zero: 10s.
	Window time.Duration
	// MinLevel is the lowest level sampled; records below it always pass.
	// Zero: slog.LevelInfo (debug records are never sampled).
	MinLevel slog.Level
	// Suppressed, when set, is called for each record held back (e.g. to
	// count it in a metric).
	Suppressed func(level slog.Level)
	// Now is the clock (tests). Nil: time.Now.
	Now func() time.Time
}

// kind is what makes records alike: level, message and agent.
type kind struct {
	level slog.Level
	msg   string
	agent string
}

type counter struct {
	start      time.Time
	passed     int
	suppressed int
	out        slog.Handler // the handler of the kind's first record, for its summary
}

type state struct {
	mu    sync.Mutex
	opts  Options
	kinds map[kind]*counter
}

// Handler is a sampling slog.Handler. Records of one kind (the same level,
// message and "agent" attribute) beyond Burst in a Window are not written
// but counted; the next record of that kind in a later window is preceded
// by one record "log lines suppressed" naming the message and the count.
// Flush writes the counts still due (call it before exiting).
type Handler struct {
	next  slog.Handler
	agent string
	st    *state
}

// New returns a Handler writing to next. Records below opts.MinLevel pass
// unsampled; the zero MinLevel samples Info and above.
func New(next slog.Handler, opts Options) *Handler {
	if opts.Burst <= 0 {
		opts.Burst = DefaultBurst
	}
	if opts.Window <= 0 {
		opts.Window = DefaultWindow
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Handler{next: next, st: &state{opts: opts, kinds: map[kind]*counter{}}}
}

// Enabled reports whether next handles level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle writes r, or counts it when its kind has had its burst.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	st := h.st
	if r.Level < st.opts.MinLevel {
		return h.next.Handle(ctx, r)
	}
	k := kind{level: r.Level, msg: r.Message, agent: h.agent}
	if k.agent == "" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "agent" {
				k.agent = a.Value.String()
				return false
			}
			return true
		})
	}
	now := st.opts.Now()
	st.mu.Lock()
	c := st.kinds[k]
	var summary *slog.Record
	var summaryOut slog.Handler
	switch {
	case c == nil:
		c = &counter{start: now, out: h.next}
		st.kinds[k] = c
	case now.Sub(c.start) >= st.opts.Window:
		if c.suppressed > 0 {
			s := summaryRecord(k, c, now)
			summary, summaryOut = &s, c.out
		}
		c.start, c.passed, c.suppressed = now, 0, 0
	}
	pass := c.passed < st.opts.Burst
	if pass {
		c.passed++
	} else {
		c.suppressed++
	}
	st.mu.Unlock()
	if summary != nil {
		_ = summaryOut.Handle(ctx, *summary)
	}
	if !pass {
		if st.opts.Suppressed != nil {
			st.opts.Suppressed(r.Level)
		}
		return nil
	}
	return h.next.Handle(ctx, r)
}

func summaryRecord(k kind, c *counter, now time.Time) slog.Record {
	r := slog.NewRecord(now, k.level, "log lines suppressed", 0)
	r.AddAttrs(slog.String("like", k.msg), slog.Int("suppressed", c.suppressed),
		slog.Duration("within", now.Sub(c.start).Round(time.Second)))
	return r
}

// Flush writes one summary for each kind that has records held back and
// not yet reported.
func (h *Handler) Flush(ctx context.Context) {
	st := h.st
	now := st.opts.Now()
	type due struct {
		r   slog.Record
		out slog.Handler
	}
	var dues []due
	st.mu.Lock()
	for k, c := range st.kinds {
		if c.suppressed > 0 {
			dues = append(dues, due{summaryRecord(k, c, now), c.out})
			c.suppressed = 0
		}
	}
	st.mu.Unlock()
	for _, d := range dues {
		_ = d.out.Handle(ctx, d.r)
	}
}

// WithAttrs returns a Handler sharing this one's counts.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	agent := h.agent
	for _, a := range attrs {
		if a.Key == "agent" {
			agent = a.Value.String()
		}
	}
	return &Handler{next: h.next.WithAttrs(attrs), agent: agent, st: h.st}
}

// WithGroup returns a Handler sharing this one's counts.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), agent: h.agent, st: h.st}
}
