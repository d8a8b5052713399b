package runtime_test

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/oklog/ulid/v2"
)

// Item 11: the chaos handler decides permanent failures per task, and
// tasks made together are decided independently. The ids here are
// monotonic ULIDs as the ULID spec makes them within one millisecond (the
// random part incremented by one), as other languages' clients send them.
func TestChaosPermanentFailuresAreIndependentPerTask(t *testing.T) {
	t.Parallel()
	h := runtime.Chaos(runtime.ChaosConfig{PermanentRate: 0.5})
	const n = 200
	entropy := ulid.Monotonic(rand.Reader, 1)
	ms := ulid.Timestamp(time.Now())
	permanent := 0
	for range n {
		env, err := envelope.New("tester", "chaos", envelope.TaskRequest, nil)
		if err != nil {
			t.Fatal(err)
		}
		env.ID = ulid.MustNew(ms, entropy).String()
		task := &runtime.Task{Envelope: env, Attempt: 1}
		_, err = h(context.Background(), task)
		if resilience.Classify(err) == resilience.KindPermanent {
			permanent++
			// Every attempt of a task agrees.
			task.Attempt = 2
			if _, again := h(context.Background(), task); resilience.Classify(again) != resilience.KindPermanent {
				t.Fatalf("task %s failed permanently once, then not", env.ID)
			}
		}
	}
	// Binomial(200, 0.5): 100 +- 7; 60..140 is more than 5 sigma.
	if permanent < 60 || permanent > 140 {
		t.Fatalf("%d of %d tasks made in one millisecond failed permanently at PermanentRate 0.5", permanent, n)
	}
}
