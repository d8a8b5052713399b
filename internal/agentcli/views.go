package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/expfmt"
	"github.com/spf13/cobra"
)

// agentView is one agent as the server sees it: its durable consumer on
// the tasks stream, the tasks stored for it, its dead letters.
type agentView struct {
	Name string `json:"name"`
	// Consumer is false for subjects with tasks but no consumer: nobody
	// named so has ever consumed here, and the tasks wait for ever.
	Consumer bool `json:"consumer"`
	// Pending: tasks not delivered yet; AckPending: delivered, not
	// settled (running, queued in an agent, or held by a breaker);
	// Redelivered: of those, delivered more than once.
	Pending     uint64 `json:"pending"`
	AckPending  int    `json:"ack_pending"`
	Redelivered int    `json:"redelivered"`
	// Pullers counts outstanding pull requests: about one per running
	// replica (0: none is running).
	Pullers int `json:"pullers"`
	// Stored is how many tasks the stream holds for the agent; Oldest is
	// when the oldest of them was published.
	Stored uint64     `json:"stored"`
	Oldest *time.Time `json:"oldest,omitempty"`
	// LastDelivery is when the server last handed the agent a task.
	LastDelivery *time.Time `json:"last_delivery,omitempty"`
	// DeadLetters counts the agent's DLQ entries; ByReason (status only)
	// splits them.
	DeadLetters uint64         `json:"dead_letters"`
	ByReason    map[string]int `json:"dead_letters_by_reason,omitempty"`
	// Breakers is the agent's breaker state per subject, read from its
	// --ops-listen /metrics (status --ops only): closed, half-open, open.
	Breakers map[string]string `json:"breakers,omitempty"`
}

// agentsOf reads every agent of the server: consumers of the tasks
// stream, and agents with tasks stored but no consumer.
func agentsOf(ctx context.Context, s *session) ([]*agentView, error) {
	js := s.conn.JetStream()
	st, err := js.Stream(ctx, s.topo.TasksStream())
	if err != nil {
		return nil, fmt.Errorf("tasks stream: %w", err)
	}
	prefix := strings.TrimSuffix(s.topo.AgentTasks("X"), "X.>")
	stored := map[string]uint64{}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("tasks stream: %w", err)
	}
	for subj, n := range info.State.Subjects {
		agent, _, _ := strings.Cut(strings.TrimPrefix(subj, prefix), ".")
		stored[agent] += n
	}
	views := map[string]*agentView{}
	lister := st.ListConsumers(ctx)
	for ci := range lister.Info() {
		v := &agentView{Name: ci.Name, Consumer: true, Pending: ci.NumPending, AckPending: ci.NumAckPending,
			Redelivered: ci.NumRedelivered, Pullers: ci.NumWaiting, LastDelivery: ci.Delivered.Last}
		views[ci.Name] = v
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("tasks stream consumers: %w", err)
	}
	for agent, n := range stored {
		v := views[agent]
		if v == nil {
			v = &agentView{Name: agent, Pending: n}
			views[agent] = v
		}
		v.Stored = n
		if m, err := st.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(s.topo.AgentTasks(agent))); err == nil {
			t := m.Time
			v.Oldest = &t
		}
	}
	if dst, err := js.Stream(ctx, s.topo.DLQStream()); err == nil {
		dprefix := strings.TrimSuffix(s.topo.AgentDLQ("X"), "X.>")
		if dinfo, err := dst.Info(ctx, jetstream.WithSubjectFilter(dprefix+">")); err == nil {
			for subj, n := range dinfo.State.Subjects {
				agent, _, _ := strings.Cut(strings.TrimPrefix(subj, dprefix), ".")
				if v := views[agent]; v != nil {
					v.DeadLetters += n
				} else {
					views[agent] = &agentView{Name: agent, Consumer: false, DeadLetters: n}
				}
			}
		}
	}
	out := make([]*agentView, 0, len(views))
	for _, v := range views {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// note says what an operator should know about v, in a few words.
func (v *agentView) note(now time.Time) string {
	switch {
	case !v.Consumer && v.Stored > 0:
		return "no consumer: nobody named " + v.Name + " has consumed here; its tasks wait until one starts"
	case !v.Consumer:
		return "no consumer (dead letters only)"
	case v.Pullers == 0 && v.Pending > 0:
		return "not running: tasks are waiting"
	case v.Pullers == 0:
		return "not running"
	case v.Redelivered > 0:
		return "redelivering: see replay list --agent " + v.Name
	}
	return ""
}

func ago(t *time.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	return shortDuration(now.Sub(*t))
}

func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "0s"
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

func writeAgents(w io.Writer, views []*agentView, now time.Time) error {
	if len(views) == 0 {
		_, err := fmt.Fprintln(w, "no agents: none has consumed on this server, and no task waits (wrong --prefix? start one: agent run)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tPENDING\tACK PENDING\tREDELIVERED\tOLDEST\tPULLERS\tDLQ\tLAST DELIVERY\tNOTE")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n", v.Name, v.Pending, v.AckPending, v.Redelivered,
			ago(v.Oldest, now), v.Pullers, v.DeadLetters, ago(v.LastDelivery, now), v.note(now))
	}
	return tw.Flush()
}

// watchFlags are --watch and --interval.
type watchFlags struct {
	watch    bool
	interval time.Duration
}

// loop runs frame once, or every interval until ctx ends (an interrupt
// ends a watch normally: exit 0), redrawing in place on a terminal.
func (wf watchFlags) loop(ctx context.Context, w io.Writer, frame func(ctx context.Context, w io.Writer) error) error {
	if !wf.watch {
		return frame(ctx, w)
	}
	if wf.interval < 100*time.Millisecond {
		return cliexit.UsageError(fmt.Errorf("--interval %v: at least 100ms", wf.interval))
	}
	term := isTerminal(w)
	tick := time.NewTicker(wf.interval)
	defer tick.Stop()
	for {
		var buf strings.Builder
		if err := frame(ctx, &buf); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if term {
			fmt.Fprint(w, "\033[H\033[2J") // home, clear: redraw in place
		} else {
			fmt.Fprintln(w, "---", time.Now().UTC().Format(time.RFC3339))
		}
		fmt.Fprint(w, buf.String())
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func newLsCmd(stdout io.Writer) *cobra.Command {
	var t target
	var wf watchFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the agents on the server: backlog, in flight, redelivered, oldest task, replicas, dead letters",
		Long: `ls lists every agent the server knows: each durable consumer of the tasks
stream (one per agent name, shared by its replicas), and every agent name that
has tasks waiting but no consumer (a typo in "agent send --to", or an agent
that never started: its tasks wait for ever).

Columns: PENDING tasks not delivered yet; ACK PENDING delivered and not settled
(running, queued in an agent, or held by an open breaker); REDELIVERED of those,
delivered more than once; OLDEST age of the oldest task stored for the agent;
PULLERS outstanding pull requests (about one per running replica; 0: none runs);
DLQ dead letters (replay stats --agent NAME); LAST DELIVERY when the server last
handed the agent a task. "agent status NAME" shows one agent in detail.`,
		Example: `  agent ls
  agent ls --watch --interval 1s
  agent ls --json | jq '.[] | select(.pending > 100) | .name'
  agent ls --data-dir /var/lib/jetagent`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return wf.loop(cmd.Context(), stdout, func(ctx context.Context, w io.Writer) error {
				return t.withSession(cmd, func(ctx context.Context, s *session) error {
					views, err := agentsOf(ctx, s)
					if err != nil {
						return err
					}
					if asJSON {
						return writeJSON(w, views)
					}
					return writeAgents(w, views, time.Now())
				})
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print a JSON array")
	f.BoolVarP(&wf.watch, "watch", "w", false, "refresh every --interval until interrupted")
	f.DurationVar(&wf.interval, "interval", 2*time.Second, "refresh period of --watch")
	t.register(f)
	groupFlags(cmd, []flagGroup{{"Output", []string{"json", "watch", "interval"}}, {"Connection", append(targetGroups, natsFlagNames()...)}})
	return cmd
}

func newStatusCmd(stdout io.Writer) *cobra.Command {
	var t target
	var wf watchFlags
	var asJSON bool
	var ops string
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show one agent in detail (all of them without NAME): queue, dead letters by reason, breakers",
		Long: `status shows what ls shows, one agent per block, with its dead letters by
reason and, with --ops, its breakers per subject as the agent reports them on
its --ops-listen endpoint (breaker states live in the agent process, not on the
server).`,
		Example: `  agent status echo
  agent status echo --ops http://127.0.0.1:9464
  agent status --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if ops != "" {
				if u, err := url.Parse(ops); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
					return cliexit.UsageError(fmt.Errorf("--ops %q: want the agent's --ops-listen as a URL, http://HOST:PORT", ops))
				}
			}
			return wf.loop(cmd.Context(), stdout, func(ctx context.Context, w io.Writer) error {
				return t.withSession(cmd, func(ctx context.Context, s *session) error {
					views, err := agentsOf(ctx, s)
					if err != nil {
						return err
					}
					if len(args) == 1 {
						views, err = pick(views, args[0])
						if err != nil {
							return err
						}
					}
					store := dlq.NewStore(s.conn.JetStream(), s.topo)
					for _, v := range views {
						if v.DeadLetters > 0 {
							if st, err := store.Stats(ctx, dlq.Filter{Agent: v.Name}); err == nil {
								v.ByReason = map[string]int{}
								for r, n := range st.ByReason {
									v.ByReason[string(r)] = n
								}
							}
						}
						if ops != "" {
							if v.Breakers, err = breakersOf(ctx, ops, v.Name); err != nil {
								return err
							}
						}
					}
					if asJSON {
						return writeJSON(w, views)
					}
					return writeStatus(w, views, time.Now(), ops != "")
				})
			})
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print a JSON array")
	f.StringVar(&ops, "ops", "", "`URL` of the agent's --ops-listen endpoint (http://HOST:PORT), to show its breakers")
	f.BoolVarP(&wf.watch, "watch", "w", false, "refresh every --interval until interrupted")
	f.DurationVar(&wf.interval, "interval", 2*time.Second, "refresh period of --watch")
	t.register(f)
	groupFlags(cmd, []flagGroup{{"Output", []string{"json", "ops", "watch", "interval"}}, {"Connection", append(targetGroups, natsFlagNames()...)}})
	return cmd
}

// pick returns the view of name, or an error listing the known agents.
func pick(views []*agentView, name string) ([]*agentView, error) {
	var names []string
	for _, v := range views {
		if v.Name == name {
			return []*agentView{v}, nil
		}
		names = append(names, v.Name)
	}
	return nil, notFound("agent", name, names)
}

func writeStatus(w io.Writer, views []*agentView, now time.Time, withOps bool) error {
	if len(views) == 0 {
		return writeAgents(w, nil, now)
	}
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "agent %s\n", v.Name)
		if n := v.note(now); n != "" {
			fmt.Fprintf(w, "  note:          %s\n", n)
		}
		fmt.Fprintf(w, "  pending:       %d\n  ack pending:   %d\n  redelivered:   %d\n", v.Pending, v.AckPending, v.Redelivered)
		fmt.Fprintf(w, "  stored tasks:  %d (oldest %s ago)\n", v.Stored, ago(v.Oldest, now))
		fmt.Fprintf(w, "  pullers:       %d (outstanding pull requests: about one per running replica)\n", v.Pullers)
		fmt.Fprintf(w, "  last delivery: %s ago\n", ago(v.LastDelivery, now))
		fmt.Fprintf(w, "  dead letters:  %d", v.DeadLetters)
		if len(v.ByReason) > 0 {
			reasons := make([]string, 0, len(v.ByReason))
			for r, n := range v.ByReason {
				reasons = append(reasons, fmt.Sprintf("%s %d", r, n))
			}
			sort.Strings(reasons)
			fmt.Fprintf(w, " (%s; replay list --agent %s)", strings.Join(reasons, ", "), v.Name)
		}
		fmt.Fprintln(w)
		switch {
		case !withOps:
			fmt.Fprintf(w, "  breakers:      known to the agent process only: pass --ops http://HOST:PORT (its --ops-listen)\n")
		case len(v.Breakers) == 0:
			fmt.Fprintf(w, "  breakers:      none reported (no task handled yet)\n")
		default:
			subjects := make([]string, 0, len(v.Breakers))
			for s := range v.Breakers {
				subjects = append(subjects, s)
			}
			sort.Strings(subjects)
			for _, s := range subjects {
				fmt.Fprintf(w, "  breaker:       %s %s\n", s, v.Breakers[s])
			}
		}
	}
	return nil
}

// breakersOf scrapes jetagent_breaker_state of agent from an ops endpoint.
func breakersOf(ctx context.Context, ops, agent string) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(ops, "/")+"/metrics", nil)
	if err != nil {
		return nil, cliexit.UsageError(fmt.Errorf("--ops %q: %w", ops, err))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("--ops %s: %w", ops, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("--ops %s: /metrics answered %s", ops, resp.Status)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("--ops %s: /metrics: %w", ops, err)
	}
	out := map[string]string{}
	fam := families["jetagent_breaker_state"]
	if fam == nil {
		return out, nil
	}
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["agent"] != agent {
			continue
		}
		state := "closed"
		switch m.GetGauge().GetValue() {
		case 1:
			state = "half-open"
		case 2:
			state = "open"
		}
		out[labels["subject"]] = state
	}
	return out, nil
}

// notFound is the error for a name that is not among known, with a
// "did you mean".
func notFound(what, name string, known []string) error {
	msg := fmt.Sprintf("no %s named %s here", what, name)
	if len(known) > 0 {
		msg += " (known: " + strings.Join(known, ", ") + ")"
		if near := closestName(name, known); near != "" {
			msg += fmt.Sprintf("; did you mean %q?", near)
		}
	}
	return errors.New(msg)
}
