package resilience_test

import (
	"fmt"
	"testing"

	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/resilience"
)

// One meaning, one sentinel: an envelope or payload that does not decode
// is malformed for Classify too, so the runtime dead-letters it at once
// instead of retrying it (and counting it against the subject's breaker).
func TestClassifyRecognisesEnvelopeDecodeErrors(t *testing.T) {
	env, err := envelope.New("c", "a", envelope.TaskRequest, "not a number")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	derr := env.DecodePayload(&n)
	_, perr := envelope.Parse([]byte{0x93, 1, 2, 3}, envelope.Limits{})
	for name, err := range map[string]error{
		"DecodePayload":         derr,
		"Parse":                 perr,
		"wrapped DecodePayload": fmt.Errorf("handler: %w", derr),
	} {
		if k := resilience.Classify(err); k != resilience.KindMalformed {
			t.Errorf("%s: Classify(%v) = %v, want malformed", name, err, k)
		}
	}
}
