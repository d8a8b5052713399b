// Command ledgeragent is the chaos suites' agent: it answers every task
// (echo) after writing the envelope id to a ledger file, the side effect
// the tests count, and fails as the chaos flags say. Its failures are
// decided like runtime.Chaos: transient per attempt, permanent per task id
// (a SHA-256 draw, so every attempt agrees and tasks decide independently), never for a replayed task when
// --permanent-unless-replay is set (the "bug fixed, replay the DLQ" story).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

func main() {
	url := flag.String("nats", "", "server URL")
	name := flag.String("name", "ledger", "agent name")
	ledger := flag.String("ledger", "", "file each processed envelope id is appended to")
	failRate := flag.Float64("fail-rate", 0, "fraction of attempts failing transiently")
	permRate := flag.Float64("permanent-rate", 0, "fraction of tasks failing permanently")
	permUnlessReplay := flag.Bool("permanent-unless-replay", false, "replayed tasks never fail permanently")
	ackWait := flag.Duration("ack-wait", 2*time.Second, "AckWait")
	maxDeliver := flag.Int("max-deliver", 10, "MaxDeliver")
	skew := flag.Duration("max-clock-skew", envelope.DefaultMaxClockSkew, "clock-skew window")
	concurrency := flag.Int("concurrency", 8, "workers")
	latency := flag.Duration("latency", 0, "time each task takes")
	prefetch := flag.Int("prefetch", 0, "deliveries taken ahead of the workers (0: the runtime's default)")
	pullExpiry := flag.Duration("pull-expiry", 0, "lifetime of one pull request (0: the runtime's default)")
	types := flag.String("types", string(envelope.TaskRequest), "comma-separated payload types handled (each like task.request)")
	downTypes := flag.String("down-types", "", "comma-separated payload types whose downstream is down: every attempt fails transiently, nothing is written")
	breakerThreshold := flag.Int("breaker-threshold", 1<<20, "consecutive failures that open a subject's breaker (default: never)")
	breakerOpen := flag.Duration("breaker-open", time.Minute, "breaker open timeout")
	events := flag.String("events", "", "file each breaker transition is appended to, as \"<to> <subject>\"")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	f, err := os.OpenFile(*ledger, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fail(err)
	}
	defer f.Close()
	conn, err := bus.Connect(ctx, *url)
	if err != nil {
		fail(err)
	}
	defer func() { // flush the last naks and acks, as agent run does
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Drain(dctx)
	}()
	breaker := resilience.BreakerSettings{Threshold: *breakerThreshold, OpenTimeout: *breakerOpen} // by default chaos is random, not a dependency going down
	if *events != "" {
		ev, err := os.OpenFile(*events, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fail(err)
		}
		defer ev.Close()
		breaker.OnStateChange = func(subject string, _, to resilience.State) {
			_, _ = fmt.Fprintf(ev, "%s %s\n", to, subject)
		}
	}
	rt, err := runtime.New(conn, runtime.Config{
		Agent:       *name,
		Concurrency: *concurrency,
		Consumer:    bus.ConsumerConfig{AckWait: *ackWait, MaxDeliver: *maxDeliver, Prefetch: *prefetch, PullExpiry: *pullExpiry},
		Backoff:     resilience.Backoff{Base: 100 * time.Millisecond, Max: time.Second},
		Breaker:     breaker,
		Limits:      envelope.Limits{MaxClockSkew: *skew},
	})
	if err != nil {
		fail(err)
	}
	for _, typ := range strings.Split(*downTypes, ",") {
		if typ != "" {
			rt.Handle(envelope.PayloadType(typ), func(context.Context, *runtime.Task) (any, error) {
				return nil, errors.New("downstream down")
			})
		}
	}
	handle := func(ctx context.Context, t *runtime.Task) (any, error) {
		replay := t.Header.Get(dlq.HeaderReplayOf) != ""
		if *permRate > 0 && draw(t.Envelope.ID) < *permRate && !(replay && *permUnlessReplay) {
			return nil, resilience.Permanent(fmt.Errorf("task %s fails permanently", t.Envelope.ID))
		}
		if *latency > 0 {
			select {
			case <-time.After(*latency):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if *failRate > 0 && rand.Float64() < *failRate {
			return nil, fmt.Errorf("attempt %d of %s fails", t.Attempt, t.Envelope.ID)
		}
		if _, err := fmt.Fprintf(f, "%s\n", t.Envelope.ID); err != nil { // one write(2), O_APPEND
			return nil, err
		}
		return runtime.Echo(ctx, t)
	}
	for _, typ := range strings.Split(*types, ",") {
		rt.Handle(envelope.PayloadType(typ), handle)
	}
	if err := rt.Run(ctx); err != nil {
		fail(err)
	}
}

// draw maps id to [0, 1) as runtime.Chaos does: the same in every process,
// independent between ids, however close.
func draw(id string) float64 {
	sum := sha256.Sum256([]byte(id))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ledgeragent:", err)
	os.Exit(1)
}
