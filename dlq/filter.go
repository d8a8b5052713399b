package dlq

import (
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
)

// Filter selects DLQ entries. Zero fields match everything.
type Filter struct {
	// IDs selects entries by sequence (other fields still filter them).
	IDs []uint64
	// Agent matches the agent that dead-lettered the entry.
	Agent string
	// Subject matches the original subject; NATS wildcards allowed.
	Subject string
	// Type matches the payload type (the original subject's tail).
	Type string
	// Reason matches the reason code (e.g. "permanent").
	Reason Reason
	// Error matches entries whose error text contains it.
	Error string
	// Since and Until bound the time the entry was stored.
	Since, Until time.Time
	// NotReplayed drops entries replayed before.
	NotReplayed bool
	// Limit bounds the number of entries returned (zero: no limit).
	Limit int
	// WithoutReplays leaves Entry.Replays at zero instead of reading the
	// replay marks, which Each otherwise reads all of (the agent's, or
	// every one) before the first entry: a reader that shows a page of
	// entries reads theirs with FillReplays instead. NotReplayed needs the
	// marks and ignores it.
	WithoutReplays bool
	// After skips the entries with a sequence up to and including it: the
	// DLQ is read from sequence After+1 on (the server starts there, so a
	// page deep in a large DLQ costs what the first one does). Zero: from
	// the first entry.
	After uint64
}

// Match reports whether e passes every set field of f (IDs and Limit
// are applied by the Store; After by both).
func (f Filter) Match(e *Entry) bool {
	switch {
	case f.After > 0 && e.Seq <= f.After,
		f.Agent != "" && e.Agent != f.Agent,
		f.Subject != "" && !bus.MatchSubject(f.Subject, e.Subject),
		f.Type != "" && !strings.HasSuffix(e.Subject, "."+f.Type),
		f.Reason != "" && e.Reason != f.Reason,
		f.Error != "" && !strings.Contains(e.Error, f.Error),
		!f.Since.IsZero() && e.Stored.Before(f.Since),
		!f.Until.IsZero() && e.Stored.After(f.Until),
		f.NotReplayed && e.Replays > 0,
		f.After > 0 && e.Seq <= f.After:
		return false
	}
	return true
}
