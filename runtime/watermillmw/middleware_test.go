package watermillmw_test

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/bus/watermillbus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/testio"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime/watermillmw"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTransientFailuresRedeliverWithGrowingDelays: three transient
// failures, then success; each redelivery comes after the backoff delay of
// its attempt (measured between handler calls, inside the jitter band),
// and the handler runs exactly four times.
func TestTransientFailuresRedeliverWithGrowingDelays(t *testing.T) {
	backoff := resilience.Backoff{Base: 200 * time.Millisecond, Max: 5 * time.Second}
	h := prepare(t, watermillmw.Config{MaxAttempts: 5, Backoff: backoff})
	rec := newRecorder()
	const failures = 3
	h.run(t, bus.ConsumerConfig{MaxDeliver: 5, Prefetch: 1}, func(msg *message.Message) error {
		if c := rec.record(msg); c.n <= failures {
			return fmt.Errorf("attempt %d: database unavailable", c.n)
		}
		return nil
	})
	h.publish(t, "wmmw.orders", "order-1")

	for range failures + 1 {
		rec.next(t)
	}
	testkit.WaitFor(t, "success", func() bool { return h.mw.Stats().Succeeded == 1 })
	h.waitSettled(t, 1)

	calls := rec.all()
	if len(calls) != failures+1 {
		t.Fatalf("handler called %d times, want %d", len(calls), failures+1)
	}
	var gaps []time.Duration
	for i := 1; i < len(calls); i++ {
		if calls[i].n != i+1 {
			t.Errorf("call %d saw delivery %d, want %d", i+1, calls[i].n, i+1)
		}
		gap := calls[i].at.Sub(calls[i-1].at)
		gaps = append(gaps, gap)
		// The failure of delivery i asks for Backoff.Delay(i), drawn from
		// [Ceiling(i)/2, Ceiling(i)]; the server waits at least that long.
		ceiling := backoff.Ceiling(i)
		if gap < ceiling/2 || gap > ceiling+500*time.Millisecond {
			t.Errorf("redelivery %d after %v, want within [%v, %v] (+500ms slack)", i, gap, ceiling/2, ceiling)
		}
	}
	t.Logf("measured redelivery delays: %v (bands [100ms,200ms] [200ms,400ms] [400ms,800ms])", gaps)
	if gaps[2] <= gaps[0] {
		t.Errorf("delays %v do not grow", gaps)
	}
	if st := h.mw.Stats(); st.Retried != failures || st.DeadLettered != 0 || st.Succeeded != 1 {
		t.Errorf("stats = %+v, want %d retries, 1 success, no dead letter", st, failures)
	}
	if n := h.streamMsgs(t, topo.DLQStream()); n != 0 {
		t.Errorf("DLQ holds %d messages, want none", n)
	}
}

// TestPermanentErrorDeadLettersOnce: a permanent error dead-letters the
// message on its first delivery with its provenance, and it is acked: the
// handler ran once, nothing is redelivered.
func TestPermanentErrorDeadLettersOnce(t *testing.T) {
	h := prepare(t, watermillmw.Config{})
	rec := newRecorder()
	h.run(t, bus.ConsumerConfig{Prefetch: 1}, func(msg *message.Message) error {
		if rec.record(msg).payload == "bad" {
			return resilience.Permanent(errors.New("unknown sku"))
		}
		return nil
	})
	bad := message.NewMessage(watermill.NewUUID(), []byte("bad"))
	bad.Metadata.Set("tenant", "acme")
	bad.Metadata.Set(bus.HeaderTraceParent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if err := h.wmPub.Publish("wmmw.orders.created", bad); err != nil {
		t.Fatal(err)
	}
	h.publish(t, "wmmw.orders.created", "good")
	published := time.Now()

	recs, subjects := h.deadLetters(t, 1)
	info := h.waitSettled(t, 2)
	if calls := rec.all(); len(calls) != 2 || calls[0].payload != "bad" || calls[1].payload != "good" {
		t.Fatalf("calls = %+v, want bad then good, once each", calls)
	}
	if info.Delivered.Consumer != 2 || info.NumRedelivered != 0 {
		t.Errorf("consumer made %d deliveries (%d redelivered), want 2, none redelivered", info.Delivered.Consumer, info.NumRedelivered)
	}
	r := recs[0]
	if subjects[0] != "jetagent.dlq.billing.wmmw.orders.created" {
		t.Errorf("dead letter subject %q, want jetagent.dlq.billing.wmmw.orders.created", subjects[0])
	}
	if r.Reason != dlq.ReasonPermanent || r.Agent != testAgent || r.Subject != "wmmw.orders.created" ||
		r.Stream != testStream || r.Sequence != 1 || r.Deliveries != 1 || !strings.Contains(r.Error, "unknown sku") {
		t.Errorf("record = %+v, want permanent, agent billing, wmmw.orders.created, WMMW #1, 1 delivery, the error", r)
	}
	if r.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace id %q, want the traceparent's", r.TraceID)
	}
	if string(r.Data) != "bad" || r.Header.Get("tenant") != "acme" || r.Header.Get(watermillbus.HeaderUUID) != bad.UUID {
		t.Errorf("dead letter body %q, headers %v: want the original's", r.Data, r.Header)
	}
	for _, k := range []string{watermillbus.MetadataNumDelivered, watermillbus.MetadataStreamSeq, watermillbus.MetadataSubject, watermillbus.MetadataNakDelay} {
		if v := r.Header.Get(k); v != "" {
			t.Errorf("dead letter carries delivery key %s = %q", k, v)
		}
	}
	if want := "dlq." + testAgent + "." + testStream + ".1"; r.Header.Get(bus.HeaderMsgID) != want {
		t.Errorf("Nats-Msg-Id = %q, want %s", r.Header.Get(bus.HeaderMsgID), want)
	}
	if r.FirstFailure.IsZero() || r.LastFailure.Before(r.FirstFailure) || r.LastFailure.After(time.Now()) ||
		r.LastFailure.Before(published.Add(-time.Minute)) {
		t.Errorf("failure times %v .. %v", r.FirstFailure, r.LastFailure)
	}
	if st := h.mw.Stats(); st.DeadLettered != 1 || st.Retried != 0 || st.Succeeded != 1 {
		t.Errorf("stats = %+v, want 1 dead letter, 1 success, no retry", st)
	}
}

// TestExhaustedAttemptsDeadLetter: a message failing every time is tried
// exactly MaxAttempts times, then dead-lettered (max_attempts) and acked.
func TestExhaustedAttemptsDeadLetter(t *testing.T) {
	const maxAttempts = 3
	h := prepare(t, watermillmw.Config{MaxAttempts: maxAttempts, Backoff: resilience.Backoff{Base: 50 * time.Millisecond}})
	rec := newRecorder()
	h.run(t, bus.ConsumerConfig{MaxDeliver: maxAttempts + 1, Prefetch: 1}, func(msg *message.Message) error {
		rec.record(msg)
		return resilience.Transient(errors.New("database unavailable"))
	})
	h.publish(t, "wmmw.orders", "order-1")

	recs, _ := h.deadLetters(t, 1)
	info := h.waitSettled(t, 1)
	calls := rec.all()
	if len(calls) != maxAttempts {
		t.Fatalf("handler called %d times, want %d", len(calls), maxAttempts)
	}
	for i, c := range calls {
		if c.n != i+1 {
			t.Errorf("call %d saw delivery %d", i+1, c.n)
		}
	}
	if info.Delivered.Consumer != maxAttempts {
		t.Errorf("consumer made %d deliveries, want %d", info.Delivered.Consumer, maxAttempts)
	}
	r := recs[0]
	if r.Reason != dlq.ReasonMaxAttempts || r.Deliveries != maxAttempts ||
		!strings.Contains(r.Error, "attempt 3 of 3") || !strings.Contains(r.Error, "database unavailable") {
		t.Errorf("record = %+v, want max_attempts after 3 deliveries with the error", r)
	}
	if !r.FirstFailure.Before(r.LastFailure) || r.LastFailure.Sub(r.FirstFailure) < 75*time.Millisecond {
		t.Errorf("failures %v .. %v: the first is the publish time, at least two backoff delays earlier", r.FirstFailure, r.LastFailure)
	}
	if st := h.mw.Stats(); st.Retried != maxAttempts-1 || st.DeadLettered != 1 {
		t.Errorf("stats = %+v, want %d retries and 1 dead letter", st, maxAttempts-1)
	}
}

// TestPanicIsRecoveredAndRedelivered: a panic is recovered, logged with its
// stack, and the message redelivered; the second call succeeds.
func TestPanicIsRecoveredAndRedelivered(t *testing.T) {
	var logs testio.Buffer
	h := prepare(t, watermillmw.Config{
		Backoff: resilience.Backoff{Base: 50 * time.Millisecond},
		Logger:  slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	rec := newRecorder()
	h.run(t, bus.ConsumerConfig{Prefetch: 1}, func(msg *message.Message) error {
		if rec.record(msg).n == 1 {
			panic("nil map in the pricing code")
		}
		return nil
	})
	h.publish(t, "wmmw.orders", "order-1")

	testkit.WaitFor(t, "success", func() bool { return h.mw.Stats().Succeeded == 1 })
	h.waitSettled(t, 1)
	if calls := rec.all(); len(calls) != 2 || calls[1].n != 2 {
		t.Fatalf("calls = %+v, want 2 (the second on delivery 2)", calls)
	}
	if st := h.mw.Stats(); st.Panics != 1 || st.Retried != 1 || st.DeadLettered != 0 {
		t.Errorf("stats = %+v, want 1 panic, 1 retry, no dead letter", st)
	}
	out := logs.String()
	if !strings.Contains(out, "handler panicked") || !strings.Contains(out, "nil map in the pricing code") ||
		!strings.Contains(out, "goroutine ") {
		t.Errorf("log lacks the panic and its stack:\n%s", out)
	}
}

// TestOpenBreakerHoldsMessagesWithoutDeadLettering: two Router handlers
// (two subscriptions of one group) on one subject. Two failures open the
// subject's breaker; until each probe time the handler is not called; the
// breaker stays open (two failed probes) longer than AckWait * MaxDeliver.
// Meanwhile held messages keep their delivery (heartbeats: the other
// subscription, idle and pulling, would receive any redelivery), none is
// dead-lettered; the third probe succeeds and the rest flows, each message
// handled successfully once.
func TestOpenBreakerHoldsMessagesWithoutDeadLettering(t *testing.T) {
	const (
		openTimeout = 1500 * time.Millisecond
		ackWait     = time.Second
		maxDeliver  = 3
		failures    = 4 // two to open the breaker, then two failed probes
		messages    = 4
	)
	type transition struct {
		to      resilience.State
		at      time.Time
		probeAt time.Time
	}
	var (
		mu          sync.Mutex
		transitions []transition
		mw          *watermillmw.Middleware
	)
	h := prepare(t, watermillmw.Config{
		MaxAttempts: maxDeliver,
		// A failed message comes back after 4s: the probes at 1.5s and 3s
		// are messages that have not failed before, so no message fails
		// twice, and each subscription is left idle (pulling) in turn.
		Backoff: resilience.Backoff{Base: 4 * time.Second, NoJitter: true},
		Breaker: resilience.BreakerSettings{
			Threshold:   2,
			OpenTimeout: openTimeout,
			OnStateChange: func(name string, _, to resilience.State) {
				tr := transition{to: to, at: time.Now()}
				if to == resilience.StateOpen {
					tr.probeAt = mw.Breakers().Get(name).ProbeAt()
				}
				mu.Lock()
				transitions = append(transitions, tr)
				mu.Unlock()
			},
		},
	})
	mw = h.mw
	rec := newRecorder()
	var calls atomic.Int32
	h.runN(t, bus.ConsumerConfig{AckWait: ackWait, MaxDeliver: maxDeliver, Prefetch: 1}, 2, func(msg *message.Message) error {
		rec.record(msg)
		if n := calls.Add(1); n <= failures {
			return fmt.Errorf("call %d: downstream unavailable", n)
		}
		return nil
	})
	var payloads []string
	for i := range messages {
		payloads = append(payloads, fmt.Sprintf("m%d", i))
	}
	h.publish(t, "wmmw.orders", payloads...)

	testkit.WaitFor(t, "every message to succeed", func() bool { return h.mw.Stats().Succeeded == messages })
	info := h.waitSettled(t, messages)

	all := rec.all()
	if len(all) != messages+failures {
		t.Errorf("handler called %d times, want %d", len(all), messages+failures)
	}
	if info.Delivered.Consumer != messages+failures {
		t.Errorf("consumer made %d deliveries, want %d: a held message was redelivered", info.Delivered.Consumer, messages+failures)
	}
	mu.Lock()
	trs := slices.Clone(transitions)
	mu.Unlock()
	var opens []transition
	var closedAt time.Time
	for _, tr := range trs {
		switch tr.to {
		case resilience.StateOpen:
			opens = append(opens, tr)
		case resilience.StateClosed:
			closedAt = tr.at
		}
	}
	if len(opens) != 3 || closedAt.IsZero() {
		t.Fatalf("transitions %+v, want 3 opens then a close", trs)
	}
	for i, o := range opens {
		if o.probeAt.Sub(o.at) < openTimeout-50*time.Millisecond {
			t.Errorf("open %d: probe at %v, only %v after opening", i, o.probeAt, o.probeAt.Sub(o.at))
		}
		for _, c := range all {
			if c.at.After(o.at) && c.at.Before(o.probeAt) {
				t.Errorf("handler called for %s at %v, while the breaker was open (opened %v, probe %v)",
					c.payload, c.at.Format(time.StampMilli), o.at.Format(time.StampMilli), o.probeAt.Format(time.StampMilli))
			}
		}
	}
	open := closedAt.Sub(opens[0].at)
	t.Logf("breaker open for %v in total (AckWait*MaxDeliver = %v); %d messages held, %d heartbeats",
		open, ackWait*maxDeliver, h.mw.Stats().Held, h.sub.Stats().Heartbeats)
	if open <= ackWait*maxDeliver {
		t.Errorf("breaker open for %v, want longer than AckWait*MaxDeliver = %v", open, ackWait*maxDeliver)
	}

	// Holding uses up no delivery and hands out no second copy: every
	// message fails on its first delivery, then succeeds on its second
	// (a held message redelivered elsewhere would show up as delivery 2
	// before delivery 1, or fail on delivery 2).
	byPayload := map[string][]int{}
	for _, c := range all {
		byPayload[c.payload] = append(byPayload[c.payload], c.n)
	}
	for _, p := range payloads {
		if got := byPayload[p]; !slices.Equal(got, []int{1, 2}) {
			t.Errorf("%s handled on deliveries %v, want [1 2] (fail, then succeed)", p, got)
		}
	}
	if st := h.mw.Stats(); st.DeadLettered != 0 || st.Held < 3 || st.Holding != 0 || st.Retried != failures {
		t.Errorf("stats = %+v, want no dead letter, >= 3 held, %d retries", st, failures)
	}
	if n := h.streamMsgs(t, topo.DLQStream()); n != 0 {
		t.Errorf("DLQ holds %d messages, want none", n)
	}
	if hb := h.sub.Stats().Heartbeats; hb == 0 {
		t.Error("no heartbeats sent for the held messages")
	}
}

// TestDeadLetterPublishFailureRedelivers: when the DLQ refuses the dead
// letter (full), the message is not acked but redelivered; once the DLQ
// has room, the redelivery is dead-lettered and acked.
func TestDeadLetterPublishFailureRedelivers(t *testing.T) {
	h := prepare(t, watermillmw.Config{Backoff: resilience.Backoff{Base: 100 * time.Millisecond}})
	dlqStream, err := h.js.Stream(testkit.Context(t), topo.DLQStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := dlqStream.CachedInfo().Config
	cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardNew
	if _, err := h.js.UpdateStream(testkit.Context(t), cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := h.js.Publish(testkit.Context(t), "jetagent.dlq.other.filler", []byte("filler")); err != nil {
		t.Fatal(err)
	}

	rec := newRecorder()
	release := make(chan struct{})
	h.run(t, bus.ConsumerConfig{Prefetch: 1}, func(msg *message.Message) error {
		if rec.record(msg).n == 2 {
			<-release // let the test look at the message while it is in hand
		}
		return resilience.Permanent(errors.New("unknown sku"))
	})
	h.publish(t, "wmmw.orders", "bad")

	if c := rec.next(t); c.n != 1 {
		t.Fatalf("first call on delivery %d", c.n)
	}
	if c := rec.next(t); c.n != 2 {
		t.Fatalf("second call on delivery %d, want the redelivery", c.n)
	}
	info := h.consumerInfo(t)
	if info.AckFloor.Stream != 0 || info.NumAckPending != 1 || h.streamMsgs(t, testStream) != 1 {
		t.Errorf("ack floor %d, %d pending: the message must not be acked", info.AckFloor.Stream, info.NumAckPending)
	}
	if st := h.mw.Stats(); st.DeadLetterFailures != 1 || st.DeadLettered != 0 || st.Retried != 1 {
		t.Errorf("stats = %+v, want 1 dead-letter failure, 1 retry", st)
	}
	if n := h.streamMsgs(t, topo.DLQStream()); n != 1 {
		t.Errorf("DLQ holds %d messages, want only the filler", n)
	}

	if err := dlqStream.Purge(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	close(release)
	recs, _ := h.deadLetters(t, 1)
	h.waitSettled(t, 1)
	if r := recs[0]; r.Reason != dlq.ReasonPermanent || r.Deliveries != 2 {
		t.Errorf("record = %+v, want permanent on delivery 2", r)
	}
	if calls := rec.all(); len(calls) != 2 {
		t.Errorf("handler called %d times, want 2", len(calls))
	}
}
