package agentcli

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/spf13/pflag"
)

// runConfig is the resolved configuration of `agent run`.
type runConfig struct {
	natsURL, dataDir, listen string
	insecureListen           bool
	logLevel, logFormat      string
	opsListen                string
	statusInterval           time.Duration
	shutdownTimeout          time.Duration
	topology                 bus.Topology
	agents                   []agentConfig
}

// agentConfig is one agent, resolved: its runtime configuration (Logger
// and Snapshots left for the caller) and its handler's.
type agentConfig struct {
	name    string
	kind    string
	types   []envelope.PayloadType
	runtime runtime.Config
	chaos   runtime.ChaosConfig // kind chaos (Crash left for the caller)
	exec    handlers.ExecConfig // kind exec (Logger left for the caller)
	http    handlers.HTTPConfig // kind http
}

// get returns the value of key in sc: the one set, or the default.
func (v values) get(sc scope, key string) any {
	if e, ok := v[key]; ok && !e.bad {
		return e.v
	}
	return lookupSetting(sc, key).def
}

func (a *agentDecl) kind() string {
	return a.vals.get(scopeAgent, "handler.kind").(string)
}

// override applies the environment, then the flags, over the file: for
// each setting the flag wins over the variable, which wins over the file.
// handler.kind goes first, so that handler settings reach the agents of
// their kind only. Agent settings apply to every agent (name only when
// there is one). Empty variables count as unset.
func (d *configDoc) override(env func(string) (string, bool), flags *pflag.FlagSet) []problem {
	var probs []problem
	kind := lookupSetting(scopeAgent, "handler.kind")
	ordered := []*setting{kind}
	for _, s := range settings {
		if s != kind && s.scope != scopeRule {
			ordered = append(ordered, s)
		}
	}
	for _, s := range ordered {
		envName := s.env
		if s.key == "nats.url" && env != nil {
			if text, ok := env(envName); !ok || text == "" {
				envName = natsflags.EnvNATSURL // the nats CLI's, after ours
			}
		}
		if env != nil && envName != "" {
			if text, ok := env(envName); ok && text != "" {
				at := origin{env: envName}
				v, err := parseText(s.kind, text)
				if err != nil {
					probs = append(probs, problem{at: at, msg: err.Error()})
				} else {
					probs = append(probs, d.apply(s, v, at)...)
				}
			}
		}
		if flags != nil && s.flag != "" {
			if f := flags.Lookup(s.flag); f != nil && f.Changed {
				at := origin{flag: s.flag}
				v, err := flagValue(flags, s)
				if err != nil {
					probs = append(probs, problem{at: at, msg: err.Error()})
				} else {
					probs = append(probs, d.apply(s, v, at)...)
				}
			}
		}
	}
	return probs
}

// flagValue reads a changed flag as a value of its setting's kind.
func flagValue(flags *pflag.FlagSet, s *setting) (any, error) {
	switch s.kind {
	case kindList:
		return flags.GetStringSlice(s.flag)
	case kindMap:
		return flags.GetStringToString(s.flag)
	default:
		return parseText(s.kind, flags.Lookup(s.flag).Value.String())
	}
}

// apply sets s to v (from at) where it belongs.
func (d *configDoc) apply(s *setting, v any, at origin) []problem {
	if s.check != nil {
		if err := s.check(v); err != nil {
			return []problem{{at: at, msg: err.Error()}}
		}
	}
	if s.scope == scopeGlobal {
		d.global[s.key] = entry{v: v, at: at}
		return nil
	}
	if s.key == "name" && len(d.agents) > 1 {
		return []problem{{at: at, msg: fmt.Sprintf("names one agent, but %s declares %d", d.file, len(d.agents))}}
	}
	reached := 0
	for _, a := range d.agents {
		if s.handler != "" && a.kind() != s.handler {
			continue
		}
		a.vals[s.key] = entry{v: v, at: at}
		reached++
	}
	if reached == 0 && at.flag != "" && s.handler != "" {
		return []problem{{at: at, msg: fmt.Sprintf("a setting of handler kind %s, and no agent has that kind (add --handler %s)", s.handler, s.handler)}}
	}
	return nil
}

// resolve turns the declarations into a runConfig, reporting what only
// shows across settings: missing names, duplicates, a handler kind
// without its command or URL, a backoff base above its max; and, for a
// run, what the embedded server cannot do (checkEmbedded).
func (d *configDoc) resolve(run bool) (*runConfig, []problem) {
	g := func(key string) any { return d.global.get(scopeGlobal, key) }
	cfg := &runConfig{
		natsURL:         g("nats.url").(string),
		dataDir:         g("nats.embedded.data_dir").(string),
		listen:          g("nats.embedded.listen").(string),
		insecureListen:  g("nats.embedded.insecure_listen_without_auth").(bool),
		logLevel:        g("log.level").(string),
		logFormat:       g("log.format").(string),
		opsListen:       g("ops.listen").(string),
		statusInterval:  g("ops.status_interval").(time.Duration),
		shutdownTimeout: g("shutdown_timeout").(time.Duration),
		topology: bus.Topology{
			Prefix:          g("topology.prefix").(string),
			Replicas:        g("topology.replicas").(int),
			SnapshotTTL:     g("topology.snapshot_ttl").(time.Duration),
			SnapshotHistory: g("topology.snapshot_history").(int),
			DLQMaxAge:       g("topology.dlq_max_age").(time.Duration),
			DLQMaxBytes:     g("topology.dlq_max_bytes").(int64),
			DLQMaxMsgs:      int64(g("topology.dlq_max_msgs").(int)),
			TasksMaxBytes:   g("topology.tasks_max_bytes").(int64),
			ReplyMaxAge:     g("topology.reply_max_age").(time.Duration),
			DuplicateWindow: g("topology.duplicate_window").(time.Duration),
		},
	}
	var probs []problem
	if run { // a file validated alone may get its nats.url from the environment
		probs = d.checkEmbedded(cfg)
	}
	names := map[string]origin{}
	for _, a := range d.agents {
		ac, ps := d.resolveAgent(a, cfg.topology)
		probs = append(probs, ps...)
		if ac.name == "" {
			continue
		}
		at := a.vals["name"].at
		if first, dup := names[ac.name]; dup {
			probs = append(probs, problem{at: at, path: a.path + ".name", msg: fmt.Sprintf("agent %q is declared twice (first at %s)", ac.name, first)})
			continue
		}
		names[ac.name] = at
		cfg.agents = append(cfg.agents, ac)
	}
	return cfg, probs
}

// checkEmbedded reports, before anything starts, what the embedded server
// (no nats.url) cannot do: replicas above 1 (it is one server, not a
// cluster), and a listen address reachable from other machines while it
// has no authentication.
func (d *configDoc) checkEmbedded(cfg *runConfig) []problem {
	if cfg.natsURL != "" {
		return nil
	}
	var probs []problem
	at := func(key string) origin {
		if e, ok := d.global[key]; ok {
			return e.at
		}
		return origin{file: d.file}
	}
	if r := cfg.topology.Replicas; r > 1 {
		probs = append(probs, problem{at: at("topology.replicas"), path: "topology.replicas",
			msg: fmt.Sprintf("%d replicas need a NATS cluster, and the embedded server is one server: join a cluster with --nats, or keep 1", r)})
	}
	if host, _, err := net.SplitHostPort(cfg.listen); err == nil && !bus.IsLoopback(host) && !cfg.insecureListen {
		probs = append(probs, problem{at: at("nats.embedded.listen"), path: "nats.embedded.listen",
			msg: fmt.Sprintf("%q is not a loopback address, and the embedded server has no authentication: whoever reaches it could read, send and delete every task. Listen on 127.0.0.1, join a server that authenticates (--nats), or pass --insecure-listen-without-auth", cfg.listen)})
	}
	return probs
}

func (d *configDoc) resolveAgent(a *agentDecl, topo bus.Topology) (agentConfig, []problem) {
	var probs []problem
	get := func(key string) any { return a.vals.get(scopeAgent, key) }
	originOf := func(key string) origin {
		if e, ok := a.vals[key]; ok {
			return e.at
		}
		return a.at
	}

	ac := agentConfig{kind: a.kind()}
	switch e, ok := a.vals["name"]; {
	case ok && e.bad: // reported
	case ok || d.file == "":
		ac.name = get("name").(string)
	default:
		probs = append(probs, problem{at: a.at, path: a.path, msg: "name is required"})
	}
	for _, t := range get("types").([]string) {
		ac.types = append(ac.types, envelope.PayloadType(t))
	}

	base, maxDelay := get("backoff.base").(time.Duration), get("backoff.max").(time.Duration)
	if base > maxDelay && !a.vals["backoff.base"].bad && !a.vals["backoff.max"].bad {
		key := "backoff.base"
		if _, set := a.vals[key]; !set {
			key = "backoff.max"
		}
		probs = append(probs, problem{at: originOf(key), path: a.path + "." + key,
			msg: fmt.Sprintf("backoff.base %s is above backoff.max %s", formatDuration(base), formatDuration(maxDelay))})
	}
	if ttl, w := get("exec_record_ttl").(time.Duration), topo.DuplicateWindowOrDefault(); ttl != 0 && ttl < w && get("exec_records").(bool) && !a.vals["exec_record_ttl"].bad {
		probs = append(probs, problem{at: originOf("exec_record_ttl"), path: a.path + ".exec_record_ttl",
			msg: fmt.Sprintf("exec_record_ttl %s is shorter than topology.duplicate_window %s: a re-send between the two would run again", formatDuration(ttl), formatDuration(w))})
	}
	breaker := resilience.BreakerSettings{
		Threshold:   get("breaker.threshold").(int),
		OpenTimeout: get("breaker.open_timeout").(time.Duration),
	}
	var rules []resilience.BreakerRule
	for _, r := range a.rules {
		pattern, ok := r.vals["pattern"]
		if !ok || pattern.bad {
			continue // reported while reading
		}
		s := breaker
		if e, ok := r.vals["threshold"]; ok && !e.bad {
			s.Threshold = e.v.(int)
		}
		if e, ok := r.vals["open_timeout"]; ok && !e.bad {
			s.OpenTimeout = e.v.(time.Duration)
		}
		rules = append(rules, resilience.BreakerRule{Pattern: pattern.v.(string), Settings: s})
	}
	ac.runtime = runtime.Config{
		Agent:    ac.name,
		Topology: topo,
		Consumer: bus.ConsumerConfig{
			AckWait:    get("ack_wait").(time.Duration),
			MaxDeliver: get("max_deliver").(int),
			Prefetch:   get("prefetch").(int),
		},
		Concurrency:        get("concurrency").(int),
		HandlerTimeout:     get("handler_timeout").(time.Duration),
		Backoff:            resilience.Backoff{Base: base, Max: maxDelay, NoJitter: !get("backoff.jitter").(bool)},
		Breaker:            breaker,
		BreakerRules:       rules,
		KeepSnapshots:      get("keep_snapshots").(bool),
		ExecRecordTTL:      get("exec_record_ttl").(time.Duration),
		DisableExecRecords: !get("exec_records").(bool),
		CancelMarkerTTL:    get("cancel_marker_ttl").(time.Duration),
		Limits:             envelope.Limits{MaxClockSkew: get("max_clock_skew").(time.Duration)},
	}

	needs := func(key, flag string) {
		probs = append(probs, problem{at: originOf("handler.kind"), path: a.path + ".handler",
			msg: fmt.Sprintf("handler kind %s needs %s (in the file, --%s or $%s)", ac.kind, key, flag, lookupSetting(scopeAgent, key).env)})
	}
	switch ac.kind {
	case handlerChaos:
		ac.chaos = runtime.ChaosConfig{
			FailRate:      get("handler.fail_rate").(float64),
			PermanentRate: get("handler.permanent_rate").(float64),
			Latency:       get("handler.latency").(time.Duration),
			CrashRate:     get("handler.crash_rate").(float64),
		}
	case handlerExec:
		cmd, ok := a.vals["handler.command"]
		if !ok {
			needs("handler.command", "exec-command")
		}
		if !ok || cmd.bad {
			break
		}
		ac.exec = handlers.ExecConfig{
			Command:    cmd.v.([]string),
			Env:        get("handler.env").(map[string]string),
			EnvInherit: get("handler.env_inherit").([]string),
			Dir:        d.execDir(a),
			MaxOutput:  int(get("handler.max_output").(int64)),
			MaxStderr:  int(get("handler.max_stderr").(int64)),
		}
	case handlerHTTP:
		u, ok := a.vals["handler.url"]
		if !ok {
			needs("handler.url", "http-url")
		}
		if !ok || u.bad {
			break
		}
		ac.http = handlers.HTTPConfig{
			URL:                   u.v.(string),
			Header:                get("handler.headers").(map[string]string),
			MaxResponse:           get("handler.max_response").(int64),
			MaxRetryAfter:         get("handler.max_retry_after").(time.Duration),
			Statuses:              statusKinds(get("handler.statuses").(map[string]string)),
			ResponseHeaderTimeout: get("handler.response_header_timeout").(time.Duration),
		}
	}
	return ac, probs
}

// statusKinds turns handler.statuses (checked by checkStatuses) into
// HTTPConfig.Statuses; nil when empty.
func statusKinds(m map[string]string) map[int]resilience.Kind {
	if len(m) == 0 {
		return nil
	}
	out := make(map[int]resilience.Kind, len(m))
	for code, kind := range m {
		n, _ := strconv.Atoi(code)
		out[n] = resilience.KindTransient
		if kind == "permanent" {
			out[n] = resilience.KindPermanent
		}
	}
	return out
}

// execDir is the exec program's working directory: handler.dir (relative
// to the config file's directory when it comes from the file), else the
// file's directory, else the agent's working directory ("").
func (d *configDoc) execDir(a *agentDecl) string {
	e, ok := a.vals["handler.dir"]
	if !ok || e.bad {
		return d.dir
	}
	dir := e.v.(string)
	if e.at.file != "" && d.dir != "" && !filepath.IsAbs(dir) {
		return filepath.Join(d.dir, dir)
	}
	return dir
}
