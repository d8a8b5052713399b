package runtime

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
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
	// decided by a hash of the envelope id, so every attempt of a task
	// agrees, and tasks decide independently of each other (also those
	// with consecutive ids, as a burst of monotonic ULIDs has).
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
		if cfg.PermanentRate > 0 && chaosDraw(t.Envelope.ID) < cfg.PermanentRate {
			return nil, resilience.Permanent(fmt.Errorf("chaos: task %s fails permanently", t.Envelope.ID))
		}
		if cfg.FailRate > 0 && rand.Float64() < cfg.FailRate {
			return nil, fmt.Errorf("chaos: attempt %d of task %s fails (transient)", t.Attempt, t.Envelope.ID)
		}
		return Echo(ctx, t)
	}
}

// chaosDraw maps id to [0, 1), the same on every call and in every
// process, and uniformly: ids that differ in one bit (consecutive ULIDs)
// land anywhere (FNV, used before, kept them together: a burst of
// monotonic ULIDs failed all or none).
func chaosDraw(id string) float64 {
	sum := sha256.Sum256([]byte(id))
	return float64(binary.BigEndian.Uint64(sum[:8])>>11) / (1 << 53)
}
