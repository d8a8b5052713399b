// Package demo is `agent demo`: on an embedded server, an orchestrator
// sends tasks to a few workers that break in the ways the resilience
// tutorial talks about, and narrates what jetagent does about it.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// Run plays the demo, writing its story to w; it returns when every part
// has run (about ten seconds), or with the first error.
func Run(ctx context.Context, w io.Writer) error {
	start := time.Now()
	dir, err := os.MkdirTemp("", "jetagent-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	if err != nil {
		return err
	}
	defer srv.Shutdown(context.Background())
	conn, err := srv.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := bus.Provision(ctx, conn.JetStream(), bus.Topology{}); err != nil {
		return err
	}
	w = &syncWriter{w: w} // handlers narrate from their own goroutines
	d := &demo{ctx: ctx, w: w, conn: conn}
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Name: "orchestrator",
		Retry: &runtime.RetryConfig{AttemptTimeout: 30 * time.Second}})
	if err != nil {
		return err
	}
	defer client.Close()
	d.client = client
	say(w, "jetagent demo: an orchestrator and five workers on an embedded NATS server (JetStream on disk in %s)", dir)
	for _, part := range []func() error{d.retries, d.slow, d.breaker, d.deadLetter, d.resume} {
		if err := part(); err != nil {
			return err
		}
	}
	say(w, "")
	say(w, "summary: %d tasks sent, %d answered; %d redeliveries after failures, the breaker opened %d time(s) and closed again,",
		d.sent, d.answered, d.retried, d.opened.Load())
	say(w, "         1 task dead-lettered and replayed after the fix, 1 task resumed after its worker died. Took %v.", time.Since(start).Round(100*time.Millisecond))
	return nil
}

type demo struct {
	ctx               context.Context
	w                 io.Writer
	conn              *bus.Conn
	client            *runtime.Client
	sent              int
	answered, retried int
	opened            atomic.Int32
}

func say(w io.Writer, format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }

// syncWriter serialises writes from several goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// worker starts a runtime for agent with h and returns it and a stop func.
func (d *demo) worker(cfg runtime.Config, h runtime.Handler) (*runtime.Runtime, func(), error) {
	if cfg.Backoff == (resilience.Backoff{}) {
		cfg.Backoff = resilience.Backoff{Base: 200 * time.Millisecond, Max: 2 * time.Second, NoJitter: true}
	}
	rt, err := runtime.New(d.conn, cfg)
	if err != nil {
		return nil, nil, err
	}
	rt.Handle(envelope.TaskRequest, h)
	if err := rt.Start(d.ctx); err != nil {
		return nil, nil, err
	}
	return rt, func() { _ = rt.Stop(context.Background()) }, nil
}

// send sends payload to agent and returns the answer as a string.
func (d *demo) send(agent string, payload any, taskID string) (string, error) {
	env, err := envelope.New("orchestrator", agent, envelope.TaskRequest, payload)
	if err != nil {
		return "", err
	}
	env.TaskID = taskID
	d.sent++
	rep, err := d.client.Send(d.ctx, env)
	if err != nil {
		return "", err
	}
	d.answered++
	var s string
	if err := rep.DecodePayload(&s); err != nil {
		return "", err
	}
	return s, nil
}

// retries: a worker whose dependency answers 503 twice per task.
func (d *demo) retries() error {
	say(d.w, "\n1. retry with backoff: 'translator' gets two 503s from its dependency for each task")
	rt, stop, err := d.worker(runtime.Config{Agent: "translator", Concurrency: 1}, func(_ context.Context, t *runtime.Task) (any, error) {
		if t.Attempt <= 2 {
			say(d.w, "   translator: attempt %d -> 503 service unavailable (transient: redelivered after %v)", t.Attempt,
				resilience.Backoff{Base: 200 * time.Millisecond, NoJitter: true}.Delay(t.Attempt))
			return nil, errors.New("503 service unavailable")
		}
		var text string
		_ = t.Decode(&text)
		return strings.ToUpper(text), nil
	})
	if err != nil {
		return err
	}
	defer stop()
	out, err := d.send("translator", "bonjour", "")
	if err != nil {
		return err
	}
	d.retried += int(rt.Stats().Retried)
	say(d.w, "   orchestrator: got %q: the server redelivered the task itself, no retry loop in the worker", out)
	return nil
}

// slow: a task three times longer than AckWait, delivered once.
func (d *demo) slow() error {
	say(d.w, "\n2. a slow worker: 'analyst' needs 2.5s per task, its AckWait is 1s")
	var calls atomic.Int32
	rt, stop, err := d.worker(runtime.Config{Agent: "analyst", Consumer: bus.ConsumerConfig{AckWait: time.Second}},
		func(ctx context.Context, t *runtime.Task) (any, error) {
			calls.Add(1)
			select {
			case <-time.After(2500 * time.Millisecond):
				return "analysis done", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		})
	if err != nil {
		return err
	}
	defer stop()
	out, err := d.send("analyst", "quarterly numbers", "")
	if err != nil {
		return err
	}
	say(d.w, "   orchestrator: got %q; the handler ran %d time: %d InProgress heartbeats kept the task from being redelivered", out, calls.Load(), rt.Stats().Heartbeats)
	return nil
}

// breaker: a payment provider down for a while.
func (d *demo) breaker() error {
	say(d.w, "\n3. circuit breaker: 'payments' fails while its provider is down; after 3 failures in a row its breaker opens")
	var down atomic.Bool
	down.Store(true)
	var closed = make(chan struct{})
	rt, stop, err := d.worker(runtime.Config{Agent: "payments", Concurrency: 1,
		Backoff: resilience.Backoff{Base: 100 * time.Millisecond, Max: 100 * time.Millisecond, NoJitter: true},
		Breaker: resilience.BreakerSettings{Threshold: 3, OpenTimeout: 2 * time.Second,
			OnStateChange: func(_ string, from, to resilience.State) {
				say(d.w, "   breaker payments: %v -> %v", from, to)
				if to == resilience.StateOpen {
					d.opened.Add(1)
				}
				if to == resilience.StateClosed {
					close(closed)
				}
			}}},
		func(_ context.Context, t *runtime.Task) (any, error) {
			if down.Load() {
				say(d.w, "   payments: attempt %d of %s -> provider down", t.Attempt, t.TaskID())
				return nil, errors.New("provider down")
			}
			return "paid " + t.TaskID(), nil
		})
	if err != nil {
		return err
	}
	defer stop()
	results := make(chan error, 3)
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("invoice-%d", i)
		env, err := envelope.New("orchestrator", "payments", envelope.TaskRequest, nil)
		if err != nil {
			return err
		}
		env.TaskID = id
		d.sent++
		go func() {
			_, err := d.client.Send(d.ctx, env)
			results <- err
		}()
	}
	for rt.Stats().Held == 0 { // the breaker opened and holds tasks: the provider comes back
		time.Sleep(20 * time.Millisecond)
	}
	say(d.w, "   payments: %d task(s) held, not failed: no delivery is used up while the breaker is open", rt.Stats().Holding)
	down.Store(false)
	say(d.w, "   (the provider is back; after the open timeout one probe task goes through)")
	<-closed
	for range 3 {
		if err := <-results; err != nil {
			return err
		}
		d.answered++
	}
	d.retried += int(rt.Stats().Retried)
	say(d.w, "   orchestrator: all 3 invoices paid, none dead-lettered")
	return nil
}

// deadLetter: a permanent failure, fixed, then replayed.
func (d *demo) deadLetter() error {
	say(d.w, "\n4. dead-letter queue: 'orders' rejects an order it cannot parse (a permanent error)")
	var fixed atomic.Bool
	rt, stop, err := d.worker(runtime.Config{Agent: "orders"}, func(_ context.Context, t *runtime.Task) (any, error) {
		var order string
		_ = t.Decode(&order)
		if strings.Contains(order, "qty=-1") && !fixed.Load() {
			return nil, resilience.Permanent(fmt.Errorf("invalid quantity in %q", order))
		}
		return "accepted " + order, nil
	})
	if err != nil {
		return err
	}
	defer stop()
	env, err := envelope.New("orchestrator", "orders", envelope.TaskRequest, "sku=7 qty=-1")
	if err != nil {
		return err
	}
	env.ReplyTo = bus.Topology{}.ReplySubject("orchestrator") + ".late"
	d.sent++
	if _, err := bus.NewPublisher(d.conn.JetStream()).PublishEnvelope(d.ctx, bus.Topology{}.TaskSubject("orders", envelope.TaskRequest), env); err != nil {
		return err
	}
	for rt.Stats().DeadLettered == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	store := dlq.NewStore(d.conn.JetStream(), bus.Topology{})
	entries, err := store.List(d.ctx, dlq.Filter{Agent: "orders"})
	if err != nil || len(entries) != 1 {
		return fmt.Errorf("demo: expected one dead letter, got %d (%v)", len(entries), err)
	}
	e := entries[0]
	say(d.w, "   DLQ entry %d: reason %s, after %d delivery: %s", e.Seq, e.Reason, e.Deliveries, e.Error)
	say(d.w, "   (an operator would run: replay list, replay show %d)", e.Seq)
	fixed.Store(true)
	say(d.w, "   the bug is fixed (quantity -1 now means 'cancel the line'); replaying the entry:")
	res, err := store.Replay(d.ctx, entries, dlq.ReplayOptions{})
	if err != nil {
		return err
	}
	for rt.Stats().Succeeded == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	d.answered++
	say(d.w, "   replayed %d entry; 'orders' processed it this time (replay runs it as a new task, marked Jetagent-Replay-Of)", res.Replayed)
	return nil
}

// resume: a 6-step task whose worker dies after step 3.
func (d *demo) resume() error {
	say(d.w, "\n5. resume from a checkpoint: 'reporter' writes a 6-step report and dies after step 3")
	var mu sync.Mutex
	ran := map[int]int{}
	stepAt := make(chan int, 10)
	block := make(chan struct{})
	handler := func(ctx context.Context, t *runtime.Task) (any, error) {
		last, err := t.LastStep(ctx)
		if err != nil {
			return nil, err
		}
		if last > 0 {
			say(d.w, "   reporter (a new worker): resuming after step %d", last)
		}
		for i := 1; i <= 6; i++ {
			if err := t.Step(ctx, i, func(context.Context) (any, error) {
				mu.Lock()
				ran[i]++
				mu.Unlock()
				say(d.w, "   reporter: step %d of 6", i)
				return i, nil
			}); err != nil {
				return nil, err
			}
			stepAt <- i
			if i == 3 && last == 0 {
				select { // the first process dies here
				case <-block:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
		}
		return "report ready", nil
	}
	first, err := runtime.New(d.conn, runtime.Config{Agent: "reporter", Consumer: bus.ConsumerConfig{AckWait: time.Second}})
	if err != nil {
		return err
	}
	first.Handle(envelope.TaskRequest, handler)
	if err := first.Start(d.ctx); err != nil {
		return err
	}
	result := make(chan error, 1)
	go func() {
		_, err := d.send("reporter", nil, "report-q3")
		result <- err
	}()
	for <-stepAt != 3 {
	}
	// A process that dies does not settle its task: stop this one at once.
	dead, cancel := context.WithCancel(context.Background())
	cancel()
	_ = first.Stop(dead)
	say(d.w, "   reporter: (stopped dead, without settling its task: as if its process crashed)")
	_, stop, err := d.worker(runtime.Config{Agent: "reporter", Consumer: bus.ConsumerConfig{AckWait: time.Second}}, handler)
	if err != nil {
		return err
	}
	defer stop()
	if err := <-result; err != nil {
		return err
	}
	twice := 0
	mu.Lock()
	defer mu.Unlock()
	for _, n := range ran {
		if n > 1 {
			twice++
		}
	}
	say(d.w, "   orchestrator: got the report; steps run twice: %d", twice)
	return nil
}
