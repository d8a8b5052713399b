package agentcli

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/spf13/pflag"
)

// writeConfig writes a config file (tabs in text become two spaces, so
// tests can indent YAML like Go) and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agents.yaml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(text, "\t", "  ")), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// problemsOf validates text alone and returns its problems as
// "LINE:COL: path: message" (the file name dropped).
func problemsOf(t *testing.T, text string) []string {
	t.Helper()
	path := writeConfig(t, text)
	_, probs := loadConfig(configSources{file: path})
	out := make([]string, len(probs))
	for i, p := range probs {
		out[i] = strings.TrimPrefix(p.String(), path+":")
	}
	return out
}

func TestValidateReportsEachProblemWithItsPosition(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // exact "line:col: path: message"
	}{
		{"a typo in a key", `
agents:
	- name: a
		ack_wiat: 30s
`, []string{`4:5: agents[0].ack_wiat: unknown key (did you mean "ack_wait"?)`}},
		{"a typo in a nested key", `
agents:
	- name: a
		backoff:
			bsae: 1s
`, []string{`5:7: agents[0].backoff.bsae: unknown key (did you mean "base"?)`}},
		{"an unknown top-level key", `
agnets: []
`, []string{
			`2:1: agnets: unknown key (did you mean "agents"?)`,
			`2:1: no agents: list: declare at least one agent`,
		}},
		{"an invalid duration", `
agents:
	- name: a
		handler_timeout: 3 minutes
`, []string{`4:22: agents[0].handler_timeout: invalid duration "3 minutes" (want a number with a unit: 500ms, 30s, 5m, 1h)`}},
		{"a duration without a unit", `
agents:
	- name: a
		ack_wait: 30
`, []string{`4:15: agents[0].ack_wait: invalid duration "30" (want a number with a unit: 500ms, 30s, 5m, 1h)`}},
		{"an ack wait below a second", `
agents:
	- name: a
		ack_wait: 10ms
`, []string{`4:15: agents[0].ack_wait: must be at least 1s, got 10ms`}},
		{"a rate out of range", `
agents:
	- name: a
		handler:
			kind: chaos
			fail_rate: 1.5
`, []string{`6:18: agents[0].handler.fail_rate: must be between 0 and 1, got 1.5`}},
		{"a name that is not a NATS token", `
agents:
	- name: my.agent
`, []string{`3:11: agents[0].name: invalid name: "my.agent": only letters, digits, '-' and '_' are allowed`}},
		{"duplicate agent names", `
agents:
	- name: a
	- name: b
	- name: a
`, []string{`5:11: agents[2].name: agent "a" is declared twice (first at ` + "FILE" + `:3:11)`}},
		{"an exec handler without command", `
agents:
	- name: a
		handler:
			kind: exec
`, []string{`5:13: agents[0].handler: handler kind exec needs handler.command (in the file, --exec-command or $JETAGENT_EXEC_COMMAND)`}},
		{"an exec handler with an empty command", `
agents:
	- name: a
		handler: {kind: exec, command: []}
`, []string{`4:36: agents[0].handler.command: needs at least the program`}},
		{"an http handler with a non-http URL", `
agents:
	- name: a
		handler:
			kind: http
			url: ftp://127.0.0.1/x
`, []string{`6:12: agents[0].handler.url: "ftp://127.0.0.1/x" is not an http:// or https:// URL`}},
		{"a setting of another handler kind", `
agents:
	- name: a
		handler:
			kind: exec
			command: [./a]
			url: http://127.0.0.1:8080/
`, []string{`7:12: agents[0].handler.url: a setting of handler kind http, but this agent's kind is exec`}},
		{"an unknown handler kind", `
agents:
	- name: a
		handler: {kind: python}
`, []string{`4:21: agents[0].handler.kind: "python": want echo, chaos, exec, http`}},
		{"a missing name", `
agents:
	- concurrency: 2
`, []string{`3:5: agents[0]: name is required`}},
		{"a key given twice", `
agents:
	- name: a
		concurrency: 2
		concurrency: 3
`, []string{`5:5: agents[0].concurrency: given twice (first on line 4)`}},
		{"a list where a value goes", `
agents:
	- name: a
		concurrency: [1, 2]
`, []string{`4:18: agents[0].concurrency: want a single value, not a list`}},
		{"an empty value", `
agents:
	- name: a
		max_deliver:
`, []string{`4:17: agents[0].max_deliver: missing value`}},
		{"a bad payload type", `
agents:
	- name: a
		types: [task.request, "no spaces"]
`, []string{`4:12: agents[0].types: "no spaces" is not a valid payload type (e.g. task.request)`}},
		{"backoff base above max", `
agents:
	- name: a
		backoff: {base: 2m, max: 1m}
`, []string{`4:21: agents[0].backoff.base: backoff.base 2m is above backoff.max 1m`}},
		{"an execution record shorter than the duplicate window", `
topology: {duplicate_window: 5m}
agents:
	- name: a
		exec_record_ttl: 1m
`, []string{`5:22: agents[0].exec_record_ttl: exec_record_ttl 1m is shorter than topology.duplicate_window 5m: a re-send between the two would run again`}},
		{"a bad breaker rule", `
agents:
	- name: a
		breaker:
			rules:
				- pattern: jetagent.tasks.>.x
					treshold: 2
				- threshold: 0
`, []string{
			`6:20: agents[0].breaker.rules[0].pattern: "jetagent.tasks.>.x": '>' must be the last token`,
			`7:11: agents[0].breaker.rules[0].treshold: unknown key (did you mean "threshold"?)`,
			`8:11: agents[0].breaker.rules[1]: pattern is required`,
			`8:22: agents[0].breaker.rules[1].threshold: must be 1..1048576, got 0`,
		}},
		{"topology out of range", `
topology:
	replicas: 7
	snapshot_history: 0
	dlq_max_bytes: 10 potatoes
	prefix: a.b
agents:
	- name: a
`, []string{
			`3:13: topology.replicas: must be 1..5, got 7`,
			`4:21: topology.snapshot_history: must be 1..64, got 0`,
			`5:18: topology.dlq_max_bytes: invalid size "10 potatoes": unknown unit "potatoes" (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)`,
			`6:11: topology.prefix: invalid name: "a.b": only letters, digits, '-' and '_' are allowed`,
		}},
		{"log and nats settings", `
log: {level: loud, format: xml}
nats:
	embedded:
		listen: nowhere
agents:
	- name: a
`, []string{
			`2:14: log.level: "loud": want debug, info, warn, error`,
			`2:28: log.format: "xml": want text, json`,
			`5:13: nats.embedded.listen: "nowhere" is not host:port`,
		}},
		{"no agents", `
log: {level: debug}
agents: []
`, []string{`3:1: agents: no agents declared`}},
		{"an empty file", ``, []string{`1:1: no agents declared (the file is empty)`}},
		{"invalid YAML", "log:\n  level: info\n    format: json\n", []string{`3: invalid YAML: mapping values are not allowed in this context`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := problemsOf(t, c.yaml)
			want := c.want
			if len(got) != len(want) {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			for i := range want {
				if !matchProblem(got[i], want[i]) {
					t.Errorf("problem %d:\n got %s\nwant %s", i, got[i], want[i])
				}
			}
		})
	}
}

// matchProblem compares a problem with its expectation, where FILE stands
// for the config file's path.
func matchProblem(got, want string) bool {
	before, after, ok := strings.Cut(want, "FILE")
	if !ok {
		return got == want
	}
	return strings.HasPrefix(got, before) && strings.HasSuffix(got, after)
}

func TestValidateReportsEveryProblemAtOnce(t *testing.T) {
	got := problemsOf(t, `
nats:
	urll: nats://127.0.0.1:4222
topology:
	replicas: 0
agents:
	- name: ok-agent
	- name: bad.name
		ack_wiat: 30s
		handler: {kind: exec}
	- name: web
		handler:
			kind: http
			url: localhost:8080
		backoff: {base: soon}
	- name: web
		concurrency: 0
`)
	want := []string{
		`3:3: nats.urll: unknown key`,
		`5:13: topology.replicas`,
		`8:11: agents[1].name`,
		`9:5: agents[1].ack_wiat`,
		`10:21: agents[1].handler: handler kind exec needs handler.command`,
		`14:12: agents[2].handler.url`,
		`15:21: agents[2].backoff.base: invalid duration "soon"`,
		`16:11: agents[3].name: agent "web" is declared twice`,
		`17:18: agents[3].concurrency: must be 1..4096, got 0`,
	}
	if len(got) != len(want) {
		t.Fatalf("%d problems:\n%s\nwant %d", len(got), strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("problem %d:\n got %s\nwant %s...", i, got[i], want[i])
		}
	}
}

const twoAgents = `
# Two agents on one embedded server.
nats:
	embedded:
		listen: 127.0.0.1:0
log:
	level: warn
topology:
	prefix: demo
	snapshot_ttl: 24h
	dlq_max_bytes: 64MiB
agents:
	- name: upper
		concurrency: 8
		ack_wait: 10s
		max_deliver: 5
		handler_timeout: 30s
		exec_record_ttl: 10m
		types: [task.request, task.update]
		backoff: {base: 200ms, max: 10s, jitter: false}
		breaker:
			threshold: 3
			open_timeout: 15s
			rules:
				- pattern: demo.tasks.upper.task.update
					threshold: 10
		handler:
			kind: exec
			command: python3 -u "my agent.py"
			env: {MODE: fast}
			dir: scripts
			max_output: 64KiB
	- name: web
		keep_snapshots: true
		exec_records: false
		handler:
			kind: http
			url: http://127.0.0.1:8080/task
			headers: {Authorization: Bearer x}
`

func TestValidConfigResolves(t *testing.T) {
	path := writeConfig(t, twoAgents)
	var out, errb bytes.Buffer
	if err := validateConfigFile(path, &out, &errb); err != nil || out.String() != "ok: 2 agents (upper, web)\n" {
		t.Fatalf("validate: %v, stdout %q, stderr %q", err, out.String(), errb.String())
	}
	cfg, probs := loadConfig(configSources{file: path})
	if probs != nil {
		t.Fatal(probs)
	}
	topo := bus.Topology{Prefix: "demo", Replicas: 1, SnapshotTTL: 24 * time.Hour, SnapshotHistory: bus.DefaultSnapshotHistory,
		DLQMaxBytes: 64 << 20, ReplyMaxAge: bus.DefaultReplyMaxAge, DuplicateWindow: bus.DefaultDuplicateWindow}
	if cfg.topology != topo || cfg.listen != "127.0.0.1:0" || cfg.logLevel != "warn" || cfg.natsURL != "" {
		t.Errorf("global settings %+v", cfg)
	}
	up := cfg.agents[0]
	wantRT := runtime.Config{
		Agent:          "upper",
		Topology:       topo,
		Consumer:       bus.ConsumerConfig{AckWait: 10 * time.Second, MaxDeliver: 5, Prefetch: bus.DefaultPrefetch},
		Concurrency:    8,
		HandlerTimeout: 30 * time.Second,
		Backoff:        resilience.Backoff{Base: 200 * time.Millisecond, Max: 10 * time.Second, NoJitter: true},
		Breaker:        resilience.BreakerSettings{Threshold: 3, OpenTimeout: 15 * time.Second},
		BreakerRules: []resilience.BreakerRule{{Pattern: "demo.tasks.upper.task.update",
			Settings: resilience.BreakerSettings{Threshold: 10, OpenTimeout: 15 * time.Second}}},
		CancelMarkerTTL: runtime.DefaultCancelMarkerTTL,
		ExecRecordTTL:   10 * time.Minute,
		Limits:          envelope.Limits{MaxClockSkew: envelope.DefaultMaxClockSkew},
	}
	if !reflect.DeepEqual(up.runtime, wantRT) {
		t.Errorf("runtime config\n got %+v\nwant %+v", up.runtime, wantRT)
	}
	wantExec := handlers.ExecConfig{Command: []string{"python3", "-u", "my agent.py"}, Env: map[string]string{"MODE": "fast"},
		Dir: filepath.Join(filepath.Dir(path), "scripts"), MaxOutput: 64 << 10, MaxStderr: handlers.DefaultMaxStderr}
	if up.kind != handlerExec || !reflect.DeepEqual(up.exec, wantExec) || !slices.Equal(up.types, []envelope.PayloadType{envelope.TaskRequest, envelope.TaskUpdate}) {
		t.Errorf("upper: kind %s, exec %+v, types %v", up.kind, up.exec, up.types)
	}
	web := cfg.agents[1]
	wantHTTP := handlers.HTTPConfig{URL: "http://127.0.0.1:8080/task", Header: map[string]string{"Authorization": "Bearer x"},
		MaxResponse: handlers.DefaultMaxResponse, MaxRetryAfter: handlers.DefaultMaxRetryAfter}
	if web.kind != handlerHTTP || !reflect.DeepEqual(web.http, wantHTTP) || !web.runtime.KeepSnapshots || !web.runtime.DisableExecRecords {
		t.Errorf("web: %+v", web)
	}
}

// The defaults of a run without file, environment or flags are the
// library's own: what runtime.Config and bus.Topology do with zero values.
func TestDefaultsAreTheLibraryDefaults(t *testing.T) {
	cfg, probs := loadConfig(configSources{})
	if probs != nil {
		t.Fatal(probs)
	}
	if cfg.natsURL != "" || cfg.dataDir != "" || cfg.listen != bus.DefaultListen || cfg.shutdownTimeout != runtime.DefaultShutdownTimeout ||
		cfg.logLevel != "info" || cfg.logFormat != "text" {
		t.Errorf("global defaults %+v", cfg)
	}
	topo := bus.Topology{Prefix: bus.DefaultPrefix, Replicas: 1, SnapshotHistory: bus.DefaultSnapshotHistory,
		ReplyMaxAge: bus.DefaultReplyMaxAge, DuplicateWindow: bus.DefaultDuplicateWindow}
	if cfg.topology != topo {
		t.Errorf("topology %+v", cfg.topology)
	}
	if len(cfg.agents) != 1 {
		t.Fatalf("agents %+v", cfg.agents)
	}
	a := cfg.agents[0]
	want := runtime.Config{
		Agent:           "echo",
		Topology:        topo,
		Consumer:        bus.ConsumerConfig{AckWait: bus.DefaultAckWait, MaxDeliver: bus.DefaultMaxDeliver, Prefetch: bus.DefaultPrefetch},
		Concurrency:     runtime.DefaultConcurrency,
		HandlerTimeout:  runtime.DefaultHandlerTimeout,
		Backoff:         resilience.Backoff{Base: resilience.DefaultBaseDelay, Max: resilience.DefaultMaxDelay},
		Breaker:         resilience.BreakerSettings{Threshold: resilience.DefaultBreakerThreshold, OpenTimeout: resilience.DefaultBreakerOpenTimeout},
		CancelMarkerTTL: runtime.DefaultCancelMarkerTTL,
		Limits:          envelope.Limits{MaxClockSkew: envelope.DefaultMaxClockSkew},
	}
	if !reflect.DeepEqual(a.runtime, want) || a.kind != handlerEcho || !slices.Equal(a.types, []envelope.PayloadType{envelope.TaskRequest}) {
		t.Errorf("agent defaults\n got %+v\nwant %+v", a.runtime, want)
	}
}

// flagsFor parses args with the run command's flags.
func flagsFor(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	cmd := newRunCmd(&bytes.Buffer{})
	if err := cmd.ParseFlags(args); err != nil {
		t.Fatal(err)
	}
	return cmd.Flags()
}

func envOf(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestPrecedenceFlagOverEnvOverFileOverDefault(t *testing.T) {
	file := writeConfig(t, `
nats: {url: "nats://file:4222"}
agents:
	- name: a
		concurrency: 8
	- name: b
`)
	cases := []struct {
		name      string
		file      string
		env       map[string]string
		args      []string
		wantConc  [2]int // agents a and b
		wantURL   string
		wantProbs string
	}{
		{name: "default", wantConc: [2]int{runtime.DefaultConcurrency}, wantURL: ""},
		{name: "file", file: file, wantConc: [2]int{8, runtime.DefaultConcurrency}, wantURL: "nats://file:4222"},
		{name: "env over file", file: file, env: map[string]string{"JETAGENT_CONCURRENCY": "6", "JETAGENT_NATS_URL": "nats://env:4222"},
			wantConc: [2]int{6, 6}, wantURL: "nats://env:4222"},
		{name: "an empty variable is unset", file: file, env: map[string]string{"JETAGENT_CONCURRENCY": "", "JETAGENT_NATS_URL": ""},
			wantConc: [2]int{8, runtime.DefaultConcurrency}, wantURL: "nats://file:4222"},
		{name: "flag over env", file: file, env: map[string]string{"JETAGENT_CONCURRENCY": "6", "JETAGENT_NATS_URL": "nats://env:4222"},
			args: []string{"--concurrency", "3", "--nats", "nats://flag:4222"}, wantConc: [2]int{3, 3}, wantURL: "nats://flag:4222"},
		{name: "flag without file", args: []string{"--concurrency", "2"}, wantConc: [2]int{2}},
		{name: "a bad variable", env: map[string]string{"JETAGENT_CONCURRENCY": "many"}, wantProbs: `$JETAGENT_CONCURRENCY: "many" is not an integer`},
		{name: "a bad variable under a good flag", env: map[string]string{"JETAGENT_CONCURRENCY": "0"}, args: []string{"--concurrency", "2"},
			wantProbs: `$JETAGENT_CONCURRENCY: must be 1..4096, got 0`},
		{name: "a name for two agents", file: file, args: []string{"--name", "x"}, wantProbs: "--name: names one agent, but " + file + " declares 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var env func(string) (string, bool)
			if c.env != nil {
				env = envOf(c.env)
			}
			cfg, probs := loadConfig(configSources{file: c.file, env: env, flags: flagsFor(t, c.args...)})
			if c.wantProbs != "" {
				if len(probs) != 1 || probs[0].String() != c.wantProbs {
					t.Fatalf("problems %v, want %q", probs, c.wantProbs)
				}
				return
			}
			if probs != nil {
				t.Fatal(probs)
			}
			for i, a := range cfg.agents {
				if a.runtime.Concurrency != c.wantConc[i] {
					t.Errorf("agent %s: concurrency %d, want %d", a.name, a.runtime.Concurrency, c.wantConc[i])
				}
			}
			if cfg.natsURL != c.wantURL {
				t.Errorf("nats url %q, want %q", cfg.natsURL, c.wantURL)
			}
		})
	}
}

func TestHandlerOverridesReachTheirKindOnly(t *testing.T) {
	file := writeConfig(t, `
agents:
	- name: flaky
		handler: {kind: chaos, fail_rate: 0.5}
	- name: py
		handler: {kind: exec, command: [python3, agent.py]}
	- name: plain
`)
	env := envOf(map[string]string{"JETAGENT_FAIL_RATE": "0.2", "JETAGENT_HTTP_URL": "http://127.0.0.1:1/"}) // no http agent: ignored
	cfg, probs := loadConfig(configSources{file: file, env: env, flags: flagsFor(t, "--exec-command", "python3 other.py", "--permanent-rate", "0.1")})
	if probs != nil {
		t.Fatal(probs)
	}
	flaky, py, plain := cfg.agents[0], cfg.agents[1], cfg.agents[2]
	if flaky.chaos.FailRate != 0.2 || flaky.chaos.PermanentRate != 0.1 {
		t.Errorf("flaky chaos %+v", flaky.chaos)
	}
	if !slices.Equal(py.exec.Command, []string{"python3", "other.py"}) {
		t.Errorf("py command %q", py.exec.Command)
	}
	if plain.kind != handlerEcho {
		t.Errorf("plain kind %s", plain.kind)
	}

	// a flag for a kind no agent has is a mistake
	_, probs = loadConfig(configSources{file: file, flags: flagsFor(t, "--http-url", "http://127.0.0.1:1/")})
	if len(probs) != 1 || !strings.Contains(probs[0].String(), "--http-url: a setting of handler kind http, and no agent has that kind") {
		t.Errorf("problems %v", probs)
	}
	// the kind set by a flag decides which settings apply
	cfg, probs = loadConfig(configSources{flags: flagsFor(t, "--handler", "exec", "--exec-command", `sh -c 'echo "{}"'`, "--exec-env", "A=1,B=2")})
	if probs != nil {
		t.Fatal(probs)
	}
	if a := cfg.agents[0]; a.kind != handlerExec || !slices.Equal(a.exec.Command, []string{"sh", "-c", `echo "{}"`}) || a.exec.Env["B"] != "2" || a.exec.Dir != "" {
		t.Errorf("exec agent from flags %+v", a.exec)
	}
	_, probs = loadConfig(configSources{flags: flagsFor(t, "--handler", "exec")})
	if len(probs) != 1 || probs[0].String() != "--handler: handler kind exec needs handler.command (in the file, --exec-command or $JETAGENT_EXEC_COMMAND)" {
		t.Errorf("problems %v", probs)
	}
}

func TestParseText(t *testing.T) {
	cases := []struct {
		kind valueKind
		in   string
		want any
		err  string
	}{
		{kind: kindBytes, in: "1048576", want: int64(1 << 20)},
		{kind: kindBytes, in: "64KiB", want: int64(64 << 10)},
		{kind: kindBytes, in: "10 MB", want: int64(10e6)},
		{kind: kindBytes, in: "1.5MiB", err: "invalid size"},
		{kind: kindBytes, in: "99999999TiB", err: "too large"},
		{kind: kindCommand, in: `python3 -u 'my agent.py' "a \"b\"" c\ d`, want: []string{"python3", "-u", "my agent.py", `a "b"`, "c d"}},
		{kind: kindCommand, in: `sh -c 'unterminated`, err: "unterminated '"},
		{kind: kindList, in: "task.request, task.update,", want: []string{"task.request", "task.update"}},
		{kind: kindMap, in: "A=1,B=x=y", want: map[string]string{"A": "1", "B": "x=y"}},
		{kind: kindMap, in: "A", err: "not NAME=value"},
		{kind: kindDuration, in: "1h30m", want: 90 * time.Minute},
		{kind: kindFloat, in: "NaN", err: "not a number"},
		{kind: kindBool, in: "yes", err: "not true or false"},
	}
	for _, c := range cases {
		got, err := parseText(c.kind, c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("parseText(%q) error %v, want %q", c.in, err, c.err)
		case c.err == "" && (err != nil || !reflect.DeepEqual(got, c.want)):
			t.Errorf("parseText(%q) = %#v, %v; want %#v", c.in, got, err, c.want)
		}
	}
	for _, n := range []int64{0, 1000, 1 << 20, 64 << 10, 3 << 30, 1234567} {
		if back, err := parseBytes(formatBytes(n)); err != nil || back != n {
			t.Errorf("bytes %d -> %q -> %v, %v", n, formatBytes(n), back, err)
		}
	}
}

// Every setting has one flag and one variable, named alike, and a default
// of its kind's type (or says why not), which --help shows.
func TestSettingsTableIsConsistent(t *testing.T) {
	flags, envs := map[string]bool{}, map[string]bool{}
	runFlags := newRunCmd(&bytes.Buffer{}).Flags()
	for _, s := range settings {
		if s.scope == scopeRule {
			if s.flag != "" || s.env != "" {
				t.Errorf("%s: rules are file-only", s.key)
			}
			continue
		}
		if s.flag == "" || s.env == "" || flags[s.flag] || envs[s.env] {
			t.Errorf("%s: flag %q, env %q (missing or duplicate)", s.key, s.flag, s.env)
		}
		flags[s.flag], envs[s.env] = true, true
		if want := "JETAGENT_" + strings.ToUpper(strings.ReplaceAll(s.flag, "-", "_")); s.env != want && s.key != "nats.url" {
			t.Errorf("%s: env %s, want %s", s.key, s.env, want)
		}
		if s.usage == "" {
			t.Errorf("%s: no usage", s.key)
		}
		if s.required {
			if s.def != nil {
				t.Errorf("%s: required with a default", s.key)
			}
			continue
		}
		var zero any
		switch s.kind {
		case kindString:
			zero = ""
		case kindInt:
			zero = 0
		case kindFloat:
			zero = 0.0
		case kindBool:
			zero = false
		case kindDuration:
			zero = time.Duration(0)
		case kindBytes:
			zero = int64(0)
		case kindList, kindCommand:
			zero = []string(nil)
		case kindMap:
			zero = map[string]string(nil)
		}
		if reflect.TypeOf(s.def) != reflect.TypeOf(zero) {
			t.Errorf("%s: default %#v is not a %T", s.key, s.def, zero)
		}
		if s.check != nil {
			if err := s.check(s.def); err != nil {
				t.Errorf("%s: default %v fails its own check: %v", s.key, s.def, err)
			}
		}
		f := runFlags.Lookup(s.flag)
		switch {
		case f == nil:
			t.Errorf("%s: no flag --%s on agent run", s.key, s.flag)
		case s.defDoc != "" || s.kind == kindList || s.kind == kindMap:
		default:
			if shown, err := parseText(s.kind, f.DefValue); err != nil || !reflect.DeepEqual(shown, s.def) {
				t.Errorf("%s: --help shows the default %q, the table says %v", s.key, f.DefValue, s.def)
			}
		}
	}
}

// The hardening settings of the exec and http kinds: the environment
// allow-list (an empty list inherits nothing), per-status failure kinds
// and the response header timeout.
func TestHandlerHardeningSettings(t *testing.T) {
	file := writeConfig(t, `
agents:
	- name: none
		handler: {kind: exec, command: [prog], env_inherit: []}
	- name: some
		handler: {kind: exec, command: [prog], env_inherit: [PATH, "LC_*"]}
	- name: all
		handler: {kind: exec, command: [prog]}
	- name: web
		handler: {kind: http, url: "http://127.0.0.1:1/", statuses: {"404": permanent, "409": transient}, response_header_timeout: 20s}
`)
	cfg, probs := loadConfig(configSources{file: file})
	if probs != nil {
		t.Fatal(probs)
	}
	by := map[string]agentConfig{}
	for _, a := range cfg.agents {
		by[a.name] = a
	}
	if e := by["none"].exec.EnvInherit; e == nil || len(e) != 0 {
		t.Errorf("env_inherit []: %#v, want an empty non-nil list", e)
	}
	if e := by["some"].exec.EnvInherit; !slices.Equal(e, []string{"PATH", "LC_*"}) {
		t.Errorf("env_inherit: %#v", e)
	}
	if e := by["all"].exec.EnvInherit; e != nil {
		t.Errorf("no env_inherit: %#v, want nil (inherit all)", e)
	}
	web := by["web"].http
	if !reflect.DeepEqual(web.Statuses, map[int]resilience.Kind{404: resilience.KindPermanent, 409: resilience.KindTransient}) || web.ResponseHeaderTimeout != 20*time.Second {
		t.Errorf("http settings %+v", web)
	}
	for _, c := range []struct{ yaml, want string }{
		{`statuses: {"200": permanent}`, `"200": want a status from 300 to 599`},
		{`statuses: {"503": maybe}`, `503: "maybe": want transient or permanent`},
	} {
		got := problemsOf(t, "agents:\n\t- name: w\n\t\thandler: {kind: http, url: \"http://127.0.0.1:1/\", "+c.yaml+"}\n")
		if len(got) != 1 || !strings.Contains(got[0], c.want) {
			t.Errorf("%s: problems %v, want one with %q", c.yaml, got, c.want)
		}
	}
	if got := problemsOf(t, "agents:\n\t- name: x\n\t\thandler: {kind: exec, command: [p], env_inherit: [\"A=B\"]}\n"); len(got) != 1 || !strings.Contains(got[0], "prefix ending in '*'") {
		t.Errorf("bad env_inherit: problems %v", got)
	}
}
