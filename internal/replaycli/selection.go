package replaycli

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/didyoumean"
	"github.com/spf13/cobra"
)

// selection holds the filter flags shared by list, replay, purge and stats.
type selection struct {
	agent, subject, typ, reason, errText, since, until string
	limit                                              int
	after                                              uint64
	notReplayed                                        bool
}

func (s *selection) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.agent, "agent", "", "only entries of this agent")
	f.StringVar(&s.subject, "subject", "", "only entries whose original subject matches (NATS wildcards * and > allowed)")
	f.StringVar(&s.typ, "type", "", "only entries of this payload type (e.g. task.request)")
	f.StringVar(&s.reason, "reason", "", "only entries dead-lettered for this reason: "+reasonList)
	f.StringVar(&s.errText, "error", "", "only entries whose error text contains this")
	f.StringVar(&s.since, "since", "", "only entries stored at or after this: RFC 3339 time, or a duration ago like 90m or 24h")
	f.StringVar(&s.until, "until", "", "only entries stored at or before this (same forms as --since)")
	f.IntVar(&s.limit, "limit", 0, "at most this many entries (0: no limit)")
	f.Uint64Var(&s.after, "after", 0, "only entries after this ID (the next page: the last ID seen)")
	_ = cmd.RegisterFlagCompletionFunc("reason", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		out := make([]string, len(reasons))
		for i, r := range reasons {
			out[i] = string(r)
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
}

var reasons = []dlq.Reason{dlq.ReasonMalformed, dlq.ReasonTooLarge, dlq.ReasonInvalid, dlq.ReasonBadTimestamp,
	dlq.ReasonExpired, dlq.ReasonUnknownType, dlq.ReasonPermanent, dlq.ReasonMaxAttempts, dlq.ReasonReplyFailed, dlq.ReasonMaxDeliveries}

var reasonList = func() string {
	s := ""
	for i, r := range reasons {
		if i > 0 {
			s += ", "
		}
		s += string(r)
	}
	return s
}()

// filter builds the dlq.Filter, with ids as explicit entry IDs; it returns
// a usage error naming the bad flag.
func (s *selection) filter(ids []string, now time.Time) (dlq.Filter, error) {
	f := dlq.Filter{Agent: s.agent, Subject: s.subject, Type: s.typ, Error: s.errText, Limit: s.limit, After: s.after, NotReplayed: s.notReplayed}
	if s.reason != "" {
		var names []string
		for _, r := range reasons {
			names = append(names, string(r))
		}
		if !slices.Contains(names, s.reason) {
			if near := didyoumean.Closest(s.reason, names); near != "" {
				return f, cliexit.Usagef("--reason %q: did you mean %q? (one of %s)", s.reason, near, reasonList)
			}
			return f, cliexit.Usagef("--reason %q: want one of %s", s.reason, reasonList)
		}
		f.Reason = dlq.Reason(s.reason)
	}
	if s.limit < 0 {
		return f, cliexit.Usagef("--limit must not be negative")
	}
	var err error
	if f.Since, err = parseWhen(s.since, now); err != nil {
		return f, cliexit.Usagef("--since: %v", err)
	}
	if f.Until, err = parseWhen(s.until, now); err != nil {
		return f, cliexit.Usagef("--until: %v", err)
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && f.Until.Before(f.Since) {
		return f, cliexit.Usagef("--until %s is before --since %s: nothing can match (a duration counts back from now: --since 2h --until 1h)",
			f.Until.UTC().Format(time.RFC3339), f.Since.UTC().Format(time.RFC3339))
	}
	for _, id := range ids {
		n, err := strconv.ParseUint(id, 10, 64)
		if err != nil || n == 0 {
			return f, cliexit.Usagef("%q is not an entry ID (the ID column of 'replay list': a positive number)", id)
		}
		f.IDs = append(f.IDs, n)
	}
	return f, nil
}

// entriesN writes "1 entry" or "n entries".
func entriesN(n int) string {
	if n == 1 {
		return "1 entry"
	}
	return strconv.Itoa(n) + " entries"
}

// parseWhen reads an RFC 3339 time or a duration before now; "" is zero.
func parseWhen(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-01-02T15:04:05Z) nor a duration ago (90m, 24h)", v)
	}
	return now.Add(-d), nil
}
