package agentcli

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/runtime/beacon"
)

// The configuration of `agent run` is a table of settings (this file):
// each has a key in the YAML file, usually a flag and a JETAGENT_*
// environment variable, a default and a check. The file reader, the
// flags, the environment, `agent config validate` and the table in
// docs/configuration.md all come from it, so they cannot disagree.
// Precedence: flag > environment > file > default.

// scope says where a setting's key lives in the file.
type scope int

const (
	scopeGlobal scope = iota // top level: nats, log, topology, shutdown_timeout
	scopeAgent               // one entry of agents:
	scopeRule                // one entry of an agent's breaker.rules:
)

// valueKind is the type of a setting's value, and how text becomes one.
type valueKind int

const (
	kindString   valueKind = iota // string
	kindInt                       // int
	kindFloat                     // float64
	kindBool                      // bool
	kindDuration                  // time.Duration: "30s", "5m", "1h30m"
	kindBytes                     // int64: 1048576, "1MiB", "64KiB", "10MB"
	kindList                      // []string: a YAML list; "a,b" in a flag or variable
	kindMap                       // map[string]string: a YAML mapping; "K=V,K2=V2" in a flag or variable
	kindCommand                   // []string: a YAML list, or one string split like a shell does (quotes, backslashes)
)

// Handler kinds of `agent run`.
const (
	handlerEcho  = "echo"
	handlerChaos = "chaos"
	handlerExec  = "exec"
	handlerHTTP  = "http"
)

var handlerKinds = []string{handlerEcho, handlerChaos, handlerExec, handlerHTTP}

// setting is one configurable value.
type setting struct {
	key   string // dotted key below its scope, e.g. "backoff.base"
	scope scope
	kind  valueKind
	// def is the default, of the kind's Go type; nil: none (required, or
	// explained by defDoc).
	def any
	// defDoc replaces the default's text in the docs and help.
	defDoc string
	flag   string // "" for file-only settings
	env    string // "" for file-only settings
	// handler is the handler kind the setting belongs to (handler.* keys).
	handler string
	// required settings have no default (name in a file, exec command,
	// http url).
	required bool
	usage    string
	check    func(v any) error
}

// settings is the table. Order: as docs/configuration.md lists them.
var settings = []*setting{
	// top level
	{key: "nats.url", kind: kindString, def: "", defDoc: "none: start an embedded server", flag: "nats", env: "JETAGENT_NATS_URL",
		usage: "URL of a NATS server (or comma-separated cluster URLs) to join"},
	{key: "nats.embedded.data_dir", kind: kindString, def: "", defDoc: "$XDG_DATA_HOME/jetagent, else ~/.local/share/jetagent", flag: "data-dir", env: "JETAGENT_DATA_DIR",
		usage: "embedded server's JetStream directory"},
	{key: "nats.embedded.listen", kind: kindString, def: bus.DefaultListen, flag: "listen", env: "JETAGENT_LISTEN",
		usage: "embedded server's client address (host:port), a loopback one; port 0 picks a free one", check: checkListen},
	{key: "nats.embedded.insecure_listen_without_auth", kind: kindBool, def: false, flag: "insecure-listen-without-auth", env: "JETAGENT_INSECURE_LISTEN_WITHOUT_AUTH",
		usage: "let the embedded server, which has no authentication, listen on a non-loopback address: whoever reaches it can read, send and delete every task"},
	{key: "log.level", kind: kindString, def: "info", flag: "log-level", env: "JETAGENT_LOG_LEVEL",
		usage: "log level: debug, info, warn or error", check: oneOf("debug", "info", "warn", "error")},
	{key: "log.format", kind: kindString, def: "text", flag: "log-format", env: "JETAGENT_LOG_FORMAT",
		usage: "log format: text or json", check: oneOf("text", "json")},
	{key: "ops.listen", kind: kindString, def: "", defDoc: "none: not served", flag: "ops-listen", env: "JETAGENT_OPS_LISTEN",
		usage: "address (host:port) serving /metrics (Prometheus), /healthz and /readyz; traces follow the OTEL_* variables (docs/observability.md)", check: checkOptionalListen},
	{key: "ops.status_interval", kind: kindDuration, def: beacon.DefaultInterval, flag: "status-interval", env: "JETAGENT_STATUS_INTERVAL",
		usage: "how often each agent reports its breakers and running tasks on <prefix>.status.<agent>, for agent console; 0 turns the reports off", check: nonNegative},
	{key: "shutdown_timeout", kind: kindDuration, def: runtime.DefaultShutdownTimeout, flag: "shutdown-timeout", env: "JETAGENT_SHUTDOWN_TIMEOUT",
		usage: "how long a stop (Ctrl-C, SIGTERM) waits for the tasks in hand before handing them back", check: positive},
	{key: "topology.prefix", kind: kindString, def: bus.DefaultPrefix, flag: "prefix", env: "JETAGENT_PREFIX",
		usage: "subject prefix and stream name stem", check: checkName},
	{key: "topology.replicas", kind: kindInt, def: 1, flag: "replicas", env: "JETAGENT_REPLICAS",
		usage: "copies the cluster keeps of each stream and bucket it provisions (1..5; above 1 needs a cluster, --nats; must match streams that exist)", check: intRange(1, 5)},
	{key: "topology.snapshot_ttl", kind: kindDuration, def: time.Duration(0), defDoc: "0, never expire", flag: "snapshot-ttl", env: "JETAGENT_SNAPSHOT_TTL",
		usage: "snapshots not updated for this long are removed by the server", check: nonNegative},
	{key: "topology.snapshot_history", kind: kindInt, def: bus.DefaultSnapshotHistory, flag: "snapshot-history", env: "JETAGENT_SNAPSHOT_HISTORY",
		usage: "revisions per task the snapshot bucket keeps (1..64)", check: intRange(1, 64)},
	{key: "topology.dlq_max_age", kind: kindDuration, def: time.Duration(0), defDoc: "0, kept until purged", flag: "dlq-max-age", env: "JETAGENT_DLQ_MAX_AGE",
		usage: "dead letters older than this are removed", check: nonNegative},
	{key: "topology.dlq_max_bytes", kind: kindBytes, def: int64(0), defDoc: "0, no limit", flag: "dlq-max-bytes", env: "JETAGENT_DLQ_MAX_BYTES",
		usage: "size cap of the dead-letter stream; when full, new dead letters are refused and their tasks redelivered", check: nonNegative},
	{key: "topology.dlq_max_msgs", kind: kindInt, def: 0, defDoc: "0, no limit", flag: "dlq-max-msgs", env: "JETAGENT_DLQ_MAX_MSGS",
		usage: "count cap of the dead-letter stream (refused beyond, like dlq_max_bytes)", check: nonNegative},
	{key: "topology.tasks_max_bytes", kind: kindBytes, def: int64(0), defDoc: "0, no limit", flag: "tasks-max-bytes", env: "JETAGENT_TASKS_MAX_BYTES",
		usage: "size cap of the tasks stream; when full, publishing a task fails", check: nonNegative},
	{key: "topology.reply_max_age", kind: kindDuration, def: bus.DefaultReplyMaxAge, flag: "reply-max-age", env: "JETAGENT_REPLY_MAX_AGE",
		usage: "how long replies are kept for clients that reconnect late", check: positive},
	{key: "topology.duplicate_window", kind: kindDuration, def: bus.DefaultDuplicateWindow, flag: "duplicate-window", env: "JETAGENT_DUPLICATE_WINDOW",
		usage: "how long the server remembers message ids to drop re-sent copies", check: positive},

	// each agent
	{key: "name", scope: scopeAgent, kind: kindString, def: "echo", defDoc: "echo without --config; required in a file", flag: "name", env: "JETAGENT_NAME",
		usage: "agent name: tasks sent to this name reach this agent (letters, digits, '-', '_')", check: checkName},
	{key: "types", scope: scopeAgent, kind: kindList, def: []string{string(envelope.TaskRequest)}, flag: "types", env: "JETAGENT_TYPES",
		usage: "payload types handed to the handler", check: checkTypes},
	{key: "concurrency", scope: scopeAgent, kind: kindInt, def: runtime.DefaultConcurrency, flag: "concurrency", env: "JETAGENT_CONCURRENCY",
		usage: "tasks handled at once", check: intRange(1, 4096)},
	{key: "prefetch", scope: scopeAgent, kind: kindInt, def: bus.DefaultPrefetch, flag: "prefetch", env: "JETAGENT_PREFETCH",
		usage: "tasks a replica takes ahead of its workers: it holds at most concurrency + prefetch (lower it for slow tasks, so that replicas share a backlog)", check: intRange(1, 65536)},
	{key: "ack_wait", scope: scopeAgent, kind: kindDuration, def: bus.DefaultAckWait, flag: "ack-wait", env: "JETAGENT_ACK_WAIT",
		usage: "how long the server waits for a silent task before redelivering it (running tasks send heartbeats)", check: atLeastDuration(time.Second)},
	{key: "max_deliver", scope: scopeAgent, kind: kindInt, def: bus.DefaultMaxDeliver, flag: "max-deliver", env: "JETAGENT_MAX_DELIVER",
		usage: "attempts of a failing task before it is dead-lettered: runs that failed, or ended with their process (hand-backs at shutdown do not count)", check: intRange(1, 1000)},
	{key: "handler_timeout", scope: scopeAgent, kind: kindDuration, def: runtime.DefaultHandlerTimeout, flag: "handler-timeout", env: "JETAGENT_HANDLER_TIMEOUT",
		usage: "how long one task may run; exec programs are killed then, http requests cancelled", check: positive},
	{key: "max_clock_skew", scope: scopeAgent, kind: kindDuration, def: envelope.DefaultMaxClockSkew, flag: "max-clock-skew", env: "JETAGENT_MAX_CLOCK_SKEW",
		usage: "dead-letter envelopes whose timestamp is further than this from the server's receive time", check: positive},
	{key: "keep_snapshots", scope: scopeAgent, kind: kindBool, def: false, flag: "keep-snapshots", env: "JETAGENT_KEEP_SNAPSHOTS",
		usage: "keep a finished task's snapshot (for topology.snapshot_ttl to remove) instead of deleting it"},
	{key: "cancel_marker_ttl", scope: scopeAgent, kind: kindDuration, def: runtime.DefaultCancelMarkerTTL, flag: "cancel-marker-ttl", env: "JETAGENT_CANCEL_MARKER_TTL",
		usage: "how long a task.cancel for a task not seen yet waits for it (the snapshot bucket's marker TTL is the floor)", check: atLeastDuration(time.Second)},
	{key: "exec_records", scope: scopeAgent, kind: kindBool, def: true, flag: "exec-records", env: "JETAGENT_EXEC_RECORDS",
		usage: "record the tasks that ran (in the agent's records bucket), so that a re-send, even after a server restart, is answered and not run again"},
	{key: "exec_record_ttl", scope: scopeAgent, kind: kindDuration, def: time.Duration(0), defDoc: "2m, or topology.duplicate_window if longer",
		flag: "exec-record-ttl", env: "JETAGENT_EXEC_RECORD_TTL",
		usage: "how long a task's execution record is kept; each replica holds about 12 bytes a task of this span in memory; at least topology.duplicate_window", check: nonNegative},
	{key: "backoff.base", scope: scopeAgent, kind: kindDuration, def: resilience.DefaultBaseDelay, flag: "backoff-base", env: "JETAGENT_BACKOFF_BASE",
		usage: "redelivery delay after the first failed attempt; doubles with each attempt", check: positive},
	{key: "backoff.max", scope: scopeAgent, kind: kindDuration, def: resilience.DefaultMaxDelay, flag: "backoff-max", env: "JETAGENT_BACKOFF_MAX",
		usage: "cap of the redelivery delay", check: positive},
	{key: "backoff.jitter", scope: scopeAgent, kind: kindBool, def: true, flag: "backoff-jitter", env: "JETAGENT_BACKOFF_JITTER",
		usage: "draw each delay from [d/2, d] so failing tasks do not retry in step"},
	{key: "breaker.threshold", scope: scopeAgent, kind: kindInt, def: resilience.DefaultBreakerThreshold, flag: "breaker-threshold", env: "JETAGENT_BREAKER_THRESHOLD",
		usage: "consecutive transient failures of a subject that open its circuit breaker (its tasks then wait)", check: intRange(1, 1<<20)},
	{key: "breaker.open_timeout", scope: scopeAgent, kind: kindDuration, def: resilience.DefaultBreakerOpenTimeout, flag: "breaker-open-timeout", env: "JETAGENT_BREAKER_OPEN_TIMEOUT",
		usage: "how long an open breaker waits before one probe task is let through", check: positive},
	{key: "handler.kind", scope: scopeAgent, kind: kindString, def: handlerEcho, flag: "handler", env: "JETAGENT_HANDLER",
		usage: "handler kind: echo (answers with the payload), chaos (echo with failures), exec (runs a program per task), http (POSTs each task to a URL)",
		check: oneOf(handlerKinds...)},
	{key: "handler.fail_rate", scope: scopeAgent, handler: handlerChaos, kind: kindFloat, def: 0.0, flag: "fail-rate", env: "JETAGENT_FAIL_RATE",
		usage: "chaos: fraction of attempts that fail transiently", check: rate},
	{key: "handler.permanent_rate", scope: scopeAgent, handler: handlerChaos, kind: kindFloat, def: 0.0, flag: "permanent-rate", env: "JETAGENT_PERMANENT_RATE",
		usage: "chaos: fraction of tasks that fail permanently", check: rate},
	{key: "handler.latency", scope: scopeAgent, handler: handlerChaos, kind: kindDuration, def: time.Duration(0), flag: "latency", env: "JETAGENT_LATENCY",
		usage: "chaos: random delay up to this much per attempt", check: nonNegative},
	{key: "handler.crash_rate", scope: scopeAgent, handler: handlerChaos, kind: kindFloat, def: 0.0, flag: "crash-rate", env: "JETAGENT_CRASH_RATE",
		usage: "chaos: fraction of attempts that make the process exit (code 3)", check: rate},
	{key: "handler.command", scope: scopeAgent, handler: handlerExec, kind: kindCommand, required: true, flag: "exec-command", env: "JETAGENT_EXEC_COMMAND",
		usage: "exec: program and arguments run per task (a list, or one string split like a shell does)", check: checkCommand},
	{key: "handler.env", scope: scopeAgent, handler: handlerExec, kind: kindMap, def: map[string]string{}, defDoc: "none", flag: "exec-env", env: "JETAGENT_EXEC_ENV",
		usage: "exec: variables added to the program's environment (NAME=value)", check: checkEnvNames},
	{key: "handler.env_inherit", scope: scopeAgent, handler: handlerExec, kind: kindList, def: []string(nil), defDoc: "every variable but JETAGENT_*", flag: "exec-env-inherit", env: "JETAGENT_EXEC_ENV_INHERIT",
		usage: "exec: the agent's variables the program inherits: names, or prefixes ending in '*' (an empty list: none); the agent's credentials stay out", check: checkEnvInherit},
	{key: "handler.dir", scope: scopeAgent, handler: handlerExec, kind: kindString, def: "", defDoc: "the config file's directory, else the working directory", flag: "exec-dir", env: "JETAGENT_EXEC_DIR",
		usage: "exec: the program's working directory (relative: to the config file's directory)"},
	{key: "handler.max_output", scope: scopeAgent, handler: handlerExec, kind: kindBytes, def: int64(handlers.DefaultMaxOutput), flag: "exec-max-output", env: "JETAGENT_EXEC_MAX_OUTPUT",
		usage: "exec: stdout limit; a program writing more is killed and its task dead-lettered", check: bytesRange(1, math.MaxInt32)},
	{key: "handler.max_stderr", scope: scopeAgent, handler: handlerExec, kind: kindBytes, def: int64(handlers.DefaultMaxStderr), flag: "exec-max-stderr", env: "JETAGENT_EXEC_MAX_STDERR",
		usage: "exec: stderr bytes logged per task (the rest is dropped and counted)", check: bytesRange(1, math.MaxInt32)},
	{key: "handler.url", scope: scopeAgent, handler: handlerHTTP, kind: kindString, required: true, flag: "http-url", env: "JETAGENT_HTTP_URL",
		usage: "http: URL each task is POSTed to (http:// or https://)", check: checkHTTPURL},
	{key: "handler.headers", scope: scopeAgent, handler: handlerHTTP, kind: kindMap, def: map[string]string{}, defDoc: "none", flag: "http-header", env: "JETAGENT_HTTP_HEADER",
		usage: "http: request headers added (Name=value)"},
	{key: "handler.max_response", scope: scopeAgent, handler: handlerHTTP, kind: kindBytes, def: int64(handlers.DefaultMaxResponse), flag: "http-max-response", env: "JETAGENT_HTTP_MAX_RESPONSE",
		usage: "http: response body limit; a longer body dead-letters the task", check: bytesRange(1, math.MaxInt64)},
	{key: "handler.max_retry_after", scope: scopeAgent, handler: handlerHTTP, kind: kindDuration, def: handlers.DefaultMaxRetryAfter, flag: "http-max-retry-after", env: "JETAGENT_HTTP_MAX_RETRY_AFTER",
		usage: "http: cap of the delay a Retry-After header may ask for", check: positive},
	{key: "handler.statuses", scope: scopeAgent, handler: handlerHTTP, kind: kindMap, def: map[string]string{}, defDoc: "401, 403, 404, 408, 425, 429, 5xx transient; other 4xx, 3xx permanent", flag: "http-status", env: "JETAGENT_HTTP_STATUS",
		usage: "http: failure kind of a response status (STATUS=transient or STATUS=permanent), overriding the default", check: checkStatuses},
	{key: "handler.response_header_timeout", scope: scopeAgent, handler: handlerHTTP, kind: kindDuration, def: time.Duration(0), defDoc: "0, the handler deadline", flag: "http-response-header-timeout", env: "JETAGENT_HTTP_RESPONSE_HEADER_TIMEOUT",
		usage: "http: how long to wait for the response headers once the request is sent (then a transient timeout)", check: nonNegative},

	// each breaker rule (file only)
	{key: "pattern", scope: scopeRule, kind: kindString, required: true,
		usage: "task subjects the rule applies to, NATS wildcards allowed (e.g. jetagent.tasks.py.>); first match wins", check: checkPattern},
	{key: "threshold", scope: scopeRule, kind: kindInt, defDoc: "the agent's breaker.threshold",
		usage: "breaker threshold for these subjects", check: intRange(1, 1<<20)},
	{key: "open_timeout", scope: scopeRule, kind: kindDuration, defDoc: "the agent's breaker.open_timeout",
		usage: "breaker open timeout for these subjects", check: positive},
}

// lookupSetting returns the setting of key in scope, or nil.
func lookupSetting(sc scope, key string) *setting {
	for _, s := range settings {
		if s.scope == sc && s.key == key {
			return s
		}
	}
	return nil
}

// isSection reports whether key is a mapping of settings in scope (e.g.
// "backoff", "nats.embedded").
func isSection(sc scope, key string) bool {
	for _, s := range settings {
		if s.scope == sc && strings.HasPrefix(s.key, key+".") {
			return true
		}
	}
	return false
}

// keysAt returns the keys valid directly below prefix ("" or "backoff.")
// in scope, for "did you mean" hints.
func keysAt(sc scope, prefix string) []string {
	var out []string
	for _, s := range settings {
		if s.scope != sc || !strings.HasPrefix(s.key, prefix) {
			continue
		}
		k, _, _ := strings.Cut(strings.TrimPrefix(s.key, prefix), ".")
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// parseText turns the text of a flag, an environment variable or a YAML
// scalar into a value of kind k.
func parseText(k valueKind, s string) (any, error) {
	switch k {
	case kindString:
		return s, nil
	case kindInt:
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return n, nil
	case kindFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return f, nil
	case kindBool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	case kindDuration:
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("invalid duration %q (want a number with a unit: 500ms, 30s, 5m, 1h)", s)
		}
		return d, nil
	case kindBytes:
		return parseBytes(s)
	case kindList:
		var out []string
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return out, nil
	case kindMap:
		out := map[string]string{}
		for _, part := range strings.Split(s, ",") {
			if strings.TrimSpace(part) == "" {
				continue
			}
			k, v, ok := strings.Cut(part, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, fmt.Errorf("%q is not NAME=value", part)
			}
			out[strings.TrimSpace(k)] = v
		}
		return out, nil
	case kindCommand:
		return splitCommand(s)
	}
	return nil, fmt.Errorf("unknown kind %d", k)
}

// formatValue renders a value the way the docs and help show it (and the
// way parseText reads it back).
func formatValue(k valueKind, v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case time.Duration:
		return formatDuration(v)
	case int64:
		if k == kindBytes {
			return formatBytes(v)
		}
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case []string:
		return strings.Join(v, ",")
	case map[string]string:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + v[k]
		}
		return strings.Join(parts, ",")
	default:
		return fmt.Sprint(v)
	}
}

// formatDuration writes 30s, 5m, 1h rather than 5m0s, 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

var byteUnits = []struct {
	name string
	n    int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

// parseBytes reads a size: an integer number of bytes, optionally with a
// unit (B, KB, MB, GB, TB in powers of 1000; KiB, MiB, GiB, TiB in powers
// of 1024).
func parseBytes(s string) (any, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.TrimSpace(t[len(num):])
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("invalid size %q (want bytes, or a number with a unit: 64KiB, 1MiB, 10MB)", s)
	}
	if unit == "" {
		return n, nil
	}
	for _, u := range byteUnits {
		if strings.EqualFold(unit, u.name) {
			if n > math.MaxInt64/u.n {
				return nil, fmt.Errorf("size %q is too large", s)
			}
			return n * u.n, nil
		}
	}
	return nil, fmt.Errorf("invalid size %q: unknown unit %q (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, unit)
}

func formatBytes(n int64) string {
	for _, u := range byteUnits[:4] {
		if n >= u.n && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

// splitCommand splits s into words like a POSIX shell, without expansion:
// blanks separate words, single quotes keep everything, double quotes keep
// everything but \" \\ \$ \`, a backslash outside quotes escapes the next
// character.
func splitCommand(s string) (any, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			cur.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, fmt.Errorf("unterminated \" in %q", s)
			}
			inWord = true
		case c == '\\':
			if i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			}
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// Checks. Each returns an error saying what is wrong with v.

func positive(v any) error {
	if d := v.(time.Duration); d <= 0 {
		return fmt.Errorf("must be positive, got %s", formatDuration(d))
	}
	return nil
}

func nonNegative(v any) error {
	switch v := v.(type) {
	case time.Duration:
		if v < 0 {
			return fmt.Errorf("must not be negative, got %s", formatDuration(v))
		}
	case int:
		if v < 0 {
			return fmt.Errorf("must not be negative, got %d", v)
		}
	case int64:
		if v < 0 {
			return fmt.Errorf("must not be negative, got %d", v)
		}
	}
	return nil
}

func atLeastDuration(lo time.Duration) func(any) error {
	return func(v any) error {
		if d := v.(time.Duration); d < lo {
			return fmt.Errorf("must be at least %s, got %s", formatDuration(lo), formatDuration(d))
		}
		return nil
	}
}

func intRange(lo, hi int) func(any) error {
	return func(v any) error {
		if n := v.(int); n < lo || n > hi {
			return fmt.Errorf("must be %d..%d, got %d", lo, hi, n)
		}
		return nil
	}
}

func bytesRange(lo, hi int64) func(any) error {
	return func(v any) error {
		if n := v.(int64); n < lo || n > hi {
			return fmt.Errorf("must be %s..%s, got %d", formatBytes(lo), formatBytes(hi), n)
		}
		return nil
	}
}

func rate(v any) error {
	if f := v.(float64); f < 0 || f > 1 {
		return fmt.Errorf("must be between 0 and 1, got %v", f)
	}
	return nil
}

func oneOf(choices ...string) func(any) error {
	return func(v any) error {
		if !slices.Contains(choices, v.(string)) {
			return fmt.Errorf("%q: want %s", v, strings.Join(choices, ", "))
		}
		return nil
	}
}

func checkName(v any) error {
	if err := bus.ValidateName(v.(string)); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "bus: "))
	}
	return nil
}

func checkListen(v any) error {
	_, port, err := net.SplitHostPort(v.(string))
	if err != nil {
		return fmt.Errorf("%q is not host:port", v)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: port must be 0..65535", v)
	}
	return nil
}

func checkOptionalListen(v any) error {
	if v.(string) == "" {
		return nil
	}
	return checkListen(v)
}

func checkEnvInherit(v any) error {
	for _, p := range v.([]string) {
		if name := strings.TrimSuffix(p, "*"); p == "" || strings.ContainsAny(name, "=* \t\x00") {
			return fmt.Errorf("%q: want a variable name, or a prefix ending in '*'", p)
		}
	}
	return nil
}

func checkStatuses(v any) error {
	for code, kind := range v.(map[string]string) {
		n, err := strconv.Atoi(code)
		if err != nil || n < 300 || n > 599 {
			return fmt.Errorf("%q: want a status from 300 to 599", code)
		}
		if kind != "transient" && kind != "permanent" {
			return fmt.Errorf("%s: %q: want transient or permanent", code, kind)
		}
	}
	return nil
}

func checkTypes(v any) error {
	types := v.([]string)
	if len(types) == 0 {
		return errors.New("at least one payload type is required")
	}
	seen := map[string]bool{}
	for _, t := range types {
		if !envelope.PayloadType(t).Valid() {
			return fmt.Errorf("%q is not a valid payload type (e.g. task.request)", t)
		}
		if seen[t] {
			return fmt.Errorf("%q is listed twice", t)
		}
		seen[t] = true
	}
	return nil
}

func checkCommand(v any) error {
	cmd := v.([]string)
	if len(cmd) == 0 || cmd[0] == "" {
		return errors.New("needs at least the program")
	}
	return nil
}

func checkEnvNames(v any) error {
	for k := range v.(map[string]string) {
		if k == "" || strings.ContainsAny(k, "= \t\n\x00") {
			return fmt.Errorf("%q is not a variable name", k)
		}
	}
	return nil
}

func checkHTTPURL(v any) error {
	s := v.(string)
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http:// or https:// URL", s)
	}
	return nil
}

// checkPattern accepts a NATS subject pattern: non-empty tokens, "*" as a
// whole token, ">" only as the last one.
func checkPattern(v any) error {
	s := v.(string)
	toks := strings.Split(s, ".")
	for i, tok := range toks {
		switch {
		case tok == "":
			return fmt.Errorf("%q has an empty token", s)
		case tok == ">" && i != len(toks)-1:
			return fmt.Errorf("%q: '>' must be the last token", s)
		case tok != "*" && tok != ">" && strings.ContainsAny(tok, "*> \t"):
			return fmt.Errorf("%q: wildcards must be whole tokens", s)
		}
	}
	return nil
}
