package runtime

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"time"

	"github.com/jetagent/jetagent/resilience"
	"github.com/vmihailenco/msgpack/v5"
)

// Echo is a built-in handler that answers every task with its own payload,
// byte for byte. `agent run` serves it as the "echo" agent.
func Echo(_ context.Context, t *Task) (any, error) {
	if t.Envelope.Payload == nil {
		return nil, nil
	}
	return msgpack.RawMessage(t.Envelope.Payload), nil
}

// ChaosConfig configures the Chaos handler. The zero value never fails.
type ChaosConfig struct {
	// FailRate is the fraction of attempts that fail transiently (so a
	// task is retried and, sooner or later, succeeds).
	FailRate float64
	// PermanentRate is the fraction of tasks that fail permanently,
	// decided by the envelope id, so every attempt of a task agrees.
	PermanentRate float64
	// Latency adds a random delay of up to this much to each attempt.
	Latency time.Duration
	// CrashRate is the fraction of attempts that call Crash (which
	// `agent run` makes exit the process, to test redelivery).
	CrashRate float64
	// Crash is called on a crashing attempt. Nil: crashes are ignored.
	Crash func()
}

// Chaos returns a handler for demos and chaos tests: it echoes its
// payload like Echo, except for the failures cfg asks for.
func Chaos(cfg ChaosConfig) Handler {
	return func(ctx context.Context, t *Task) (any, error) {
		if cfg.Latency > 0 {
			select {
			case <-time.After(rand.N(cfg.Latency)):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if cfg.CrashRate > 0 && rand.Float64() < cfg.CrashRate && cfg.Crash != nil {
			cfg.Crash()
		}
		if cfg.PermanentRate > 0 && unitHash(t.Envelope.ID) < cfg.PermanentRate {
			return nil, resilience.Permanent(fmt.Errorf("chaos: task %s fails permanently", t.Envelope.ID))
		}
		if cfg.FailRate > 0 && rand.Float64() < cfg.FailRate {
			return nil, fmt.Errorf("chaos: attempt %d of task %s fails (transient)", t.Attempt, t.Envelope.ID)
		}
		return Echo(ctx, t)
	}
}

// unitHash maps s to [0, 1) deterministically.
func unitHash(s string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return float64(h.Sum64()>>11) / (1 << 53)
}
