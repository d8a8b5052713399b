package console

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/runtime/beacon"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startWatchers starts the goroutines behind the chart and the live page:
// the sampler, the new-dead-letter poll, the replay marks' watcher and the
// agents' status reports. Each ends when the console stops.
func (s *Server) startWatchers() {
	for _, fn := range []func(){s.sample, s.pollDeadLetters, s.watchReplays, s.watchStatus} {
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			fn()
		}()
	}
}

// every runs fn now and then every d until the console stops.
func (s *Server) every(d time.Duration, fn func(ctx context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(s.jobCtx, max(d, 5*time.Second))
		fn(ctx)
		cancel()
		select {
		case <-s.stopping:
			return
		case <-t.C:
		}
	}
}

// sample records the agents' delivery rates for the chart.
func (s *Server) sample() {
	s.every(s.cfg.SampleInterval, func(ctx context.Context) {
		s.rates.record(s.readAgents(ctx))
	})
}

// pollDeadLetters announces the dead letters stored since the last look
// (at most 50 per look: a flood shows as a count).
func (s *Server) pollDeadLetters() {
	var last uint64
	first := true
	s.every(s.cfg.LiveInterval, func(ctx context.Context) {
		st, err := s.cfg.Conn.JetStream().Stream(ctx, s.cfg.Topology.DLQStream())
		if err != nil {
			return
		}
		seq := st.CachedInfo().State.LastSeq
		if first {
			last, first = seq, false
			return
		}
		if seq <= last {
			last = seq
			return
		}
		from := last
		if seq-from > 50 {
			s.hub.publish(Event{Kind: "dead_letter", Text: fmt.Sprintf("%d new dead letters (the latest 50 follow)", seq-from), Link: "/dlq?after=" + strconv.FormatUint(from, 10)})
			from = seq - 50
		}
		_ = s.store.Each(ctx, dlq.Filter{After: from, Limit: 50, WithoutReplays: true}, func(e *dlq.Entry) error {
			s.hub.publish(Event{Kind: "dead_letter", At: e.Stored,
				Text: fmt.Sprintf("dead letter %d: agent %s, %s, %s: %s", e.Seq, e.Agent, e.Subject, e.Reason, e.Error),
				Link: "/dlq/" + strconv.FormatUint(e.Seq, 10)})
			return nil
		})
		last = seq
	})
}

// watchReplays announces replays recorded by anyone (this console, the
// replay CLI, another console): each replay writes the entry's mark, key
// "<agent>.<DLQ sequence>", in the replays bucket. A burst is summed up
// once a second.
func (s *Server) watchReplays() {
	for {
		err := s.watchReplaysOnce()
		select {
		case <-s.stopping:
			return
		case <-time.After(10 * time.Second):
		}
		if err != nil {
			s.log.Debug("console: replay marks watcher", "err", err)
		}
	}
}

func (s *Server) watchReplaysOnce() error {
	ctx, cancel := context.WithCancel(s.jobCtx)
	defer cancel()
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	kv, err := s.cfg.Conn.JetStream().KeyValue(ctx, s.cfg.Topology.ReplaysBucket())
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() {
		_ = w.Stop()
		for range w.Updates() {
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var pending []string
	flush := func() {
		switch {
		case len(pending) == 0:
		case len(pending) <= 5:
			for _, k := range pending {
				agent, seq, _ := strings.Cut(k, ".")
				s.hub.publish(Event{Kind: "replay", Text: fmt.Sprintf("dead letter %s of agent %s replayed", seq, agent), Link: "/dlq/" + seq})
			}
		default:
			s.hub.publish(Event{Kind: "replay", Text: fmt.Sprintf("%d dead letters replayed in the last second", len(pending))})
		}
		pending = pending[:0]
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			flush()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("watcher closed")
			}
			if e != nil && e.Operation() == jetstream.KeyValuePut {
				pending = append(pending, e.Key())
			}
		}
	}
}

// watchStatus keeps the agents' latest status reports (runtime/beacon)
// and announces breaker transitions.
func (s *Server) watchStatus() {
	nc := s.cfg.Conn.NATS()
	sub, err := nc.Subscribe(beacon.Subjects(s.cfg.Topology), func(m *nats.Msg) {
		r, err := beacon.Decode(m.Data)
		if err != nil {
			return
		}
		for _, ch := range s.statuses.update(r, time.Now()) {
			s.hub.publish(Event{Kind: "breaker", Text: ch, Link: "/agents/" + r.Agent})
		}
	})
	if err != nil {
		s.log.Warn("console: cannot subscribe to the agents' status reports", "err", err)
		<-s.stopping
		return
	}
	<-s.stopping
	_ = sub.Unsubscribe()
}
