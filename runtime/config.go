package runtime

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/snapshot"
	"go.opentelemetry.io/otel/trace"
)

// Defaults of [Config].
const (
	DefaultConcurrency     = 4
	DefaultExecRecordTTL   = 2 * time.Minute
	DefaultHandlerTimeout  = 5 * time.Minute
	DefaultShutdownTimeout = 30 * time.Second
	DefaultCancelMarkerTTL = time.Hour
)

// Config configures a [Runtime]. Agent is required; every other zero value
// means the default named on the field.
type Config struct {
	// Agent is the agent's name: its tasks arrive on
	// "<prefix>.tasks.<Agent>.<payload_type>" and replicas with the same
	// name share them. Required.
	Agent string

	// Topology names the streams; it must match the one provisioned.
	// Zero: the default topology.
	Topology bus.Topology

	// Consumer tunes the durable consumer (AckWait, MaxDeliver, BackOff,
	// MaxAckPending, Prefetch, PullExpiry). Its Durable and FilterSubjects
	// are set by the runtime from Agent and must be left empty, and so is
	// its Window.
	//
	// MaxDeliver is the number of attempts a task gets before it is
	// dead-lettered: handler runs that failed, or that ended without a
	// trace (the process died or the handler hung; see Task.Attempt).
	// Deliveries handed back unrun do not count, so the runtime counts
	// them itself and asks the server never to stop redelivering.
	//
	// Each replica holds at most Concurrency + Prefetch deliveries
	// (queued, running, held by a breaker or waiting as suspects), every
	// one kept alive with heartbeats: lower Prefetch for slow tasks, so
	// that replicas share a backlog. MaxAckPending bounds what all the
	// replicas hold together.
	Consumer bus.ConsumerConfig

	// Concurrency is the number of workers running handlers. Zero: 4.
	Concurrency int

	// HandlerTimeout bounds one handler call: its ctx ends then. While a
	// handler runs (up to this deadline) the runtime sends InProgress
	// heartbeats, so a slow but alive handler keeps its task however long
	// it takes compared with AckWait; a handler still running after its
	// deadline gets no more heartbeats, and the server redelivers its task
	// after AckWait. Zero: 5 minutes.
	HandlerTimeout time.Duration

	// Backoff is the redelivery delay after a failed attempt: attempt n
	// is redelivered after Backoff.Delay(n). Zero: base 1s, max 60s, jitter.
	Backoff resilience.Backoff

	// Breaker configures the circuit breaker kept per task subject (so per
	// payload type): after Threshold consecutive transient failures the
	// subject's tasks are no longer handed to the handler; they wait, held
	// with heartbeats and never dead-lettered for it, until OpenTimeout has
	// passed and one probe task succeeds. Zero: threshold 5, 60s.
	Breaker resilience.BreakerSettings

	// BreakerRules give subjects matching a pattern their own breaker
	// settings (first match wins); other subjects use Breaker.
	BreakerRules []resilience.BreakerRule

	// Snapshots stores task checkpoints (Task.Step, Task.Checkpoint) and
	// answers task.cancel, state.query and state.restore. Nil: the
	// agent's KV bucket (bus.Topology.SnapshotBucket), provisioned or
	// checked with bus.ProvisionAgent the first time a task needs it, so
	// an agent that never checkpoints needs none.
	Snapshots snapshot.Store

	// CancelMarkerTTL is how long the marker a task.cancel leaves for a
	// task the agent has not seen (queued, or not sent yet) waits for it:
	// the task is cancelled if it arrives before, and runs normally after.
	// At least a second; the snapshot bucket raises it to its marker TTL
	// (bus.Topology.SnapshotMarkerTTL). Zero: 1 hour.
	CancelMarkerTTL time.Duration

	// KeepSnapshots leaves the snapshot of a completed, cancelled or
	// dead-lettered task in place (for the bucket's TTL to remove) instead
	// of deleting it.
	KeepSnapshots bool

	// ExecRecordTTL is how long the runtime remembers that a task ran (its
	// execution record, in the agent's records bucket): a re-send of the
	// task, or another envelope with its task_id or idempotency_key,
	// arriving within it is not run again and gets the stored reply. At
	// least the topology's duplicate window (a client's whole retry budget
	// should fit in it). Each replica keeps an index of the tasks of this
	// span in memory, about 12 bytes a task (a minute at 30,000 tasks a
	// second: about 22 MB). Zero: 2 minutes, or the duplicate window if
	// longer.
	ExecRecordTTL time.Duration

	// DisableExecRecords turns the execution record off: re-sends are then
	// dropped only by the server's duplicate window, which a server restart
	// empties for consumed tasks (docs/concepts.md "Once").
	DisableExecRecords bool

	// DisableSweeper turns off the agent's sweeper, which dead-letters
	// tasks the server stopped delivering after MaxDeliver deliveries that
	// were never settled (the agent crashed or hung on them). Leave it on
	// unless another process sweeps for this agent.
	DisableSweeper bool

	// Limits bound accepted envelopes (size, clock skew). Zero: defaults
	// of package envelope. ReceivedAt and Now are set per delivery.
	Limits envelope.Limits

	// ShutdownTimeout bounds Run's graceful stop. Zero: 30s.
	ShutdownTimeout time.Duration

	// Logger receives the runtime's logs. Nil: discard.
	Logger *slog.Logger

	// Observer is told of every delivery, outcome, breaker transition and
	// heartbeat, for metrics (see package metrics). Nil: none, at the cost
	// of a nil check per event.
	Observer Observer

	// TracerProvider, when set, wraps each handler call in a span named
	// "jetagent.handle <payload_type>", a child of the task's traceparent
	// (see package tracing). Nil: no spans, at the cost of a nil check.
	TracerProvider trace.TracerProvider
}

func (c Config) withDefaults() Config {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	c.Consumer.Durable = c.Agent
	c.Consumer.FilterSubjects = []string{c.Topology.AgentTasks(c.Agent)}
	if c.Consumer.AckWait == 0 {
		c.Consumer.AckWait = bus.DefaultAckWait
	}
	if c.Consumer.MaxDeliver == 0 {
		c.Consumer.MaxDeliver = bus.DefaultMaxDeliver
	}
	if c.Consumer.Prefetch == 0 {
		c.Consumer.Prefetch = bus.DefaultPrefetch
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = DefaultHandlerTimeout
	}
	if c.CancelMarkerTTL == 0 {
		c.CancelMarkerTTL = DefaultCancelMarkerTTL
	}
	if c.ExecRecordTTL == 0 {
		c.ExecRecordTTL = max(DefaultExecRecordTTL, c.Topology.DuplicateWindowOrDefault())
	}
	return c
}

func (c Config) validate(raw Config) error {
	if err := bus.ValidateName(c.Agent); err != nil {
		return fmt.Errorf("runtime: agent name: %w", err)
	}
	if raw.Consumer.Durable != "" || len(raw.Consumer.FilterSubjects) > 0 {
		return errors.New("runtime: Config.Consumer.Durable and FilterSubjects are set from Agent; leave them empty")
	}
	if raw.Consumer.Window != 0 {
		return errors.New("runtime: Config.Consumer.Window is Concurrency + Prefetch; leave it empty")
	}
	if c.Consumer.MaxDeliver < 1 {
		return fmt.Errorf("runtime: Consumer.MaxDeliver must be at least 1 attempt, got %d", c.Consumer.MaxDeliver)
	}
	if c.Concurrency < 1 {
		return fmt.Errorf("runtime: Concurrency must be positive, got %d", c.Concurrency)
	}
	if c.HandlerTimeout <= 0 {
		return fmt.Errorf("runtime: HandlerTimeout must be positive, got %v", c.HandlerTimeout)
	}
	if c.CancelMarkerTTL < time.Second {
		return fmt.Errorf("runtime: CancelMarkerTTL must be at least 1s, got %v", c.CancelMarkerTTL)
	}
	if w := c.Topology.DuplicateWindowOrDefault(); !c.DisableExecRecords && c.ExecRecordTTL < w {
		return fmt.Errorf("runtime: ExecRecordTTL %v is shorter than the duplicate window %v: a re-send between the two would run again", c.ExecRecordTTL, w)
	}
	return c.Topology.Validate()
}
