package agentcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/didyoumean"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/jetagent/jetagent/snapshot"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func closestName(name string, known []string) string { return didyoumean.Closest(name, known) }

func natsFlagNames() []string { return natsflags.FlagNames() }

// isTerminal reports whether w is a terminal (a --watch redraws in place).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// scanLimit bounds how many stream messages task show reads looking for a
// task without a snapshot (queued, dead-lettered, answered).
const scanLimit = 20_000

func newTaskCmd(stdout, stderr io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Show, list and cancel tasks",
		Long: `task looks at tasks: their checkpoints (the snapshots of tasks that use
steps), and for a task without one, where it is: queued in the tasks stream,
dead-lettered, or answered (its reply kept by the replies stream).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cliexit.UsageError(fmt.Errorf("%s needs a subcommand: show, ls or cancel", cmd.CommandPath()))
		},
	}
	cmd.AddCommand(newTaskShowCmd(stdout), newTaskLsCmd(stdout), newTaskCancelCmd(stdout, stderr))
	return cmd
}

// taskView is what task show knows of one task.
type taskView struct {
	TaskID string `json:"task_id"`
	Agent  string `json:"agent"`
	// Where: "checkpointed" (a snapshot), "queued" (in the tasks stream),
	// "dead-lettered", "answered" (a reply stored), "unknown".
	Where    string         `json:"where"`
	Snapshot *snapshotView  `json:"snapshot,omitempty"`
	History  []snapshotView `json:"history,omitempty"`
	Queued   *queuedView    `json:"queued,omitempty"`
	DLQ      []dlqView      `json:"dead_letters,omitempty"`
	Reply    *replyView     `json:"reply,omitempty"`
}

type snapshotView struct {
	Status   snapshot.Status `json:"status"`
	Step     int             `json:"step"`
	Running  int             `json:"running,omitempty"`
	Owner    string          `json:"owner,omitempty"`
	Updated  time.Time       `json:"updated"`
	Revision uint64          `json:"revision"`
	State    json.RawMessage `json:"state,omitempty"`
}

type queuedView struct {
	Subject    string    `json:"subject"`
	Sequence   uint64    `json:"sequence"`
	Published  time.Time `json:"published"`
	EnvelopeID string    `json:"envelope_id"`
}

type dlqView struct {
	ID     uint64    `json:"id"`
	Reason string    `json:"reason"`
	Error  string    `json:"error"`
	Stored time.Time `json:"stored"`
}

type replyView struct {
	Subject   string          `json:"subject"`
	Type      string          `json:"payload_type"`
	Stored    time.Time       `json:"stored"`
	Payload   json.RawMessage `json:"payload,omitempty"`
	RequestID string          `json:"correlation_id"`
}

func viewOf(s *snapshot.Snapshot) snapshotView {
	v := snapshotView{Status: s.Status, Step: s.Step, Running: s.Running, Owner: s.Owner, Updated: s.Updated, Revision: s.Revision}
	if len(s.State) > 0 {
		if j, err := envelope.PayloadJSON(s.State); err == nil {
			v.State = j
		} else {
			v.State, _ = json.Marshal(fmt.Sprintf("(%d bytes, not decodable: %v)", len(s.State), err))
		}
	}
	return v
}

func newTaskShowCmd(stdout io.Writer) *cobra.Command {
	var t target
	var agent string
	var asJSON bool
	var history int
	cmd := &cobra.Command{
		Use:   "show TASK_ID",
		Short: "Show a task: its status, step and last checkpoint, or where it is when it has none",
		Long: `show finds the task (of --agent, or of any agent on the server) and prints its
checkpoint: status, last completed step, the step running, the state decoded as
JSON, and the revisions kept. A task that uses no steps has no checkpoint: show
then looks for it in the tasks stream (queued), the DLQ (dead-lettered) and
the replies stream (answered), reading at most 20,000 messages of each.`,
		Example: `  agent task show quarterly-report
  agent task show 01JD7... --agent echo --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if history < 1 || history > 64 {
				return cliexit.UsageError(fmt.Errorf("--history %d: want 1..64", history))
			}
			return t.withSession(cmd, func(ctx context.Context, s *session) error {
				views, err := findTask(ctx, s, args[0], agent, history)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(stdout, views)
				}
				for i, v := range views {
					if i > 0 {
						fmt.Fprintln(stdout)
					}
					writeTask(stdout, v, time.Now())
				}
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", "", "the task's agent (default: look in every agent's)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.IntVar(&history, "history", 5, "checkpoint revisions to show, newest first (at most what the bucket keeps)")
	t.register(f)
	groupFlags(cmd, []flagGroup{{"Task", []string{"agent", "json", "history"}}, {"Connection", append(targetGroups, natsFlagNames()...)}})
	return cmd
}

// findTask returns what is known of taskID, for each agent that knows it.
func findTask(ctx context.Context, s *session, taskID, agent string, history int) ([]*taskView, error) {
	agents, err := candidateAgents(ctx, s, agent)
	if err != nil {
		return nil, err
	}
	store, err := snapshot.NewKV(s.conn.JetStream(), s.topo)
	if err != nil {
		return nil, err
	}
	var out []*taskView
	for _, a := range agents {
		snap, err := store.Load(ctx, a, taskID)
		if errors.Is(err, snapshot.ErrNotFound) || errors.Is(err, snapshot.ErrInvalid) {
			continue
		}
		if err != nil {
			return nil, err
		}
		v := &taskView{TaskID: taskID, Agent: a, Where: "checkpointed"}
		sv := viewOf(snap)
		v.Snapshot = &sv
		if hist, err := store.History(ctx, a, taskID, history); err == nil {
			for _, h := range hist {
				v.History = append(v.History, viewOf(h))
			}
		}
		out = append(out, v)
	}
	if len(out) > 0 {
		return out, nil
	}
	// No checkpoint: where is it?
	byAgent := map[string]*taskView{}
	get := func(a string) *taskView {
		if byAgent[a] == nil {
			byAgent[a] = &taskView{TaskID: taskID, Agent: a}
		}
		return byAgent[a]
	}
	filter := s.topo.AgentTasks("*")
	if agent != "" {
		filter = s.topo.AgentTasks(agent)
	}
	err = scanStream(ctx, s.conn.JetStream(), s.topo.TasksStream(), filter, func(m *jetstream.RawStreamMsg) bool {
		var env envelope.Envelope
		if envelope.Unmarshal(m.Data, &env) != nil || (env.TaskID != taskID && env.ID != taskID) {
			return true
		}
		get(env.Recipient).Queued = &queuedView{Subject: m.Subject, Sequence: m.Sequence, Published: m.Time, EnvelopeID: env.ID}
		return true
	})
	if err != nil {
		return nil, err
	}
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	dstore := dlq.NewStore(s.conn.JetStream(), s.topo)
	n := 0
	err = dstore.Each(ctx, dlq.Filter{Agent: agent}, func(e *dlq.Entry) error {
		if n++; n > scanLimit {
			return errStop
		}
		var env envelope.Envelope
		if envelope.Unmarshal(e.Data, &env) != nil || (env.TaskID != taskID && env.ID != taskID) {
			return nil
		}
		v := get(e.Agent)
		v.DLQ = append(v.DLQ, dlqView{ID: e.Seq, Reason: string(e.Reason), Error: e.Error, Stored: e.Stored})
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return nil, err
	}
	err = scanStream(ctx, s.conn.JetStream(), s.topo.RepliesStream(), s.topo.ReplySubject("*")+".>", func(m *jetstream.RawStreamMsg) bool {
		var env envelope.Envelope
		if envelope.Unmarshal(m.Data, &env) != nil || env.TaskID != taskID || (agent != "" && env.Sender != agent) {
			return true
		}
		rv := &replyView{Subject: m.Subject, Type: string(env.PayloadType), Stored: m.Time, RequestID: env.CorrelationID}
		if p, err := envelope.PayloadJSON(env.Payload); err == nil {
			rv.Payload = p
		}
		get(env.Sender).Reply = rv
		return true
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, err
	}
	for _, v := range byAgent {
		switch {
		case v.Queued != nil:
			v.Where = "queued"
		case len(v.DLQ) > 0:
			v.Where = "dead-lettered"
		case v.Reply != nil:
			v.Where = "answered"
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		where := "any agent's"
		if agent != "" {
			where = agent + "'s"
		}
		return nil, fmt.Errorf("task %s: no checkpoint, not queued, not dead-lettered, no reply kept, in %s tasks: it finished more than the replies stream keeps ago (1h by default), or never was", taskID, where)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Agent < out[j].Agent })
	return out, nil
}

var errStop = errors.New("stop")

// candidateAgents is agent, or every agent of the server.
func candidateAgents(ctx context.Context, s *session, agent string) ([]string, error) {
	if agent != "" {
		if err := bus.ValidateName(agent); err != nil {
			return nil, cliexit.UsageError(fmt.Errorf("--agent: %w", err))
		}
		return []string{agent}, nil
	}
	views, err := agentsOf(ctx, s)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(views))
	for i, v := range views {
		names[i] = v.Name
	}
	return names, nil
}

// scanStream reads the messages of stream matching filter, oldest first,
// at most scanLimit, until fn returns false. It reads by sequence (direct
// gets), which a work-queue stream allows where a second consumer is not.
func scanStream(ctx context.Context, js jetstream.JetStream, stream, filter string, fn func(m *jetstream.RawStreamMsg) bool) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("read %s: %w", stream, err)
	}
	seq := uint64(1)
	for range scanLimit {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", stream, err)
		}
		if !fn(m) {
			return nil
		}
		seq = m.Sequence + 1
	}
	return nil
}

func writeTask(w io.Writer, v *taskView, now time.Time) {
	fmt.Fprintf(w, "task %s of agent %s: %s\n", v.TaskID, v.Agent, v.Where)
	if s := v.Snapshot; s != nil {
		fmt.Fprintf(w, "  status:   %s\n  step:     %d (last completed)\n", s.Status, s.Step)
		if s.Running > 0 {
			fmt.Fprintf(w, "  running:  step %d (owner %s)\n", s.Running, s.Owner)
		}
		fmt.Fprintf(w, "  updated:  %s (%s ago), revision %d\n", s.Updated.UTC().Format(time.RFC3339), shortDuration(now.Sub(s.Updated)), s.Revision)
		if len(s.State) > 0 {
			fmt.Fprintf(w, "  state:    %s\n", s.State)
		}
		if len(v.History) > 1 {
			fmt.Fprintf(w, "  history (newest first):\n")
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "    REVISION\tSTATUS\tSTEP\tUPDATED\tSTATE")
			for _, h := range v.History {
				fmt.Fprintf(tw, "    %d\t%s\t%d\t%s\t%s\n", h.Revision, h.Status, h.Step, h.Updated.UTC().Format(time.RFC3339), clip(string(h.State), 60))
			}
			_ = tw.Flush()
		}
	}
	if q := v.Queued; q != nil {
		fmt.Fprintf(w, "  queued:   %s, stream sequence %d, published %s ago (envelope %s)\n", q.Subject, q.Sequence, shortDuration(now.Sub(q.Published)), q.EnvelopeID)
	}
	for _, d := range v.DLQ {
		fmt.Fprintf(w, "  dead letter %d: %s: %s (%s ago; replay show %d)\n", d.ID, d.Reason, clip(d.Error, 80), shortDuration(now.Sub(d.Stored)), d.ID)
	}
	if r := v.Reply; r != nil {
		fmt.Fprintf(w, "  reply:    %s on %s, %s ago\n", r.Type, r.Subject, shortDuration(now.Sub(r.Stored)))
		if len(r.Payload) > 0 {
			fmt.Fprintf(w, "  payload:  %s\n", clip(string(r.Payload), 200))
		}
	}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func newTaskLsCmd(stdout io.Writer) *cobra.Command {
	var t target
	var agent, status string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List checkpointed tasks (tasks that use steps), by agent and status",
		Long: `ls lists the tasks that have a checkpoint (a snapshot): tasks whose handler
uses steps or checkpoints, and cancel markers. Tasks without steps leave none:
"agent ls" counts them in the queue, "agent task show ID" finds one.`,
		Example: `  agent task ls
  agent task ls --agent report --status working`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if status != "" && !snapshot.Status(status).Valid() {
				known := []string{"submitted", "working", "input_required", "completed", "failed", "cancelled"}
				return cliexit.UsageError(notFound("status", status, known))
			}
			return t.withSession(cmd, func(ctx context.Context, s *session) error {
				agents, err := candidateAgents(ctx, s, agent)
				if err != nil {
					return err
				}
				store, err := snapshot.NewKV(s.conn.JetStream(), s.topo)
				if err != nil {
					return err
				}
				type row struct {
					Agent  string `json:"agent"`
					TaskID string `json:"task_id"`
					snapshotView
				}
				var rows []row
				for _, a := range agents {
					snaps, err := store.List(ctx, a)
					if err != nil && !errors.Is(err, snapshot.ErrInvalid) {
						return err
					}
					for _, sn := range snaps {
						if status == "" || string(sn.Status) == status {
							rows = append(rows, row{Agent: a, TaskID: sn.TaskID, snapshotView: viewOf(sn)})
						}
					}
				}
				if asJSON {
					if rows == nil {
						rows = []row{}
					}
					return writeJSON(stdout, rows)
				}
				if len(rows) == 0 {
					_, err := fmt.Fprintln(stdout, "no checkpointed tasks match (tasks without steps leave none: see agent ls)")
					return err
				}
				tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "AGENT\tTASK\tSTATUS\tSTEP\tRUNNING\tUPDATED")
				now := time.Now()
				for _, r := range rows {
					running := "-"
					if r.Running > 0 {
						running = fmt.Sprint(r.Running)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s ago\n", r.Agent, r.TaskID, r.Status, r.Step, running, shortDuration(now.Sub(r.Updated)))
				}
				return tw.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&agent, "agent", "", "only this agent's tasks")
	f.StringVar(&status, "status", "", "only tasks in this status: submitted, working, input_required, completed, failed, cancelled")
	f.BoolVar(&asJSON, "json", false, "print a JSON array")
	t.register(f)
	groupFlags(cmd, []flagGroup{{"Selection", []string{"agent", "status", "json"}}, {"Connection", append(targetGroups, natsFlagNames()...)}})
	return cmd
}

func newTaskCancelCmd(stdout, stderr io.Writer) *cobra.Command {
	var o sendOptions
	cmd := &cobra.Command{
		Use:   "cancel TASK_ID --agent NAME",
		Short: "Cancel a task: it stops at its next step or checkpoint, or before it starts",
		Long: `cancel sends the agent a task.cancel for the task and prints the agent's
answer (a task.update with the task's state). A running task stops at its next
step or checkpoint; one not started yet stops before its first. A task that
uses no steps and is already running finishes anyway.`,
		Example: `  agent task cancel quarterly-report --agent report`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.to == "" {
				return cliexit.UsageError(errors.New("--agent is required: the agent that runs the task (agent task show ID finds it)"))
			}
			o.taskID, o.typ, o.payload = args[0], string(envelope.TaskCancel), "null"
			return o.run(cmd.Context(), strings.NewReader(""), stdout, stderr, false)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "agent", "", "`NAME` of the task's agent (required)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the agent's answer")
	f.StringVar(&o.from, "from", "cli", "sender `NAME` on the envelope")
	o.server.Register(f, "default "+"nats://127.0.0.1:4222")
	f.StringVar(&o.prefix, "prefix", "jetagent", "subject `PREFIX` the agents use [$JETAGENT_PREFIX]")
	f.StringVar(&o.client, "client", os.Getenv("JETAGENT_CLIENT"), "client `NAME` for the answer [$JETAGENT_CLIENT]")
	o.nats.Register(f)
	groupFlags(cmd, []flagGroup{{"Task", []string{"agent", "timeout", "from", "client"}}, {"Connection", append([]string{"nats", "context", "prefix"}, natsFlagNames()...)}})
	return cmd
}
