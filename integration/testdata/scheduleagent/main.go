// Command scheduleagent is the fault-schedule suite's agent
// (integration/schedule). It handles task.request and message.send with one
// handler whose behaviour the task's payload chooses, and appends one line
// per handler event to a ledger file (O_APPEND, one write(2) per line): the
// side-effect log the suite's checker counts, independent of the bus.
//
// It uses only the public API of the runtime (runtime.New, Handle, Run,
// Task.Step, Task.Decode), so that it keeps working while the runtime's
// internals change.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// work is a task's payload: what the handler does with it.
type work struct {
	// Kind: ok, long, steps, poison, perm, permreplay, transient, down.
	Kind string `msgpack:"kind"`
	// Ms is how long the work takes (per step for steps).
	Ms int `msgpack:"ms"`
	// Fail is how many attempts of a transient task fail.
	Fail int `msgpack:"fail"`
	// Steps is the number of Task.Step calls of a steps task.
	Steps int `msgpack:"steps"`
}

// Line is one ledger line (JSON). The suite parses the same fields.
type Line struct {
	T      int64  `json:"t"`   // unix nanoseconds
	PID    int    `json:"pid"` // this process
	Ev     string `json:"ev"`  // ready (no task), start, done, fail, perm, crash, step, cancelled, taken, error
	Task   string `json:"task"`
	Att    int    `json:"att"`
	Replay string `json:"replay,omitempty"` // Jetagent-Replay-Of: the DLQ entry replayed
	Kind   string `json:"kind,omitempty"`
	Sub    string `json:"sub,omitempty"`
	Step   int    `json:"step,omitempty"`
	Err    string `json:"err,omitempty"`
}

// Result is the reply payload: the task it answers and who ran it.
type Result struct {
	Task string `msgpack:"task"`
	PID  int    `msgpack:"pid"`
}

var ledger *os.File

func record(l Line) {
	l.T, l.PID = time.Now().UnixNano(), os.Getpid()
	b, _ := json.Marshal(l) // a Line always marshals
	if _, err := ledger.Write(append(b, '\n')); err != nil {
		fmt.Fprintln(os.Stderr, "scheduleagent: ledger:", err)
		os.Exit(1)
	}
}

func main() {
	url := flag.String("nats", "", "server URL")
	name := flag.String("name", "sched", "agent name")
	ledgerPath := flag.String("ledger", "", "ledger file")
	downFile := flag.String("down-file", "", "while this file exists, kind=down tasks fail (a downstream is down)")
	metricsFile := flag.String("metrics-file", "", "write the /metrics address here")
	ackWait := flag.Duration("ack-wait", 2*time.Second, "AckWait")
	maxDeliver := flag.Int("max-deliver", 5, "MaxDeliver")
	maxAckPending := flag.Int("max-ack-pending", 0, "MaxAckPending (0: default)")
	prefetch := flag.Int("prefetch", 0, "Prefetch (0: default)")
	concurrency := flag.Int("concurrency", 2, "workers")
	threshold := flag.Int("breaker-threshold", 3, "breaker threshold")
	openTimeout := flag.Duration("breaker-open", 5*time.Second, "breaker open timeout")
	backoffBase := flag.Duration("backoff-base", 200*time.Millisecond, "redelivery backoff base")
	backoffMax := flag.Duration("backoff-max", time.Second, "redelivery backoff max")
	shutdown := flag.Duration("shutdown-timeout", 5*time.Second, "graceful stop bound")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	ledger, err = os.OpenFile(*ledgerPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fail(err)
	}
	defer ledger.Close()
	if *metricsFile != "" {
		if err := serveMetrics(*metricsFile); err != nil {
			fail(err)
		}
	}
	conn, err := bus.Connect(ctx, *url)
	if err != nil {
		// The server (or this process's connection) is away: the service
		// manager starts it again. Exit code 4 tells the suite so.
		fmt.Fprintln(os.Stderr, "scheduleagent:", err)
		os.Exit(4)
	}
	defer func() { // flush the last acks and naks, as agent run does
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Drain(dctx)
	}()
	rt, err := runtime.New(conn, runtime.Config{
		Agent:       *name,
		Concurrency: *concurrency,
		Consumer: bus.ConsumerConfig{
			AckWait: *ackWait, MaxDeliver: *maxDeliver,
			MaxAckPending: *maxAckPending, Prefetch: *prefetch,
		},
		Backoff:        resilience.Backoff{Base: *backoffBase, Max: *backoffMax},
		Breaker:        resilience.BreakerSettings{Threshold: *threshold, OpenTimeout: *openTimeout},
		HandlerTimeout: time.Minute,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		fail(err)
	}
	h := handler(*downFile)
	rt.Handle(envelope.TaskRequest, h)
	rt.Handle(envelope.MessageSend, h)
	if err := rt.Start(ctx); err != nil {
		fail(err) // exit 1: the runtime could not start
	}
	record(Line{Ev: "ready"}) // its first pull is sent: the checker's fair-share needs to know when
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
	defer cancel()
	if err := rt.Stop(sctx); err != nil {
		// Documented: a graceful stop that runs out of time hands back what
		// is unsettled and returns ctx's error. Not a crash.
		fmt.Fprintln(os.Stderr, "scheduleagent: stop:", err)
	}
}

func handler(downFile string) runtime.Handler {
	return func(ctx context.Context, t *runtime.Task) (any, error) {
		l := Line{Task: t.Envelope.ID, Att: t.Attempt, Replay: t.Header.Get(dlq.HeaderReplayOf), Sub: string(t.Envelope.PayloadType)}
		var w work
		if err := t.Decode(&w); err != nil {
			l.Ev, l.Kind, l.Err = "start", "badpayload", err.Error()
			record(l)
			l.Ev = "fail"
			record(l)
			return nil, err // a payload this handler cannot read
		}
		l.Kind = w.Kind
		l.Ev = "start"
		record(l)
		end := func(ev string, err error) {
			l.Ev, l.Step = ev, 0
			if err != nil {
				l.Err = err.Error()
			}
			record(l)
		}
		switch w.Kind {
		case "poison":
			end("crash", nil)
			os.Exit(3)
		case "perm":
			err := resilience.Permanent(fmt.Errorf("task %s fails permanently", t.Envelope.ID))
			end("perm", err)
			return nil, err
		case "permreplay": // fails permanently unless replayed (the bug was fixed)
			if l.Replay == "" {
				err := resilience.Permanent(fmt.Errorf("task %s fails until replayed", t.Envelope.ID))
				end("perm", err)
				return nil, err
			}
		case "transient":
			if t.Attempt <= w.Fail {
				err := fmt.Errorf("attempt %d of %s fails", t.Attempt, t.Envelope.ID)
				end("fail", err)
				return nil, err
			}
		case "down":
			if _, err := os.Stat(downFile); err == nil {
				err := errors.New("downstream unavailable")
				end("fail", err)
				return nil, err
			}
		case "steps":
			for i := 1; i <= w.Steps; i++ {
				err := t.Step(ctx, i, func(ctx context.Context) (any, error) {
					record(Line{Ev: "step", Task: l.Task, Att: l.Att, Replay: l.Replay, Kind: l.Kind, Sub: l.Sub, Step: i})
					return i, sleep(ctx, w.Ms)
				})
				switch {
				case errors.Is(err, runtime.ErrCancelled):
					end("cancelled", err)
					return nil, err
				case errors.Is(err, runtime.ErrTaskTaken):
					end("taken", err)
					return nil, err
				case err != nil:
					end("fail", err)
					return nil, err
				}
			}
			end("done", nil)
			return Result{Task: t.Envelope.ID, PID: os.Getpid()}, nil
		}
		if err := sleep(ctx, w.Ms); err != nil {
			end("fail", err)
			return nil, err
		}
		end("done", nil)
		return Result{Task: t.Envelope.ID, PID: os.Getpid()}, nil
	}
}

func sleep(ctx context.Context, ms int) error {
	if ms <= 0 {
		return nil
	}
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// serveMetrics serves the default Prometheus registry (Go and process
// collectors: go_goroutines, process_resident_memory_bytes) on a free
// loopback port and writes its address to file.
func serveMetrics(file string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	go func() { _ = http.Serve(ln, mux) }() // lives as long as the process
	tmp := filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+".tmp")
	if err := os.WriteFile(tmp, []byte(ln.Addr().String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "scheduleagent:", err)
	os.Exit(1)
}
