package bus

import (
	"fmt"
	"strings"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/subject"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of [Topology].
const (
	DefaultPrefix          = "jetagent"
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultReplyMaxAge     = time.Hour
	DefaultSnapshotHistory = 5
	// DefaultSnapshotMarkerTTL is the default of Topology.SnapshotMarkerTTL.
	DefaultSnapshotMarkerTTL = time.Hour
	// RecordMarkerTTL is how long a records bucket keeps the marker of a
	// record removed by its own TTL. Setting it is also what lets records
	// carry a TTL of their own (jetstream.KeyTTL).
	RecordMarkerTTL = time.Minute
)

// Topology names and configures everything jetagent keeps on the server:
// the tasks stream (work-queue retention: a task is gone once settled), the
// replies stream, the dead-letter stream (limits retention, nothing
// discarded unless DLQMaxAge or DLQMaxBytes is set; when full, new dead
// letters are refused rather than old ones dropped), the advisories stream
// and replays bucket of the DLQ (all created by [Provision]), and the
// buckets each agent has to itself: its snapshots and its records (created
// by [ProvisionAgent]). The zero value is the default topology with prefix
// "jetagent".
type Topology struct {
	// Prefix is the first subject token and the stream name stem.
	// Zero: "jetagent". Letters, digits, '-' and '_' only.
	Prefix string

	// Replicas is the replication factor of every stream and bucket
	// (1, 3 or 5 on a cluster). Zero: 1.
	Replicas int

	// Memory keeps the streams in memory instead of files (tests, benchmarks).
	Memory bool

	// DuplicateWindow is how long the server remembers message ids to drop
	// re-sent copies. Zero: 2 minutes.
	DuplicateWindow time.Duration

	// TasksMaxBytes caps the tasks stream; when full, publishing a task
	// fails instead of discarding an older one. Zero: no cap.
	TasksMaxBytes int64

	// ReplyMaxAge is how long replies are kept for clients that reconnect
	// late. Zero: 1 hour.
	ReplyMaxAge time.Duration

	// DLQMaxAge, DLQMaxBytes and DLQMaxMsgs bound the dead-letter stream.
	// When a size limit is reached, new dead letters are refused (and their
	// originals redelivered), never old ones dropped. Zero: keep everything
	// until an operator purges it.
	DLQMaxAge   time.Duration
	DLQMaxBytes int64
	DLQMaxMsgs  int64

	// SnapshotHistory is how many revisions per task an agent's snapshot
	// bucket keeps (1..64). Zero: 5.
	SnapshotHistory int

	// SnapshotTTL removes snapshots not updated for this long. Zero: never.
	SnapshotTTL time.Duration

	// SnapshotMarkerTTL is how long a snapshot bucket keeps the marker of
	// a deleted snapshot before it disappears for good (at least a
	// second). Setting it is also what lets a snapshot carry a TTL of its
	// own (snapshot.Snapshot.TTL: a cancel marker for a task not seen
	// yet), which JetStream raises to at least this. Zero: 1 hour.
	SnapshotMarkerTTL time.Duration
}

// prefix returns the configured or default prefix.
func (t Topology) prefix() string {
	if t.Prefix == "" {
		return DefaultPrefix
	}
	return t.Prefix
}

func (t Topology) streamName(kind string) string {
	return strings.ToUpper(strings.ReplaceAll(t.prefix(), "-", "_")) + "_" + kind
}

// TasksStream returns the name of the tasks stream, e.g. "JETAGENT_TASKS".
func (t Topology) TasksStream() string { return t.streamName("TASKS") }

// RepliesStream returns the name of the replies stream.
func (t Topology) RepliesStream() string { return t.streamName("REPLIES") }

// DLQStream returns the name of the dead-letter stream.
func (t Topology) DLQStream() string { return t.streamName("DLQ") }

// AdvisoriesStream returns the name of the stream capturing the server's
// MAX_DELIVERIES advisories for the tasks stream (read by the sweeper).
func (t Topology) AdvisoriesStream() string { return t.streamName("ADVISORIES") }

// MaxDeliveriesAdvisories returns the subject of the MAX_DELIVERIES
// advisories of agent's consumer on the tasks stream; agent "*" matches
// every agent.
func (t Topology) MaxDeliveriesAdvisories(agent string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + t.TasksStream() + "." + agent
}

// ReplaysBucket returns the name of the KV bucket recording which dead
// letters were replayed.
func (t Topology) ReplaysBucket() string { return t.streamName("DLQ_REPLAYS") }

// SnapshotBucket returns the name of agent's snapshot bucket, e.g.
// "JETAGENT_SNAPSHOTS_echo" (keys "<agent>.<task id>"). Like the records
// bucket, it belongs to agent alone: a bucket shared by agents allows
// rollups (KV purges need them), so any agent allowed to write one key of
// it could purge every agent's snapshots with a "Nats-Rollup: all" header,
// which no subject permission can forbid.
func (t Topology) SnapshotBucket(agent string) string {
	return t.streamName("SNAPSHOTS") + "_" + agent
}

// RecordsBucket returns the name of agent's records bucket, e.g.
// "JETAGENT_RECORDS_echo": the runtime's own bookkeeping of agent's tasks.
// Every agent has a bucket of its own, never one shared with other agents:
// NATS permissions filter subjects, not headers, so an agent allowed to
// write one key of a shared bucket could roll the whole bucket up.
func (t Topology) RecordsBucket(agent string) string {
	return t.streamName("RECORDS") + "_" + agent
}

// TaskSubject returns the subject tasks of the given type for agent are
// published on: "<prefix>.tasks.<agent>.<payload_type>".
func (t Topology) TaskSubject(agent string, typ envelope.PayloadType) string {
	return t.prefix() + ".tasks." + agent + "." + string(typ)
}

// AgentTasks returns the filter matching every task subject of agent.
func (t Topology) AgentTasks(agent string) string {
	return t.prefix() + ".tasks." + agent + ".>"
}

// parkedToken is the subject token under which parked tasks are kept: no
// agent can have that name ('$' is not allowed in one), so no consumer of
// tasks sees them.
const parkedToken = "$parked"

// ParkedSubject returns where a task of agent published on taskSubject
// (see TaskSubject) waits while its subject's breaker is open:
// "<prefix>.tasks.$parked.<agent>.<payload_type>", in the tasks stream but
// outside every agent's consumer.
func (t Topology) ParkedSubject(taskSubject string) string {
	rest, _ := strings.CutPrefix(taskSubject, t.prefix()+".tasks.")
	return t.prefix() + ".tasks." + parkedToken + "." + rest
}

// TaskSubjectOfParked returns the task subject a parked task came from
// (the inverse of ParkedSubject), and false when parked is not a parked
// subject.
func (t Topology) TaskSubjectOfParked(parked string) (string, bool) {
	rest, ok := strings.CutPrefix(parked, t.prefix()+".tasks."+parkedToken+".")
	if !ok || rest == "" {
		return "", false
	}
	return t.prefix() + ".tasks." + rest, true
}

// AgentParked returns the filter matching every parked task of agent.
func (t Topology) AgentParked(agent string) string {
	return t.prefix() + ".tasks." + parkedToken + "." + agent + ".>"
}

// DLQSubject returns the subject a dead letter of agent's task type goes to.
func (t Topology) DLQSubject(agent string, typ envelope.PayloadType) string {
	return t.prefix() + ".dlq." + agent + "." + string(typ)
}

// DLQAgent returns the agent token of a dead-letter subject (see
// DLQSubject), and false when subject is not one.
func (t Topology) DLQAgent(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, t.prefix()+".dlq.")
	if !ok {
		return "", false
	}
	agent, _, _ := strings.Cut(rest, ".")
	return agent, agent != ""
}

// TaskAgent returns the agent and payload type of a task subject (see
// TaskSubject), and false when subject is not one.
func (t Topology) TaskAgent(subject string) (agent string, typ envelope.PayloadType, ok bool) {
	rest, ok := strings.CutPrefix(subject, t.prefix()+".tasks.")
	if !ok {
		return "", "", false
	}
	agent, tail, _ := strings.Cut(rest, ".")
	return agent, envelope.PayloadType(tail), agent != "" && tail != ""
}

// AgentDLQ returns the filter matching every dead letter of agent; agent
// "*" matches every agent's.
func (t Topology) AgentDLQ(agent string) string {
	return t.prefix() + ".dlq." + agent + ".>"
}

// ReplySubject returns the reply subject of a client: replies published
// there are kept by the replies stream and delivered live to subscribers.
func (t Topology) ReplySubject(client string) string {
	return t.prefix() + ".replies." + client
}

// Validate reports a Topology that cannot be provisioned, wrapping
// ErrInvalidName for a bad prefix.
func (t Topology) Validate() error {
	if err := ValidateName(t.prefix()); err != nil {
		return fmt.Errorf("topology prefix: %w", err)
	}
	if t.Replicas < 0 || t.Replicas > 5 {
		return fmt.Errorf("bus: topology: replicas must be 1..5, got %d", t.Replicas)
	}
	if t.SnapshotHistory < 0 || t.SnapshotHistory > 64 {
		return fmt.Errorf("bus: topology: snapshot history must be 1..64, got %d", t.SnapshotHistory)
	}
	if t.SnapshotMarkerTTL != 0 && t.SnapshotMarkerTTL < time.Second {
		return fmt.Errorf("bus: topology: snapshot marker TTL must be at least 1s, got %v", t.SnapshotMarkerTTL)
	}
	return nil
}

// ValidateName checks that name (an agent, client or prefix) is a single
// subject token of letters, digits, '-' and '_', at most 64 bytes. It
// returns an error wrapping ErrInvalidName otherwise.
func ValidateName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("%w: %q must be 1..64 bytes", ErrInvalidName, name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: %q: only letters, digits, '-' and '_' are allowed", ErrInvalidName, name)
		}
	}
	return nil
}

func (t Topology) replicas() int {
	if t.Replicas == 0 {
		return 1
	}
	return t.Replicas
}

func (t Topology) storage() jetstream.StorageType {
	if t.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// snapshotMarkerTTL returns SnapshotMarkerTTL or its default.
func (t Topology) snapshotMarkerTTL() time.Duration {
	if t.SnapshotMarkerTTL == 0 {
		return DefaultSnapshotMarkerTTL
	}
	return t.SnapshotMarkerTTL
}

// DuplicateWindowOrDefault returns the tasks stream's duplicate window:
// DuplicateWindow, or DefaultDuplicateWindow when it is zero.
func (t Topology) DuplicateWindowOrDefault() time.Duration { return t.duplicates() }

func (t Topology) duplicates() time.Duration {
	if t.DuplicateWindow == 0 {
		return DefaultDuplicateWindow
	}
	return t.DuplicateWindow
}

// bytesLimit maps the zero value of a size limit to the server's "none".
func bytesLimit(v int64) int64 {
	if v == 0 {
		return -1
	}
	return v
}

// streamConfigs returns the desired configuration of every stream.
func (t Topology) streamConfigs() []jetstream.StreamConfig {
	p := t.prefix()
	replyAge := t.ReplyMaxAge
	if replyAge == 0 {
		replyAge = DefaultReplyMaxAge
	}
	return []jetstream.StreamConfig{
		{
			Name:        t.TasksStream(),
			Description: "jetagent tasks (work queue: a task is removed once settled)",
			Subjects:    []string{p + ".tasks.>"},
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardNew,
			MaxBytes:    bytesLimit(t.TasksMaxBytes),
			MaxMsgs:     -1,
			Storage:     t.storage(),
			Replicas:    t.replicas(),
			Duplicates:  t.duplicates(),
		},
		{
			Name:        t.RepliesStream(),
			Description: "jetagent replies, kept for late or reconnecting clients",
			Subjects:    []string{p + ".replies.>"},
			// Clients look a missed reply up by its subject (a direct get).
			AllowDirect: true,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      replyAge,
			MaxBytes:    -1,
			MaxMsgs:     -1,
			Storage:     t.storage(),
			Replicas:    t.replicas(),
			Duplicates:  t.duplicates(),
		},
		{
			Name:        t.DLQStream(),
			Description: "jetagent dead letters (nothing discarded automatically unless limits are set)",
			Subjects:    []string{p + ".dlq.>"},
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardNew,
			MaxAge:      t.DLQMaxAge,
			MaxBytes:    bytesLimit(t.DLQMaxBytes),
			MaxMsgs:     bytesLimit(t.DLQMaxMsgs),
			Storage:     t.storage(),
			Replicas:    t.replicas(),
			Duplicates:  t.duplicates(),
		},
		{
			Name:        t.AdvisoriesStream(),
			Description: "jetagent: MAX_DELIVERIES advisories of the tasks stream, swept into the DLQ",
			Subjects:    []string{t.MaxDeliveriesAdvisories("*")},
			Retention:   jetstream.WorkQueuePolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      7 * 24 * time.Hour,
			MaxBytes:    -1,
			MaxMsgs:     -1,
			Storage:     t.storage(),
			Replicas:    t.replicas(),
			Duplicates:  t.duplicates(),
		},
	}
}

func (t Topology) kvConfigs() []jetstream.KeyValueConfig {
	return []jetstream.KeyValueConfig{{
		Bucket:      t.ReplaysBucket(),
		Description: "jetagent: dead letters replayed, key <agent>.<DLQ sequence>",
		History:     1,
		Storage:     t.storage(),
		Replicas:    t.replicas(),
	}}
}

// agentKVConfigs returns the configuration of agent's own buckets.
func (t Topology) agentKVConfigs(agent string) []jetstream.KeyValueConfig {
	hist := t.SnapshotHistory
	if hist == 0 {
		hist = DefaultSnapshotHistory
	}
	return []jetstream.KeyValueConfig{{
		Bucket:      t.SnapshotBucket(agent),
		Description: "jetagent: " + agent + "'s task snapshots, key <agent>.<task>",
		History:     uint8(hist),
		TTL:         t.SnapshotTTL,
		// Markers of deleted snapshots expire; it also lets a snapshot carry
		// a TTL of its own (cancel markers of tasks not seen yet).
		LimitMarkerTTL: t.snapshotMarkerTTL(),
		Storage:        t.storage(),
		Replicas:       t.replicas(),
	}, {
		Bucket:         t.RecordsBucket(agent),
		Description:    "jetagent: " + agent + "'s task records; each record carries its own TTL",
		History:        1,
		LimitMarkerTTL: RecordMarkerTTL,
		Storage:        t.storage(),
		Replicas:       t.replicas(),
	}}
}

// MatchSubject reports whether subject matches the NATS subject pattern,
// where "*" matches exactly one token and a final ">" one or more. It is
// the matching breaker rules (resilience.BreakerRule.Pattern) and DLQ
// filters use.
func MatchSubject(pattern, subj string) bool { return subject.Match(pattern, subj) }
