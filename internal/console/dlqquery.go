package console

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
)

// dlqQuery is the DLQ page's filter and position, as its URL carries them.
type dlqQuery struct {
	Agent, Subject, Type, Reason, Text string
	Since, Until                       string // as typed: RFC 3339 or the browser's datetime-local
	NotReplayed                        bool
	// After is the page's cursor: entries after this sequence.
	After uint64
	// Limit is the page size.
	Limit int
	// IDs selects entries one by one (the list's check boxes).
	IDs []uint64

	since, until time.Time
}

const (
	defaultPageSize = 50
	maxPageSize     = 500
	// scanBudget bounds the entries one page reads to find its matches:
	// a filter that matches rarely shows what it found so far and a link
	// to go on, instead of reading the whole DLQ per page.
	scanBudget = 10000
)

// parseDLQQuery reads a query from URL values; bad values are errors
// naming the field.
func parseDLQQuery(v url.Values) (dlqQuery, error) {
	q := dlqQuery{
		Agent: strings.TrimSpace(v.Get("agent")), Subject: strings.TrimSpace(v.Get("subject")),
		Type: strings.TrimSpace(v.Get("type")), Reason: strings.TrimSpace(v.Get("reason")),
		Text: v.Get("q"), Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until")),
		NotReplayed: v.Get("not_replayed") != "", Limit: defaultPageSize,
	}
	var errs []error
	if q.Agent != "" {
		if err := bus.ValidateName(q.Agent); err != nil {
			errs = append(errs, fmt.Errorf("agent: %w", err))
		}
	}
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("after: %q is not an entry id", s))
		}
		q.After = n
	}
	if s := v.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPageSize {
			errs = append(errs, fmt.Errorf("n: page size must be 1..%d", maxPageSize))
		} else {
			q.Limit = n
		}
	}
	for _, s := range v["id"] {
		for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
			n, err := strconv.ParseUint(part, 10, 64)
			if err != nil || n == 0 {
				errs = append(errs, fmt.Errorf("id: %q is not an entry id", part))
				continue
			}
			q.IDs = append(q.IDs, n)
		}
	}
	var err error
	if q.since, err = parseTime(q.Since); err != nil {
		errs = append(errs, fmt.Errorf("since: %w", err))
	}
	if q.until, err = parseTime(q.Until); err != nil {
		errs = append(errs, fmt.Errorf("until: %w", err))
	}
	if !q.since.IsZero() && !q.until.IsZero() && q.until.Before(q.since) {
		errs = append(errs, errors.New("until is before since"))
	}
	return q, errors.Join(errs...)
}

// parseTime reads RFC 3339, or the "2006-01-02T15:04" of an HTML
// datetime-local input (taken as UTC, as the pages show times).
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want a time like 2026-01-02T15:04 (UTC) or RFC 3339", s)
}

// filter is the dlq.Filter the query selects (without paging).
func (q dlqQuery) filter() dlq.Filter {
	return dlq.Filter{
		Agent: q.Agent, Subject: q.Subject, Type: q.Type, Reason: dlq.Reason(q.Reason), Error: q.Text,
		Since: q.since, Until: q.until, NotReplayed: q.NotReplayed,
	}
}

// Filtered reports whether anything but the agent narrows the query (so
// counts need a scan).
func (q dlqQuery) Filtered() bool {
	return q.Subject != "" || q.Type != "" || q.Reason != "" || q.Text != "" || q.Since != "" || q.Until != "" || q.NotReplayed
}

// Values returns the query's filter as URL values (no cursor, no ids).
func (q dlqQuery) Values() url.Values {
	v := url.Values{}
	set := func(k, val string) {
		if val != "" {
			v.Set(k, val)
		}
	}
	set("agent", q.Agent)
	set("subject", q.Subject)
	set("type", q.Type)
	set("reason", q.Reason)
	set("q", q.Text)
	set("since", q.Since)
	set("until", q.Until)
	if q.NotReplayed {
		v.Set("not_replayed", "1")
	}
	if q.Limit != defaultPageSize {
		v.Set("n", strconv.Itoa(q.Limit))
	}
	return v
}

// Describe says in words what the query selects, for confirmations and
// the audit log.
func (q dlqQuery) Describe() string {
	if len(q.IDs) > 0 {
		ids := make([]string, 0, min(len(q.IDs), 10))
		for _, id := range q.IDs[:min(len(q.IDs), 10)] {
			ids = append(ids, strconv.FormatUint(id, 10))
		}
		more := ""
		if len(q.IDs) > 10 {
			more = fmt.Sprintf(" and %d more", len(q.IDs)-10)
		}
		return "entries " + strings.Join(ids, ", ") + more
	}
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+strconv.Quote(v))
		}
	}
	add("agent", q.Agent)
	add("subject", q.Subject)
	add("type", q.Type)
	add("reason", q.Reason)
	add("error contains", q.Text)
	add("since", q.Since)
	add("until", q.Until)
	if q.NotReplayed {
		parts = append(parts, "not replayed")
	}
	if len(parts) == 0 {
		return "all entries"
	}
	return "entries with " + strings.Join(parts, ", ")
}

// link returns the DLQ page's URL for the query at cursor after.
func (q dlqQuery) link(after uint64) string {
	v := q.Values()
	if after > 0 {
		v.Set("after", strconv.FormatUint(after, 10))
	}
	if len(v) == 0 {
		return "/dlq"
	}
	return "/dlq?" + v.Encode()
}

// dlqPage is one page of the DLQ list.
type dlqPage struct {
	Entries []*dlq.Entry
	// Next is the cursor of the next page, 0 when the end was reached.
	Next uint64
	// Scanned counts the entries read to fill the page; Budget says the
	// scan stopped at scanBudget before the page was full.
	Scanned int
	Budget  bool
	Took    time.Duration
}

var errStop = errors.New("console: stop scanning")

// manyMarks is the number of replay marks above which reading them all
// (what dlq.Store.Each does before its first entry) costs more than
// reading the marks of the entries in hand one by one: about 4.5 s for
// 100,000 marks here, against 0.1-0.2 ms per entry.
var manyMarks uint64 = 5000

// fewMarks reports whether the replays bucket holds few marks (or cannot
// be read: Each will say why).
func (s *Server) fewMarks(ctx context.Context) bool {
	kv, err := s.cfg.Conn.JetStream().KeyValue(ctx, s.cfg.Topology.ReplaysBucket())
	if err != nil {
		return true
	}
	st, err := kv.Status(ctx)
	return err != nil || st.Values() < manyMarks
}

// readDLQPage reads one page: the server starts at the cursor and filters
// by agent; the other fields are matched here, over at most scanBudget
// entries. The page's replay counts are read for its entries only, unless
// the filter is about replays and there are few marks.
func (s *Server) readDLQPage(ctx context.Context, q dlqQuery) (dlqPage, error) {
	start := time.Now()
	var page dlqPage
	if err := s.connected(); err != nil {
		return page, err
	}
	f := q.filter()
	bulkMarks := q.NotReplayed && s.fewMarks(ctx)
	budget := scanBudget
	if q.NotReplayed && !bulkMarks {
		budget = scanBudget / 10 // a mark read per candidate
	}
	withoutMarks := f
	withoutMarks.NotReplayed = false
	var last uint64
	err := s.store.Each(ctx, dlq.Filter{Agent: q.Agent, After: q.After, WithoutReplays: !bulkMarks}, func(e *dlq.Entry) error {
		page.Scanned++
		last = e.Seq
		match := f.Match(e)
		if q.NotReplayed && !bulkMarks && withoutMarks.Match(e) {
			if err := s.store.FillReplays(ctx, []*dlq.Entry{e}); err != nil {
				return err
			}
			match = e.Replays == 0
		}
		if match {
			page.Entries = append(page.Entries, e)
			if len(page.Entries) >= q.Limit {
				return errStop
			}
		}
		if page.Scanned >= budget {
			page.Budget = true
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return page, err
	}
	if errors.Is(err, errStop) {
		page.Next = last
	}
	if !bulkMarks {
		if err := s.store.FillReplays(ctx, page.Entries); err != nil {
			return page, err
		}
	}
	page.Took = time.Since(start)
	return page, nil
}

// each calls fn for every entry the query selects with a sequence up to
// upTo (0: no bound), in chunks of up to n, oldest first. Selections by
// id skip entries that no longer exist.
func (s *Server) each(ctx context.Context, q dlqQuery, upTo uint64, n int, fn func([]*dlq.Entry) error) error {
	if err := s.connected(); err != nil {
		return err
	}
	f := q.filter()
	if len(q.IDs) > 0 {
		var chunk []*dlq.Entry
		for _, id := range q.IDs {
			if upTo > 0 && id > upTo {
				continue
			}
			e, err := s.store.Get(ctx, id)
			if errors.Is(err, dlq.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if !f.Match(e) {
				continue
			}
			if chunk = append(chunk, e); len(chunk) >= n {
				if err := fn(chunk); err != nil {
					return err
				}
				chunk = nil
			}
		}
		if len(chunk) > 0 {
			return fn(chunk)
		}
		return nil
	}
	// Replay counts decide what a replay skips: read with the entries
	// when there are few marks, else per chunk (see manyMarks).
	bulkMarks := s.fewMarks(ctx)
	withoutMarks := f
	withoutMarks.NotReplayed = false
	cursor := q.After
	for {
		var chunk []*dlq.Entry
		var last uint64
		done := true
		err := s.store.Each(ctx, dlq.Filter{Agent: q.Agent, After: cursor, WithoutReplays: !bulkMarks}, func(e *dlq.Entry) error {
			if upTo > 0 && e.Seq > upTo {
				return errStop // newer than the count the operator confirmed
			}
			last = e.Seq
			if (bulkMarks && f.Match(e)) || (!bulkMarks && withoutMarks.Match(e)) {
				if chunk = append(chunk, e); len(chunk) >= n {
					done = false
					return errStop
				}
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return err
		}
		if !bulkMarks && len(chunk) > 0 {
			if err := s.store.FillReplays(ctx, chunk); err != nil {
				return err
			}
			if q.NotReplayed {
				kept := chunk[:0]
				for _, e := range chunk {
					if e.Replays == 0 {
						kept = append(kept, e)
					}
				}
				chunk = kept
			}
		}
		if len(chunk) > 0 {
			if err := fn(chunk); err != nil {
				return err
			}
		}
		if done || last == 0 {
			return nil
		}
		cursor = last
	}
}
