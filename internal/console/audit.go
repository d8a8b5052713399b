package console

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"
)

// AuditRecord is one action taken in the console: who, what, how many,
// when, and how it ended.
type AuditRecord struct {
	At     time.Time `json:"at"`
	User   string    `json:"user"`
	Role   Role      `json:"role"`
	Remote string    `json:"remote"`
	// Action is "replay", "purge", "cancel_task", "cancel_job", or
	// "denied" for an action refused to a viewer.
	Action string `json:"action"`
	// Target says on what: a filter, entry ids, a task.
	Target string `json:"target"`
	// Count is how many entries or tasks the action touched (known when
	// it ends, for jobs).
	Count int `json:"count"`
	// Outcome is "started", "done", "cancelled", "failed: ..." or "refused".
	Outcome string `json:"outcome"`
	// Job is the id of the job the action started, if any.
	Job int `json:"job,omitempty"`
	// Seqs lists the DLQ entries the action named, when it named them one
	// by one (up to maxAuditSeqs), so an entry's page can show its history.
	Seqs []uint64 `json:"seqs,omitempty"`
}

// maxAuditSeqs bounds the entry ids kept in one audit record.
const maxAuditSeqs = 1000

// auditLog keeps the latest records in memory (newest last) and appends
// every record to a JSON-lines file when one is configured, and to the
// console's log.
type auditLog struct {
	mu   sync.Mutex
	recs []AuditRecord
	max  int
	file *os.File
	log  *slog.Logger
}

func newAuditLog(path string, log *slog.Logger) (*auditLog, error) {
	a := &auditLog{max: 2000, log: log}
	if path != "" {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, fmt.Errorf("console: audit file: %w", err)
		}
		a.file = f
	}
	return a, nil
}

// add records r (its time set now when zero).
func (a *auditLog) add(r AuditRecord) {
	if r.At.IsZero() {
		r.At = time.Now().UTC()
	}
	a.log.Info("console audit", "user", r.User, "role", string(r.Role), "remote", r.Remote, "action", r.Action,
		"target", r.Target, "count", r.Count, "outcome", r.Outcome, "job", r.Job)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recs = append(a.recs, r)
	if len(a.recs) > a.max {
		a.recs = slices.Clone(a.recs[len(a.recs)-a.max:])
	}
	if a.file != nil {
		b, _ := json.Marshal(r)
		if _, err := a.file.Write(append(b, '\n')); err != nil {
			a.log.Error("console: audit file write failed", "err", err)
		}
	}
}

// latest returns up to n records, newest first.
func (a *auditLog) latest(n int) []AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]AuditRecord, 0, min(n, len(a.recs)))
	for i := len(a.recs) - 1; i >= 0 && len(out) < n; i-- {
		out = append(out, a.recs[i])
	}
	return out
}

// about returns the records naming DLQ entry seq, newest first.
func (a *auditLog) about(seq uint64) []AuditRecord {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []AuditRecord
	for i := len(a.recs) - 1; i >= 0; i-- {
		if slices.Contains(a.recs[i].Seqs, seq) {
			out = append(out, a.recs[i])
		}
	}
	return out
}

func (a *auditLog) close() error {
	if a.file == nil {
		return nil
	}
	return a.file.Close()
}
