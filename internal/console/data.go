package console

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/nats-io/nats.go/jetstream"
)

// agentView is what the console knows of one agent: its consumer on the
// tasks stream (shared by its replicas) and its dead letters.
type agentView struct {
	Name string
	// Consumer is nil for an agent known only from its dead letters or
	// its queued tasks (no consumer: nothing takes its tasks).
	Consumer *jetstream.ConsumerInfo
	// Queued counts the agent's messages in the tasks stream (delivered
	// or not), from the stream's per-subject counts.
	Queued uint64
	// DLQ counts its dead letters.
	DLQ uint64
	// Rate is deliveries per second over the last sampling interval
	// (-1: not known yet).
	Rate float64
	// Status is what the agent's replicas last reported (nil: none).
	Status *agentStatus
}

// Pending, AckPending, Redelivered and Waiting read the consumer.
func (a agentView) Pending() uint64 {
	if a.Consumer == nil {
		return a.Queued
	}
	return a.Consumer.NumPending
}

func (a agentView) AckPending() int {
	if a.Consumer == nil {
		return 0
	}
	return a.Consumer.NumAckPending
}

func (a agentView) Redelivered() int {
	if a.Consumer == nil {
		return 0
	}
	return a.Consumer.NumRedelivered
}

func (a agentView) Waiting() int {
	if a.Consumer == nil {
		return 0
	}
	return a.Consumer.NumWaiting
}

// OpenBreakers lists the subjects whose breaker a replica reports open or
// half-open.
func (a agentView) OpenBreakers() []breakerView {
	if a.Status == nil {
		return nil
	}
	var out []breakerView
	for _, b := range a.Status.Breakers {
		if b.State != "closed" {
			out = append(out, b)
		}
	}
	return out
}

// snapshotOfAgents is one read of every agent.
type snapshotOfAgents struct {
	At     time.Time
	Agents []agentView
	// DLQTotal is the DLQ stream's message count; DLQLast its last
	// sequence.
	DLQTotal, DLQLast uint64
	// Errs says what could not be read (permissions, a missing stream),
	// shown on the pages instead of failing them.
	Errs []string
}

func (s *snapshotOfAgents) agent(name string) *agentView {
	for i := range s.Agents {
		if s.Agents[i].Name == name {
			return &s.Agents[i]
		}
	}
	return nil
}

// names returns the agents' names, sorted.
func (s *snapshotOfAgents) names() []string {
	out := make([]string, len(s.Agents))
	for i, a := range s.Agents {
		out[i] = a.Name
	}
	return out
}

// errNotConnected says the console's NATS connection is down: pages say
// so at once instead of waiting for each request's timeout.
var errNotConnected = errors.New("not connected to NATS")

// connected returns nil while the NATS connection is up, else an error
// saying its state and that the console waits for it.
func (s *Server) connected() error {
	nc := s.cfg.Conn.NATS()
	if nc.IsConnected() {
		return nil
	}
	return fmt.Errorf("%w (connection %s): the console shows what it reads once the server is back", errNotConnected, strings.ToLower(nc.Status().String()))
}

// readAgents reads every agent's consumer, queued tasks and dead-letter
// count: a few requests, whatever the number of dead letters.
func (s *Server) readAgents(ctx context.Context) *snapshotOfAgents {
	out := &snapshotOfAgents{At: time.Now()}
	if err := s.connected(); err != nil {
		out.Errs = append(out.Errs, err.Error())
		return out
	}
	byName := map[string]*agentView{}
	get := func(name string) *agentView {
		if a, ok := byName[name]; ok {
			return a
		}
		a := &agentView{Name: name, Rate: -1}
		byName[name] = a
		return a
	}
	js := s.cfg.Conn.JetStream()
	topo := s.cfg.Topology
	tasksPrefix := strings.TrimSuffix(topo.AgentTasks(""), ".>") // "<p>.tasks."

	if st, err := js.Stream(ctx, topo.TasksStream()); err != nil {
		out.Errs = append(out.Errs, fmt.Sprintf("tasks stream %s: %v", topo.TasksStream(), err))
	} else {
		if info, err := st.Info(ctx, jetstream.WithSubjectFilter(topo.AgentTasks("*"))); err != nil {
			out.Errs = append(out.Errs, fmt.Sprintf("tasks stream counts: %v", err))
		} else {
			for subj, n := range info.State.Subjects {
				rest := strings.TrimPrefix(subj, tasksPrefix)
				if name, _, ok := strings.Cut(rest, "."); ok && name != "" {
					get(name).Queued += n
				}
			}
		}
		lister := st.ListConsumers(ctx)
		for ci := range lister.Info() {
			if ci.Config.Durable == "" {
				continue // ephemeral: not an agent
			}
			get(ci.Name).Consumer = ci
		}
		if err := lister.Err(); err != nil {
			out.Errs = append(out.Errs, "agents' consumers: "+errText(err))
		}
	}
	if st, err := js.Stream(ctx, topo.DLQStream()); err != nil {
		out.Errs = append(out.Errs, fmt.Sprintf("DLQ stream %s: %v", topo.DLQStream(), err))
	} else if info, err := st.Info(ctx, jetstream.WithSubjectFilter(topo.AgentDLQ("*"))); err != nil {
		out.Errs = append(out.Errs, fmt.Sprintf("DLQ counts: %v", err))
	} else {
		out.DLQTotal, out.DLQLast = info.State.Msgs, info.State.LastSeq
		for subj, n := range info.State.Subjects {
			if name, ok := topo.DLQAgent(subj); ok {
				get(name).DLQ += n
			}
		}
	}
	for name, st := range s.statuses.all() {
		get(name).Status = st
	}
	for _, a := range byName {
		out.Agents = append(out.Agents, *a)
	}
	sort.Slice(out.Agents, func(i, j int) bool { return out.Agents[i].Name < out.Agents[j].Name })
	s.rates.apply(out)
	return out
}

// rateKeeper turns consecutive reads of the consumers' delivered counts
// into deliveries per second, and keeps a history for the chart.
type rateKeeper struct {
	mu      sync.Mutex
	last    map[string]counted
	history []ratePoint // oldest first
	max     int
}

type counted struct {
	at        time.Time
	delivered uint64
}

// ratePoint is the rate of every agent at one time.
type ratePoint struct {
	At    time.Time
	Rates map[string]float64
}

func newRateKeeper(points int) *rateKeeper {
	return &rateKeeper{last: map[string]counted{}, max: points}
}

// apply sets each agent's Rate from the previous read, without recording
// (pages read more often than the sampler).
func (k *rateKeeper) apply(s *snapshotOfAgents) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.history) == 0 {
		return
	}
	p := k.history[len(k.history)-1]
	for i := range s.Agents {
		if r, ok := p.Rates[s.Agents[i].Name]; ok {
			s.Agents[i].Rate = r
		}
	}
}

// record adds a point to the history from s.
func (k *rateKeeper) record(s *snapshotOfAgents) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := ratePoint{At: s.At, Rates: map[string]float64{}}
	for _, a := range s.Agents {
		if a.Consumer == nil {
			continue
		}
		cur := counted{at: s.At, delivered: a.Consumer.Delivered.Consumer}
		if prev, ok := k.last[a.Name]; ok && cur.at.After(prev.at) && cur.delivered >= prev.delivered {
			p.Rates[a.Name] = float64(cur.delivered-prev.delivered) / cur.at.Sub(prev.at).Seconds()
		}
		k.last[a.Name] = cur
	}
	k.history = append(k.history, p)
	if len(k.history) > k.max {
		k.history = slices.Clone(k.history[len(k.history)-k.max:])
	}
}

func (k *rateKeeper) points() []ratePoint {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.history)
}

// errText renders an error for a page: a refused permission shows as such.
func errText(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return err.Error() + " (no answer: if the server enforces permissions, the console's user may lack one; see docs/security.md)"
	}
	return err.Error()
}

// taskType returns the payload type of a task subject of topo
// ("<p>.tasks.<agent>.<type>"), or "" for another subject.
func taskType(topo bus.Topology, subject string) string {
	rest, ok := strings.CutPrefix(subject, strings.TrimSuffix(topo.AgentTasks(""), ".>"))
	if !ok {
		return ""
	}
	_, typ, _ := strings.Cut(rest, ".")
	return typ
}
