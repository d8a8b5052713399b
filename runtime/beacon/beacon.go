package beacon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// DefaultInterval is how often a Beacon reports unless told otherwise.
const DefaultInterval = 5 * time.Second

// Report is one replica's status.
type Report struct {
	Agent string `json:"agent"`
	// Replica names the runtime: host, process id and a counter.
	Replica string    `json:"replica"`
	At      time.Time `json:"at"`
	// IntervalMS is how often the replica reports, so a reader can tell
	// when it is gone (no report for a few intervals).
	IntervalMS int64 `json:"interval_ms"`
	// InFlight counts the handlers running; Queued the deliveries waiting
	// for a worker; Holding those held by an open breaker.
	InFlight int    `json:"in_flight"`
	Queued   uint64 `json:"queued"`
	Holding  uint64 `json:"holding"`
	// Counters since the replica started (runtime.Stats).
	Received     uint64 `json:"received"`
	Succeeded    uint64 `json:"succeeded"`
	Retried      uint64 `json:"retried"`
	DeadLettered uint64 `json:"dead_lettered"`
	// Breakers lists every subject's breaker, by subject.
	Breakers []Breaker `json:"breakers"`
	// Change is set on the report sent for a breaker transition.
	Change *Breaker `json:"change,omitempty"`
	// Stopping marks the last report of a replica that stops.
	Stopping bool `json:"stopping,omitempty"`
}

// Breaker is one subject's breaker state: "closed", "half-open" or "open".
type Breaker struct {
	Subject string `json:"subject"`
	State   string `json:"state"`
}

// Subject returns the subject agent's reports are published on.
func Subject(topo bus.Topology, agent string) string {
	return prefix(topo) + ".status." + agent
}

// Subjects returns the wildcard matching every agent's reports.
func Subjects(topo bus.Topology) string { return prefix(topo) + ".status.*" }

func prefix(topo bus.Topology) string {
	if topo.Prefix == "" {
		return bus.DefaultPrefix
	}
	return topo.Prefix
}

// ErrNotReport is returned by Decode for a message that is not a report.
var ErrNotReport = errors.New("beacon: not a status report")

// Decode reads a report, refusing one without agent or replica.
func Decode(data []byte) (*Report, error) {
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotReport, err)
	}
	if r.Agent == "" || r.Replica == "" {
		return nil, ErrNotReport
	}
	return &r, nil
}

// Options configure a Beacon.
type Options struct {
	// Interval is how often it reports. Zero: DefaultInterval.
	Interval time.Duration
}

var replicas atomic.Uint64

// Beacon reports one runtime's status. Its methods are safe for
// concurrent use.
type Beacon struct {
	conn     *bus.Conn
	subject  string
	agent    string
	replica  string
	interval time.Duration

	changed chan Breaker // transitions, in order; dropped when full
	mu      sync.Mutex
	rt      *runtime.Runtime
	stop    chan struct{}
	done    chan struct{}
}

// New returns a Beacon for agent's runtime on conn; it reports nothing
// until Start.
func New(conn *bus.Conn, topo bus.Topology, agent string, opts Options) *Beacon {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	host, _ := os.Hostname()
	return &Beacon{
		conn: conn, subject: Subject(topo, agent), agent: agent, interval: opts.Interval,
		replica: host + ":" + strconv.Itoa(os.Getpid()) + ":" + strconv.FormatUint(replicas.Add(1), 10),
		changed: make(chan Breaker, 64),
	}
}

// Replica returns the name the beacon reports its runtime under.
func (b *Beacon) Replica() string { return b.replica }

// Observer returns a runtime.Observer that passes every event to next
// (which may be nil) and has the beacon report each breaker transition.
func (b *Beacon) Observer(next runtime.Observer) runtime.Observer {
	return &observer{b: b, next: next}
}

type observer struct {
	b    *Beacon
	next runtime.Observer
}

func (o *observer) Delivered(subject string) {
	if o.next != nil {
		o.next.Delivered(subject)
	}
}

func (o *observer) Settled(subject string, outcome runtime.Outcome, handler time.Duration) {
	if o.next != nil {
		o.next.Settled(subject, outcome, handler)
	}
}

func (o *observer) BreakerChanged(subject string, state resilience.State) {
	if o.next != nil {
		o.next.BreakerChanged(subject, state)
	}
	select { // never block the runtime: a transition lost here shows in the next report
	case o.b.changed <- Breaker{Subject: subject, State: state.String()}:
	default:
	}
}

func (o *observer) Heartbeat() {
	if o.next != nil {
		o.next.Heartbeat()
	}
}

// Start begins reporting rt's status (at once, then every interval). A
// second Start does nothing.
func (b *Beacon) Start(rt *runtime.Runtime) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rt != nil {
		return
	}
	b.rt, b.stop, b.done = rt, make(chan struct{}), make(chan struct{})
	go b.run(b.stop, b.done)
}

// Stop sends a last report (Stopping) and ends the reports. Safe to call
// twice, and before Start.
func (b *Beacon) Stop() {
	b.mu.Lock()
	stop, done := b.stop, b.done
	b.stop = nil
	b.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-done
}

func (b *Beacon) run(stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(b.interval)
	defer t.Stop()
	b.publish(nil, false)
	for {
		select {
		case <-stop:
			b.publish(nil, true)
			_ = b.conn.NATS().Flush()
			return
		case <-t.C:
			b.publish(nil, false)
		case c := <-b.changed:
			b.publish(&c, false)
		}
	}
}

// Report returns the runtime's status now (nil before Start).
func (b *Beacon) Report() *Report {
	b.mu.Lock()
	rt := b.rt
	b.mu.Unlock()
	if rt == nil {
		return nil
	}
	st := rt.Stats()
	r := &Report{
		Agent: b.agent, Replica: b.replica, At: time.Now().UTC(), IntervalMS: b.interval.Milliseconds(),
		InFlight: rt.InFlight(), Queued: st.Queued, Holding: st.Holding,
		Received: st.Received, Succeeded: st.Succeeded, Retried: st.Retried, DeadLettered: st.DeadLettered,
		Breakers: []Breaker{},
	}
	for subj, state := range rt.Breakers().States() {
		r.Breakers = append(r.Breakers, Breaker{Subject: subj, State: state.String()})
	}
	sort.Slice(r.Breakers, func(i, j int) bool { return r.Breakers[i].Subject < r.Breakers[j].Subject })
	return r
}

func (b *Beacon) publish(change *Breaker, stopping bool) {
	r := b.Report()
	if r == nil {
		return
	}
	r.Change, r.Stopping = change, stopping
	if change != nil {
		// The registry may not show the new state yet when the
		// transition is reported: the report says what it announces.
		found := false
		for i := range r.Breakers {
			if r.Breakers[i].Subject == change.Subject {
				r.Breakers[i].State, found = change.State, true
			}
		}
		if !found {
			r.Breakers = append(r.Breakers, *change)
		}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return
	}
	_ = b.conn.NATS().Publish(b.subject, data) // core NATS, buffered: never blocks the agent for long
}
