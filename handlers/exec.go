package handlers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// Defaults of [ExecConfig], and the exit status of a transient failure.
const (
	DefaultMaxOutput = 1 << 20  // bytes of stdout: the envelope size limit
	DefaultMaxStderr = 64 << 10 // bytes of stderr logged per task
	// ExitTempFail is the exit status (EX_TEMPFAIL of sysexits.h) with
	// which a program asks for its task to be redelivered after backoff.
	ExitTempFail = 75
)

// pipeGrace is how long output is still read after the program exited
// and its process group was killed: only a process that left the group
// (setsid) can hold the pipes open longer, and it is not waited for.
const pipeGrace = time.Second

// ErrNoCommand is returned by Exec when ExecConfig.Command is empty.
var ErrNoCommand = errors.New("handlers: exec: no command")

// ExecConfig configures [Exec]. Command is required; other zero values
// mean the default named on the field.
type ExecConfig struct {
	// Command is the program and its arguments, run for each task (no
	// shell: use ["sh", "-c", "..."] for one). A program name without a
	// slash is looked up in PATH when the task runs; a relative path is
	// relative to Dir. Required.
	Command []string

	// Env adds variables to the program's environment (see the package
	// doc for what it inherits). Zero: none added.
	Env map[string]string

	// EnvInherit, when not nil, is the allow-list of the agent's own
	// environment variables the program inherits: names, or prefixes
	// ending in '*' ("LC_*"); the rest (cloud credentials, tokens,
	// OTEL_EXPORTER_OTLP_HEADERS...) stays with the agent. An empty,
	// non-nil list inherits nothing. JETAGENT_* variables are never
	// inherited. Nil: every variable but JETAGENT_* is inherited.
	EnvInherit []string

	// Dir is the program's working directory. Zero: the agent's.
	Dir string

	// MaxOutput bounds stdout: a program writing more is killed and its
	// task fails permanently. Zero: 1 MiB.
	MaxOutput int

	// MaxStderr bounds the stderr bytes logged per task; the rest is read
	// and dropped (and counted in one last log line). Zero: 64 KiB.
	MaxStderr int

	// Logger receives the program's stderr lines (at Info). Nil: discard.
	Logger *slog.Logger
}

// ExitError is the error (marked transient or permanent, see the package
// doc) of a program that exited with a status other than 0 or was killed
// by a signal. Match it with errors.As.
type ExitError struct {
	// Program is Command[0].
	Program string
	// Code is the exit status, or -1 when Signal is set.
	Code int
	// Signal names the signal that killed the program ("SIGSEGV"), if any.
	Signal string
	// Stderr is the last line the program wrote to stderr, shortened.
	Stderr string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	b.WriteString("exec ")
	b.WriteString(e.Program)
	if e.Signal != "" {
		b.WriteString(": killed by " + e.Signal)
	} else {
		b.WriteString(": exit status " + strconv.Itoa(e.Code))
		if e.Code == ExitTempFail {
			b.WriteString(" (EX_TEMPFAIL)")
		}
	}
	if e.Stderr != "" {
		b.WriteString(": stderr: " + e.Stderr)
	}
	return b.String()
}

// Exec returns a handler that runs cfg.Command for each task, with the
// contract of the package doc. It returns ErrNoCommand when cfg.Command is
// empty or its program is "", and an error naming the entry when a
// variable of cfg.Env or a pattern of cfg.EnvInherit is unusable.
func Exec(cfg ExecConfig) (runtime.Handler, error) {
	if len(cfg.Command) == 0 || cfg.Command[0] == "" {
		return nil, ErrNoCommand
	}
	for k, v := range cfg.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("handlers: exec: Env %q: a name must be non-empty without '=' or NUL, a value without NUL", k)
		}
	}
	for _, p := range cfg.EnvInherit {
		if name := strings.TrimSuffix(p, "*"); strings.ContainsAny(name, "=*\x00") || p == "" {
			return nil, fmt.Errorf("handlers: exec: EnvInherit %q: a variable name, or a prefix ending in '*'", p)
		}
	}
	if cfg.MaxOutput <= 0 {
		cfg.MaxOutput = DefaultMaxOutput
	}
	if cfg.MaxStderr <= 0 {
		cfg.MaxStderr = DefaultMaxStderr
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &execHandler{cfg: cfg, env: childEnv(os.Environ(), cfg.Env, cfg.EnvInherit)}
	return h.handle, nil
}

type execHandler struct {
	cfg ExecConfig
	env []string // inherited and configured variables, without the task's
}

// childEnv returns environ without JETAGENT_* variables, and with only
// the variables inherit allows when inherit is not nil, plus extra
// (sorted by name, overriding inherited ones).
func childEnv(environ []string, extra map[string]string, inherit []string) []string {
	out := make([]string, 0, len(environ)+len(extra)+4)
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "JETAGENT_") || inherit != nil && !allowed(name, inherit) {
			continue
		}
		if _, ok := extra[name]; ok {
			continue
		}
		out = append(out, kv)
	}
	names := make([]string, 0, len(extra))
	for k := range extra {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		out = append(out, k+"="+extra[k])
	}
	return out
}

// allowed reports whether name matches an EnvInherit pattern: the name
// itself, or a prefix ending in '*'.
func allowed(name string, inherit []string) bool {
	for _, p := range inherit {
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(name, prefix) || p == name {
			return true
		}
	}
	return false
}

// errOutputTooLarge is the cancellation cause of a program killed for
// writing more than MaxOutput to stdout.
var errOutputTooLarge = errors.New("stdout too large")

func (h *execHandler) handle(ctx context.Context, t *runtime.Task) (any, error) {
	prog := h.cfg.Command[0]
	in, err := t.Envelope.MarshalJSON()
	if err != nil {
		return nil, resilience.Permanent(fmt.Errorf("exec %s: envelope has no JSON form: %w", prog, err))
	}
	log := h.cfg.Logger.With("agent", t.Envelope.Recipient, "envelope_id", t.Envelope.ID, "attempt", t.Attempt)

	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cmd := exec.CommandContext(cctx, prog, h.cfg.Command[1:]...)
	cmd.Dir = h.cfg.Dir
	cmd.Env = append(h.env[:len(h.env):len(h.env)],
		"JETAGENT_AGENT="+t.Envelope.Recipient,
		"JETAGENT_ENVELOPE_ID="+t.Envelope.ID,
		"JETAGENT_ATTEMPT="+strconv.Itoa(t.Attempt))
	if dl, ok := ctx.Deadline(); ok {
		cmd.Env = append(cmd.Env, "JETAGENT_DEADLINE="+dl.UTC().Format(time.RFC3339Nano))
	}
	if tp := traceParent(ctx, t); tp != "" {
		cmd.Env = append(cmd.Env, "TRACEPARENT="+tp) // OpenTelemetry's environment carrier
	}
	// A value from the task that an environment cannot hold is the task's
	// fault (bad input): refuse it permanently, not as a failure to start
	// the program, which the breaker counts.
	for _, kv := range cmd.Env[len(h.env):] {
		if strings.IndexByte(kv, 0) >= 0 {
			name, _, _ := strings.Cut(kv, "=")
			return nil, resilience.Permanent(fmt.Errorf("exec %s: %s from the task holds a NUL byte: it cannot be passed to a program", prog, name))
		}
	}
	cmd.Stdin = bytes.NewReader(append(in, '\n'))
	cmd.WaitDelay = pipeGrace // bounds the stdin copy once the program exited
	ownProcessGroup(cmd)

	// Stdout and stderr are pipes read here rather than by os/exec, so
	// that Wait returns as soon as the program exits and the group can be
	// killed before waiting for the pipes to close.
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec %s: %w", prog, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("exec %s: %w", prog, err)
	}
	defer outR.Close()
	defer errR.Close()
	cmd.Stdout, cmd.Stderr = outW, errW
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		// Not found, not executable, no resources: nothing the task can
		// fix, but the machine can; transient, so the breaker holds tasks.
		return nil, resilience.Transient(fmt.Errorf("exec %s: cannot start: %w", prog, err))
	}

	stdout := &cappedBuffer{max: h.cfg.MaxOutput, overflow: func() { cancel(errOutputTooLarge) }}
	stderr := &stderrLogger{log: log, max: h.cfg.MaxStderr}
	var readers sync.WaitGroup
	readers.Go(func() { _, _ = io.Copy(stdout, outR) })
	readers.Go(func() { stderr.consume(errR) })

	werr := cmd.Wait()
	killProcessGroup(cmd.Process.Pid) // whatever the program left behind
	grace := time.Now().Add(pipeGrace)
	_ = outR.SetReadDeadline(grace)
	_ = errR.SetReadDeadline(grace)
	readers.Wait()
	stderr.finish()

	switch {
	case context.Cause(cctx) == errOutputTooLarge:
		return nil, resilience.Permanent(fmt.Errorf("exec %s: %w: stdout exceeds %d bytes; killed", prog, ErrAnswerTooLarge, h.cfg.MaxOutput))
	case werr != nil && ctx.Err() != nil: // killed at the deadline or at shutdown
		return nil, deadlineError(ctx, "exec "+prog+": killed")
	}
	var exitErr *exec.ExitError
	switch {
	case werr == nil, errors.Is(werr, exec.ErrWaitDelay) && cmd.ProcessState.Success():
		// ErrWaitDelay with success: the program exited 0 without reading
		// all of its stdin; that is its choice.
	case errors.As(werr, &exitErr):
		e := &ExitError{Program: prog, Code: exitErr.ExitCode(), Stderr: stderr.lastLine()}
		if sig, ok := signalOf(exitErr.ProcessState); ok {
			e.Signal = sig
			return nil, resilience.Permanent(e)
		}
		if e.Code == ExitTempFail {
			return nil, resilience.Transient(e)
		}
		return nil, resilience.Permanent(e)
	default:
		return nil, fmt.Errorf("exec %s: %w", prog, werr)
	}
	return answerPayload(stdout.buf.Bytes(), "exec "+prog+": stdout")
}

// cappedBuffer keeps the first max bytes written to it and calls overflow
// once when more arrive (dropping them). Writes never fail, so the
// program's output is drained while it is being killed.
type cappedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow func()
	over     bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	if room := c.max - c.buf.Len(); len(p) > room {
		c.buf.Write(p[:max(room, 0)])
		if !c.over {
			c.over = true
			c.overflow()
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// stderrLogger logs a program's stderr lines, up to max bytes in all,
// and remembers the last non-blank line for error messages.
type stderrLogger struct {
	log     *slog.Logger
	max     int
	logged  int
	dropped int
	last    string
}

// maxLine bounds one logged line; a longer one is logged in pieces.
const maxLine = 4096

func (s *stderrLogger) consume(r io.Reader) {
	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			s.line(line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (s *stderrLogger) line(b []byte) {
	text := strings.TrimRight(string(b), "\r\n")
	if strings.TrimSpace(text) != "" {
		s.last = text
	}
	if s.logged+len(b) > s.max {
		s.dropped += len(b)
		return
	}
	s.logged += len(b)
	s.log.Info("exec stderr", "line", text)
}

func (s *stderrLogger) finish() {
	if s.dropped > 0 {
		s.log.Warn("exec stderr truncated", "logged_bytes", s.logged, "dropped_bytes", s.dropped)
	}
}

func (s *stderrLogger) lastLine() string {
	if len(s.last) > snippetLen {
		return snippet([]byte(s.last))
	}
	return s.last
}
