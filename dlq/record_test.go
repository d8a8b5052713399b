package dlq_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/nats-io/nats.go"
)

func TestRecordRoundTrip(t *testing.T) {
	t.Parallel()
	first := time.Date(2026, 11, 27, 1, 2, 3, 4, time.UTC)
	rec := dlq.Record{
		Data:         []byte("original body"),
		Header:       nats.Header{"Nats-Msg-Id": {"orig-id"}, "Content-Type": {"x"}},
		Reason:       dlq.ReasonMaxAttempts,
		Error:        strings.Repeat("e", 5000),
		Agent:        "echo",
		Subject:      "jetagent.tasks.echo.task.request",
		Stream:       "JETAGENT_TASKS",
		Sequence:     42,
		Deliveries:   3,
		FirstFailure: first,
		LastFailure:  first.Add(time.Minute),
		TraceID:      "0123456789abcdef0123456789abcdef",
	}
	m := rec.Msg("jetagent.dlq.echo.task.request")
	if m.Subject != "jetagent.dlq.echo.task.request" || string(m.Data) != "original body" {
		t.Fatalf("msg = %+v", m)
	}
	if got := m.Header.Get(bus.HeaderMsgID); got != "dlq.echo.JETAGENT_TASKS.42" {
		t.Errorf("Nats-Msg-Id = %q: one dead letter per original message, in the agent's id space", got)
	}
	if rec.Header.Get("Nats-Msg-Id") != "orig-id" {
		t.Error("Msg modified the record's original headers")
	}
	back, err := dlq.Parse(m.Data, m.Header)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Error) != 1024 {
		t.Errorf("error text kept %d bytes, want it truncated to 1024", len(back.Error))
	}
	if back.Reason != rec.Reason || back.Agent != rec.Agent || back.Subject != rec.Subject ||
		back.Stream != rec.Stream || back.Sequence != 42 || back.Deliveries != 3 ||
		!back.FirstFailure.Equal(rec.FirstFailure) || !back.LastFailure.Equal(rec.LastFailure) ||
		back.TraceID != rec.TraceID || back.Header.Get("Content-Type") != "x" {
		t.Fatalf("round trip = %+v", back)
	}
}

func TestParseRejectsWhatIsNotADeadLetter(t *testing.T) {
	t.Parallel()
	if _, err := dlq.Parse(nil, nats.Header{}); !errors.Is(err, dlq.ErrNotDeadLetter) {
		t.Errorf("no reason header: err = %v", err)
	}
	r := dlq.Record{Reason: dlq.ReasonMalformed, Stream: "S", Sequence: 1}
	h := r.Msg("x").Header
	h.Set(dlq.HeaderSequence, "not a number")
	if _, err := dlq.Parse(nil, h); err == nil || !strings.Contains(err.Error(), dlq.HeaderSequence) {
		t.Errorf("bad sequence: err = %v", err)
	}
}
