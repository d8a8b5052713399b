package natsflags

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go"
)

// PermissionError is a permissions violation reported by the server: it
// refused to let the connection's user publish to, or subscribe to,
// Subject. The server drops the refused message and says so
// asynchronously (-ERR 'Permissions Violation for Publish to "<subject>"');
// nats.go hands that to the connection's error handler, while the request
// that was refused simply waits for its timeout. It unwraps to the nats.go
// error, which wraps nats.ErrPermissionViolation.
type PermissionError struct {
	// Op is "publish" or "subscribe".
	Op string
	// Subject is the subject refused ("" if the server's text was not
	// recognised).
	Subject string
	// Err is the error from nats.go.
	Err error
}

func (e *PermissionError) Error() string {
	if e.Subject == "" {
		return fmt.Sprintf("the NATS server refused a permission this command needs (see docs/security.md): %v", e.Err)
	}
	return fmt.Sprintf("the NATS server refused this user permission to %s %q (see docs/security.md for what each role needs)", e.Op, e.Subject)
}

func (e *PermissionError) Unwrap() error { return e.Err }

var violationRe = regexp.MustCompile(`(?i)permissions violation for (publish|subscription) to "([^"]+)"`)

// newPermissionError parses the server's text of err.
func newPermissionError(err error) *PermissionError {
	pe := &PermissionError{Err: err}
	if m := violationRe.FindStringSubmatch(err.Error()); m != nil {
		pe.Op, pe.Subject = "publish", m[2]
		if m[1][0] == 's' || m[1][0] == 'S' {
			pe.Op = "subscribe"
		}
	}
	return pe
}

// FailFast returns a copy of parent that ends, with a *PermissionError as
// its cause (see Violation), as soon as the server reports a permissions
// violation on a connection opened with opt. A request the server refused
// then fails at once (with ctx's error) instead of at its timeout. It is
// meant for one-shot commands, for which any refusal is fatal; opt sets
// the connection's error handler, so it replaces LogAsyncErrors (or any
// other handler). cancel releases the context.
//
// Refusals that optional lists do not end ctx: the requests a command
// makes only to say more (is JetStream on? does this agent exist?), which
// a least-privilege user may not make.
func FailFast(parent context.Context, optional ...Optional) (ctx context.Context, opt nats.Option, cancel context.CancelFunc) {
	ctx, cancelCause := context.WithCancelCause(parent)
	opt = nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if !errors.Is(err, nats.ErrPermissionViolation) {
			return
		}
		pe := newPermissionError(err)
		for _, o := range optional {
			if o.matches(pe.Subject) {
				if o.Refused != nil {
					o.Refused(pe)
				}
				return
			}
		}
		cancelCause(pe)
	})
	return ctx, opt, func() { cancelCause(nil) }
}

// Optional is a permission FailFast lets the server refuse.
type Optional struct {
	// Subject is the subject refused; one ending in ">" stands for every
	// subject it prefixes.
	Subject string
	// Refused, when set, is called on the refusal (e.g. to end the
	// request waiting for an answer that will not come).
	Refused func(*PermissionError)
}

func (o Optional) matches(subject string) bool {
	return subject == o.Subject || strings.HasSuffix(o.Subject, ">") && strings.HasPrefix(subject, strings.TrimSuffix(o.Subject, ">"))
}

// Violation returns the *PermissionError that ended ctx (a context from
// FailFast, or one derived from it), or nil when ctx has not ended or
// ended for another reason.
func Violation(ctx context.Context) error {
	var pe *PermissionError
	if errors.As(context.Cause(ctx), &pe) {
		return pe
	}
	return nil
}

// LogAsyncErrors returns an option that logs the errors the server reports
// asynchronously on the connection: permissions violations at Error (with
// the subject refused; nothing else tells a long-running process that a
// request of its was refused, it only times out), others (slow consumer...)
// at Warn. It sets the connection's error handler, replacing any other.
func LogAsyncErrors(log *slog.Logger) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		args := []any{"err", err}
		if sub != nil {
			args = append(args, "subscription", sub.Subject)
		}
		if errors.Is(err, nats.ErrPermissionViolation) {
			pe := newPermissionError(err)
			log.Error("NATS permission denied: the user lacks a permission jetagent needs (see docs/security.md)",
				append(args, "op", pe.Op, "subject", pe.Subject)...)
			return
		}
		log.Warn("NATS asynchronous error", args...)
	})
}
