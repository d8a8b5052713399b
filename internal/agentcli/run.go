package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/logsample"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/jetagent/jetagent/internal/ophttp"
	"github.com/jetagent/jetagent/metrics"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/runtime/beacon"
	"github.com/jetagent/jetagent/tracing"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// envConfig names the config file when --config is not given.
const envConfig = "JETAGENT_CONFIG"

func newRunCmd(stderr io.Writer) *cobra.Command {
	var configFile, natsContext string
	var security natsflags.Flags // credentials and TLS: flags and variables only, never the file
	cmd := &cobra.Command{
		Use:   "run [--config FILE]",
		Short: "Run agents, on an embedded NATS server unless --nats is given",
		Long: `run starts agents. Without --config it runs one, set up by flags: by
default the built-in echo agent, which answers every task.request with its own
payload. With --config it runs every agent the YAML file declares, in one
process, on one connection (see docs/configuration.md).

Handler kinds: echo answers with the payload; chaos does the same but fails,
slows down or crashes as often as --fail-rate, --permanent-rate, --latency and
--crash-rate say; exec runs a program per task (envelope JSON on stdin, answer
on stdout; exit 75 retries); http POSTs each task to a URL.

Every setting is also a JETAGENT_* environment variable, shown as [$NAME] after
its flag (--ack-wait is JETAGENT_ACK_WAIT; --nats is JETAGENT_NATS_URL, and the
nats CLI's NATS_URL is read after it).
Precedence: flag, then environment, then the file, then the default. With
--config, agent flags apply to every agent in the file (handler flags to the
agents of their kind).

Without --nats it first starts an embedded NATS server with JetStream (data
under --data-dir, clients on --listen); with --nats it joins that server. It
provisions the streams it needs, then serves tasks until interrupted (Ctrl-C or
SIGTERM), finishing the tasks in hand first.`,
		Example: `  agent run
  agent run --name echo2 --concurrency 8
  agent run --nats nats://127.0.0.1:4222
  agent run --name py --handler exec --exec-command 'python3 agent.py'
  agent run --config examples/sidecar/agents.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			file := configFile
			if !cmd.Flags().Changed("config") {
				file = os.Getenv(envConfig)
			}
			return runAgents(cmd.Context(), configSources{file: file, env: os.LookupEnv, flags: cmd.Flags(), natsContext: natsContext}, &security, stderr)
		},
	}
	cmd.Flags().StringVar(&configFile, "config", "", "YAML `FILE` declaring the agents to run; see docs/configuration.md [$"+envConfig+"]")
	var logs logFlags // read back through the settings, like every flag
	logs.register(cmd)
	registerSettingFlags(cmd.Flags())
	cmd.Flags().StringVar(&natsContext, "context", "", "nats CLI context `NAME` (or .json file): join its server with its credentials (below --nats and $JETAGENT_NATS_URL, $NATS_URL) [$NATS_CONTEXT]")
	security.Register(cmd.Flags())
	groupFlags(cmd, runGroups)
	return cmd
}

// runGroups orders run's help by what the flags are about.
var runGroups = []flagGroup{
	{"Configuration", []string{"config"}},
	{"Connection", append([]string{"nats", "context", "data-dir", "listen", "insecure-listen-without-auth", "prefix", "replicas"}, natsflags.FlagNames()...)},
	{"Delivery", []string{"name", "types", "concurrency", "ack-wait", "max-deliver", "handler-timeout", "max-clock-skew",
		"backoff-base", "backoff-max", "backoff-jitter", "shutdown-timeout", "duplicate-window", "reply-max-age", "tasks-max-bytes"}},
	{"Breaker", []string{"breaker-threshold", "breaker-open-timeout"}},
	{"DLQ and snapshot", []string{"dlq-max-age", "dlq-max-bytes", "dlq-max-msgs", "snapshot-ttl", "snapshot-history", "keep-snapshots"}},
	{"Handler kind", []string{"handler", "fail-rate", "permanent-rate", "latency", "crash-rate", "exec-command", "exec-env", "exec-dir",
		"exec-max-output", "exec-max-stderr", "http-url", "http-header", "http-max-response", "http-max-retry-after"}},
	{"Observability", []string{"log-level", "log-format", "ops-listen"}},
}

// registerSettingFlags defines a flag for every setting that has one (a
// flag defined already, like the shared log flags, only gets its variable
// named in its usage).
func registerSettingFlags(f *pflag.FlagSet) {
	for _, s := range settings {
		if s.flag == "" {
			continue
		}
		if fl := f.Lookup(s.flag); fl != nil {
			fl.Usage += " [$" + s.env + "]"
			continue
		}
		usage := s.usage
		if s.defDoc != "" {
			usage += " (default: " + s.defDoc + ")"
		}
		usage += " [$" + s.env + "]"
		switch s.kind {
		case kindInt:
			f.Int(s.flag, s.def.(int), usage)
		case kindFloat:
			f.Float64(s.flag, s.def.(float64), usage)
		case kindBool:
			f.Bool(s.flag, s.def.(bool), usage)
		case kindDuration:
			f.Duration(s.flag, s.def.(time.Duration), usage)
		case kindList:
			f.StringSlice(s.flag, s.def.([]string), usage)
		case kindMap:
			f.StringToString(s.flag, nil, usage)
			f.Lookup(s.flag).DefValue = "" // not "[]": the usage says it
		default: // string, bytes, command
			def := ""
			if s.defDoc == "" {
				def = formatValue(s.kind, s.def)
			}
			if s.key == "nats.url" {
				f.StringP(s.flag, "s", def, usage) // -s, like the nats CLI
				continue
			}
			f.String(s.flag, def, usage)
		}
	}
}

// problemsError reports configuration problems: flag and environment
// problems alone are a usage error (one line, exit 2); with file problems,
// each is printed on a line of its own and the command fails (exit 1).
func problemsError(stderr io.Writer, file string, probs []problem) error {
	inFile := 0
	for _, p := range probs {
		if p.at.file != "" {
			inFile++
		}
	}
	if inFile == 0 {
		msgs := make([]string, len(probs))
		for i, p := range probs {
			msgs[i] = p.String()
		}
		return cliexit.UsageError(errors.New(strings.Join(msgs, "; ")))
	}
	for _, p := range probs {
		fmt.Fprintln(stderr, p.String())
	}
	if len(probs) == 1 {
		return fmt.Errorf("%s: 1 problem", file)
	}
	return fmt.Errorf("%s: %d problems", file, len(probs))
}

// logger builds the logger the configuration asks for, sampled: warnings
// and errors alike (level, message, agent) beyond a burst of 5 in 10 s are
// counted (in suppressed, when not nil) and summarised instead of written;
// flush writes the summaries still due. Info lines are never sampled: their
// message is often generic and their content in attributes (an exec
// program's stderr, capped per task by the handler).
func (c *runConfig) logger(w io.Writer, suppressed *prometheus.CounterVec) (log *slog.Logger, flush func(), err error) {
	f := logFlags{level: c.logLevel, format: c.logFormat}
	plain, err := f.logger(w)
	if err != nil {
		return nil, nil, err
	}
	opts := logsample.Options{MinLevel: slog.LevelWarn}
	if suppressed != nil {
		opts.Suppressed = func(l slog.Level) { suppressed.WithLabelValues(strings.ToLower(l.String())).Inc() }
	}
	h := logsample.New(plain.Handler(), opts)
	return slog.New(h), func() { h.Flush(context.Background()) }, nil
}

// runAgents runs the configured agents until ctx ends, then stops them all
// gracefully (within shutdown_timeout). Traces follow the OTEL_* variables;
// metrics and health are served when ops.listen is set.
func runAgents(ctx context.Context, src configSources, security *natsflags.Flags, stderr io.Writer) (err error) {
	cfg, probs := loadConfig(src)
	if len(probs) > 0 {
		return problemsError(stderr, src.file, probs)
	}
	if src.natsContext != "" || os.Getenv(natsflags.EnvNATSContext) != "" {
		server := natsflags.Server{Context: src.natsContext}
		url, err := server.URL("")
		if err != nil {
			return cliexit.UsageError(err)
		}
		if cfg.natsURL == "" {
			cfg.natsURL = url
		}
		server.Apply(security)
	}
	var reg *prometheus.Registry
	var m *metrics.Metrics
	var suppressed *prometheus.CounterVec
	if cfg.opsListen != "" {
		reg = metrics.NewRegistry()
		if m, err = metrics.New(reg, metrics.Options{}); err != nil {
			return err
		}
		suppressed = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "jetagent", Name: "log_lines_suppressed_total",
			Help: "Log lines not written because too many alike came at once (a summary line counts them)."}, []string{"level"})
		if err := reg.Register(suppressed); err != nil {
			return err
		}
	}
	log, flushLog, err := cfg.logger(stderr, suppressed)
	if err != nil {
		return err
	}
	defer flushLog()
	built := make([]agentHandler, len(cfg.agents))
	for i, a := range cfg.agents {
		h, err := a.handler(log, stderr)
		if err != nil {
			return fmt.Errorf("agent %s: %w", a.name, err)
		}
		built[i] = agentHandler{agentConfig: a, h: h}
	}
	tr, err := tracing.Setup(ctx, tracing.Options{})
	if err != nil {
		return err
	}

	conn, closeConn, url, err := cfg.connect(ctx, security, log)
	if err != nil {
		return err
	}
	// In this order, on every path: stop the agents, then the endpoint
	// (readyz says stopped while they drain), flush the spans, close.
	var rts []*runtime.Runtime
	var beacons []*beacon.Beacon
	var ops *ophttp.Server
	defer func() {
		for _, bc := range beacons {
			bc.Stop()
		}
		if serr := stopAll(rts, cfg.shutdownTimeout, log); err == nil {
			err = serr
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if ops != nil {
			_ = ops.Stop(sctx)
		}
		_ = tr.Shutdown(sctx)
		closeConn()
	}()
	if err := bus.Provision(ctx, conn.JetStream(), cfg.topology); err != nil {
		if natsflags.NoResponders(err) {
			if jerr := natsflags.CheckJetStream(ctx, conn.JetStream()); jerr != nil {
				return fmt.Errorf("%s: %w", url, jerr)
			}
		}
		return err
	}
	provisionAgents(ctx, conn, cfg.topology, built, log)
	checks := []ophttp.Check{ophttp.Connection(conn)}
	for _, a := range built {
		rc := a.runtime
		rc.Logger = log
		rc.TracerProvider = tr.Provider()
		var obs *metrics.Agent
		if m != nil {
			obs = m.Agent(a.name)
			rc.Observer = obs
		}
		var bc *beacon.Beacon // status reports for agent console
		if cfg.statusInterval > 0 {
			bc = beacon.New(conn, cfg.topology, a.name, beacon.Options{Interval: cfg.statusInterval})
			rc.Observer = bc.Observer(rc.Observer)
		}
		rt, err := runtime.New(conn, rc)
		if err != nil {
			return fmt.Errorf("agent %s: %w", a.name, err)
		}
		for _, typ := range a.types {
			rt.Handle(typ, a.h)
		}
		if err := rt.Start(ctx); err != nil {
			return err
		}
		rts = append(rts, rt)
		if bc != nil {
			bc.Start(rt)
			beacons = append(beacons, bc)
		}
		checks = append(checks, ophttp.Runtime(rt))
		if obs != nil {
			if err := obs.Watch(rt); err != nil {
				return err
			}
		}
	}
	if reg != nil {
		health := make([]ophttp.Check, len(rts))
		for i, rt := range rts {
			health[i] = ophttp.Alive("agent "+rt.Agent(), rt)
		}
		if ops, err = ophttp.New(ophttp.Config{Addr: cfg.opsListen, Gatherer: reg, Checks: checks, Health: health, Logger: log}); err != nil {
			return err
		}
		if err := ops.Start(ctx); err != nil {
			return err
		}
		log.Info("serving /metrics, /healthz, /readyz", "addr", ops.Addr().String())
	}
	names := make([]string, len(built))
	for i, a := range built {
		names[i] = a.name
	}
	log.Info("ready; try: "+sendHint(url, cfg.topology.Prefix, names[0]), "agents", strings.Join(names, ","))
	parts := make([]part, 0, len(rts)+1)
	for _, rt := range rts {
		parts = append(parts, rt)
	}
	if ops != nil {
		parts = append(parts, ops)
	}
	if err := runUntilOneEnds(ctx, parts); err != nil {
		log.Info("stopping: a part of the process ended; finishing the tasks in hand", "err", err)
		return cliexit.WithCode(cliexit.Failure, err) // the deferred stop's error, if any, is dropped: this one says why
	}
	log.Info("stopping: finishing tasks in hand (interrupt again to quit at once)")
	return nil // the deferred stop reports its error
}

// part is a long-running part of the process that can end on its own
// (a lifecycle.Service, seen from the group that watches it).
type part interface {
	Done() <-chan struct{}
	Err() error
}

// runUntilOneEnds runs a group (github.com/oklog/run) of one actor per
// part and one for ctx, and returns when the first of them returns: nil
// when ctx ended (a signal), or the error of the part that ended on its
// own (a part that ended without one, stopped by someone else, ends the
// group with errPartStopped). The group only watches: the parts are
// stopped afterwards, in runAgents's order (the agents before the
// endpoint that reports on them), by its deferred stop.
func runUntilOneEnds(ctx context.Context, parts []part) error {
	var g run.Group
	quit := make(chan struct{})
	var once sync.Once
	interrupt := func(error) { once.Do(func() { close(quit) }) }
	g.Add(func() error {
		select {
		case <-ctx.Done():
		case <-quit:
		}
		return nil
	}, interrupt)
	for _, p := range parts {
		g.Add(func() error {
			select {
			case <-p.Done():
				if err := p.Err(); err != nil {
					return err
				}
				return errPartStopped
			case <-quit:
				return nil
			}
		}, interrupt)
	}
	return g.Run()
}

// errPartStopped ends the group when a part was stopped from elsewhere:
// the process must not go on without it.
var errPartStopped = errors.New("a part of the process stopped")

// sendHint is the command that sends agent a task on this server: --nats
// and --prefix only when they differ from send's defaults.
func sendHint(url, prefix, agent string) string {
	hint := "agent send"
	if url != "" && url != bus.DefaultURL {
		hint += " --nats " + url
	}
	if prefix != "" && prefix != bus.DefaultPrefix {
		hint += " --prefix " + prefix
	}
	return hint + " --to " + agent + ` --payload '{"hello":"world"}'`
}

type agentHandler struct {
	agentConfig
	h runtime.Handler
}

// stopAll stops the runtimes at once, in parallel, within timeout, and
// logs what each did. It returns the first error.
func stopAll(rts []*runtime.Runtime, timeout time.Duration, log *slog.Logger) error {
	if len(rts) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	errs := make([]error, len(rts))
	var wg sync.WaitGroup
	for i, rt := range rts {
		wg.Go(func() { errs[i] = rt.Stop(ctx) })
	}
	wg.Wait()
	for _, rt := range rts {
		st := rt.Stats()
		log.Info("stopped", "agent", rt.Agent(), "succeeded", st.Succeeded, "retried", st.Retried, "dead_lettered", st.DeadLettered, "returned", st.Returned)
	}
	return errors.Join(errs...)
}

// handler builds the agent's handler, checking first that an exec
// program can be found.
func (a agentConfig) handler(log *slog.Logger, stderr io.Writer) (runtime.Handler, error) {
	switch a.kind {
	case handlerChaos:
		c := a.chaos
		c.Crash = func() {
			fmt.Fprintln(stderr, "agent: chaos: crashing on purpose")
			os.Exit(3)
		}
		return runtime.Chaos(c), nil
	case handlerExec:
		if err := findProgram(a.exec.Command[0], a.exec.Dir); err != nil {
			return nil, err
		}
		c := a.exec
		c.Logger = log
		return handlers.Exec(c)
	case handlerHTTP:
		return handlers.HTTP(a.http)
	default:
		return runtime.Echo, nil
	}
}

// findProgram checks that an exec program exists: looked up in PATH
// without a slash, relative to dir with one.
func findProgram(prog, dir string) error {
	if !strings.Contains(prog, "/") {
		if _, err := exec.LookPath(prog); err != nil {
			return fmt.Errorf("handler command: program %q not found in PATH", prog)
		}
		return nil
	}
	path := prog
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("handler command: %w", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("handler command: %s is not an executable file", path)
	}
	return nil
}

// connect starts the embedded server or joins nats.url, and returns the
// connection, the function that closes it (and stops the server), and
// the URL other processes join it with (secrets redacted).
func (c *runConfig) connect(ctx context.Context, security *natsflags.Flags, log *slog.Logger) (*bus.Conn, func(), string, error) {
	if c.natsURL != "" {
		opts, err := security.Options()
		if errors.Is(err, natsflags.ErrConflict) {
			return nil, nil, "", cliexit.UsageError(err)
		}
		if err != nil {
			return nil, nil, "", err
		}
		conn, err := bus.Connect(ctx, c.natsURL, append(opts, natsflags.LogAsyncErrors(log))...)
		if err != nil {
			return nil, nil, "", fmt.Errorf("cannot reach NATS at %s (check --nats): %w", bus.RedactURL(c.natsURL), err)
		}
		log.Info("connected to NATS", "url", bus.RedactURL(c.natsURL))
		return conn, func() { drain(conn) }, bus.RedactURL(c.natsURL), nil
	}
	if security.Configured() {
		log.Warn("credentials and TLS settings are ignored: they apply when joining a server (--nats), not to the embedded one")
	}
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: c.dataDir, Listen: c.listen, InsecureListenWithoutAuth: c.insecureListen})
	var locked *bus.DataDirLockedError
	if errors.As(err, &locked) {
		if locked.Owner.URL == "" {
			return nil, nil, "", fmt.Errorf("%w: pass another --data-dir, or stop that process", err)
		}
		return nil, nil, "", fmt.Errorf("%w: join that one with --nats %s, or pass another --data-dir", err, locked.Owner.URL)
	}
	if err != nil {
		return nil, nil, "", err
	}
	conn, err := srv.Connect(ctx)
	if err != nil {
		shutdownServer(srv)
		return nil, nil, "", err
	}
	log.Info("embedded NATS server ready", "url", srv.ClientURL(), "data_dir", srv.DataDir())
	return conn, func() { drain(conn); shutdownServer(srv) }, srv.ClientURL(), nil
}

func shutdownServer(srv *bus.EmbeddedServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

func drain(conn *bus.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Drain(ctx)
}

// provisionAgents creates (with an administrator's rights) or checks each
// agent's own buckets up front, so that `agent run` with such a user once
// provisions everything. A failure is only logged: the runtime ensures the
// buckets again when a task first needs one, and an agent that never
// checkpoints needs none.
func provisionAgents(ctx context.Context, conn *bus.Conn, topo bus.Topology, agents []agentHandler, log *slog.Logger) {
	for _, a := range agents {
		if err := bus.ProvisionAgent(ctx, conn.JetStream(), topo, a.name); err != nil {
			log.Warn("the agent's own buckets are not provisioned: tasks that checkpoint fail, and every delivery counts as an attempt, until they are (bus.ProvisionAgent with an administrator)",
				"agent", a.name, "err", err)
		}
	}
}
