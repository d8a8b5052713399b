package runtime

import (
	"strings"
	"testing"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
)

// The span context a traceless message stands for is the one its own
// traceparent header names.
func TestEnvelopeSpanContextMatchesTheBusTraceparent(t *testing.T) {
	for range 100 {
		env, err := envelope.New("a", "b", envelope.TaskRequest, nil)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := bus.EnvelopeMsg("x", env)
		if err != nil {
			t.Fatal(err)
		}
		sc := envelopeSpanContext(env)
		want := msg.Header.Get(bus.HeaderTraceParent)
		got := "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01"
		if got != want {
			t.Fatalf("span context %s, traceparent %s", got, want)
		}
	}
	if envelopeSpanContext(&envelope.Envelope{ID: envelope.NewID(), TraceID: strings.Repeat("z", 32)}).IsValid() {
		t.Error("a trace id that is not hex gave a valid span context")
	}
}
