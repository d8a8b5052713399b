package console

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/jetagent/jetagent/runtime/beacon"
)

// agentStatus merges the latest reports of an agent's replicas.
type agentStatus struct {
	// Replicas are the replicas heard from lately, by name.
	Replicas []replicaStatus
	// Breakers is each subject's worst state across the replicas (open,
	// then half-open, then closed), with the replicas in that state.
	Breakers []breakerView
}

type replicaStatus struct {
	Name     string
	Seen     time.Time
	InFlight int
	Queued   uint64
	Holding  uint64
	Received uint64
}

// InFlight sums the replicas' running handlers.
func (s *agentStatus) InFlight() int {
	n := 0
	for _, r := range s.Replicas {
		n += r.InFlight
	}
	return n
}

type breakerView struct {
	Subject, State string
	Replicas       []string
}

// statusStore keeps the latest report of every replica, forgetting
// replicas silent for three of their intervals.
type statusStore struct {
	mu      sync.Mutex
	reports map[string]map[string]*beacon.Report // agent -> replica -> report
	seen    map[*beacon.Report]time.Time
}

func newStatusStore() *statusStore {
	return &statusStore{reports: map[string]map[string]*beacon.Report{}, seen: map[*beacon.Report]time.Time{}}
}

// update stores r and returns the breaker transitions it announces, in
// words.
func (s *statusStore) update(r *beacon.Report, now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	byReplica := s.reports[r.Agent]
	if byReplica == nil {
		byReplica = map[string]*beacon.Report{}
		s.reports[r.Agent] = byReplica
	}
	prev := byReplica[r.Replica]
	if prev != nil {
		delete(s.seen, prev)
	}
	var changes []string
	before := map[string]string{}
	if prev != nil {
		for _, b := range prev.Breakers {
			before[b.Subject] = b.State
		}
	}
	for _, b := range r.Breakers {
		old, ok := before[b.Subject]
		if !ok {
			old = "closed"
		}
		if old != b.State {
			changes = append(changes, fmt.Sprintf("breaker of %s at agent %s (replica %s): %s -> %s", b.Subject, r.Agent, r.Replica, old, b.State))
		}
	}
	if r.Stopping {
		delete(byReplica, r.Replica)
		return changes
	}
	byReplica[r.Replica] = r
	s.seen[r] = now
	return changes
}

// all returns every agent's merged status, dropping silent replicas.
func (s *statusStore) all() map[string]*agentStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := map[string]*agentStatus{}
	rank := map[string]int{"closed": 0, "half-open": 1, "open": 2}
	for agent, byReplica := range s.reports {
		st := &agentStatus{}
		worst := map[string]*breakerView{}
		for name, r := range byReplica {
			seen := s.seen[r]
			if now.Sub(seen) > 3*time.Duration(max(r.IntervalMS, 1000))*time.Millisecond {
				delete(byReplica, name)
				delete(s.seen, r)
				continue
			}
			st.Replicas = append(st.Replicas, replicaStatus{Name: name, Seen: seen, InFlight: r.InFlight, Queued: r.Queued, Holding: r.Holding, Received: r.Received})
			for _, b := range r.Breakers {
				w := worst[b.Subject]
				switch {
				case w == nil || rank[b.State] > rank[w.State]:
					worst[b.Subject] = &breakerView{Subject: b.Subject, State: b.State, Replicas: []string{name}}
				case rank[b.State] == rank[w.State]:
					w.Replicas = append(w.Replicas, name)
				}
			}
		}
		if len(st.Replicas) == 0 {
			continue
		}
		sort.Slice(st.Replicas, func(i, j int) bool { return st.Replicas[i].Name < st.Replicas[j].Name })
		for _, b := range worst {
			sort.Strings(b.Replicas)
			st.Breakers = append(st.Breakers, *b)
		}
		sort.Slice(st.Breakers, func(i, j int) bool { return st.Breakers[i].Subject < st.Breakers[j].Subject })
		out[agent] = st
	}
	return out
}
