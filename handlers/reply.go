package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/vmihailenco/msgpack/v5"
)

// Errors returned (wrapped, and marked permanent) when the answer of a
// program or service cannot be a reply payload.
var (
	// ErrInvalidAnswer means the answer is not exactly one JSON value (or
	// has no msgpack form, e.g. nests deeper than envelope.MaxPayloadDepth).
	ErrInvalidAnswer = errors.New("handlers: answer is not one JSON value")

	// ErrAnswerTooLarge means the answer exceeded MaxOutput (exec) or
	// MaxResponse (http).
	ErrAnswerTooLarge = errors.New("handlers: answer too large")
)

// snippetLen bounds the text quoted from an answer, a body or stderr in an
// error message.
const snippetLen = 200

// answerPayload turns an answer (stdout, a response body) into the reply
// payload: nil for an empty or blank answer, else the msgpack form of its
// one JSON value. from names the source in errors ("stdout", "body").
func answerPayload(b []byte, from string) (any, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, nil
	}
	if !json.Valid(b) {
		var detail string
		if err := json.Unmarshal(b, new(json.RawMessage)); err != nil {
			detail = err.Error()
		}
		return nil, resilience.Permanent(fmt.Errorf("%w: %s: %s (starts with %s)", ErrInvalidAnswer, from, detail, snippet(b)))
	}
	p, err := envelope.PayloadFromJSON(b)
	if err != nil {
		return nil, resilience.Permanent(fmt.Errorf("%w: %s: %w", ErrInvalidAnswer, from, err))
	}
	if p == nil { // the JSON literal null
		return nil, nil
	}
	return msgpack.RawMessage(p), nil
}

// snippet quotes the start of b, shortened to snippetLen bytes on a rune
// boundary.
func snippet(b []byte) string {
	if len(b) <= snippetLen {
		return strconv.Quote(string(b))
	}
	cut := snippetLen
	for cut > 0 && !utf8.RuneStart(b[cut]) {
		cut--
	}
	return strconv.Quote(string(b[:cut])) + "..."
}

// deadlineError is the error of a program or request ended by ctx: a
// timeout (transient, wrapping resilience.ErrTimeout and
// context.DeadlineExceeded) at the handler's deadline, or ctx's error
// (context.Canceled: the runtime is stopping and hands the task back).
func deadlineError(ctx context.Context, what string) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		d := ""
		if dl, ok := ctx.Deadline(); ok {
			d = " (" + dl.UTC().Format(time.RFC3339Nano) + ")"
		}
		return fmt.Errorf("%s: %w: handler deadline passed%s: %w", what, resilience.ErrTimeout, d, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
