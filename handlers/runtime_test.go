package handlers_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/handlers"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testkit"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
)

// End to end: the handlers under the real runtime, on an embedded server,
// checked by their dispositions (replies, redeliveries, dead letters).

var topo = bus.Topology{Memory: true}

// startRuntime runs agent with h on task.request: 3 deliveries at most,
// quick backoff, a breaker that does not get in the way.
func startRuntime(t *testing.T, conn *bus.Conn, agent string, timeout time.Duration, h runtime.Handler) *runtime.Runtime {
	t.Helper()
	rt, err := runtime.New(conn, runtime.Config{
		Agent:          agent,
		Topology:       topo,
		Consumer:       bus.ConsumerConfig{AckWait: time.Second, MaxDeliver: 3},
		HandlerTimeout: timeout,
		Backoff:        resilience.Backoff{Base: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		Breaker:        resilience.BreakerSettings{Threshold: 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, h)
	if err := rt.Start(testkit.Context(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rt.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return rt
}

func newClient(t *testing.T, conn *bus.Conn) *runtime.Client {
	t.Helper()
	c, err := runtime.NewClient(conn, runtime.ClientConfig{Topology: topo, Retry: &runtime.RetryConfig{AttemptTimeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// send sends payload to agent and returns the reply's payload as JSON.
func send(t *testing.T, c *runtime.Client, agent string, payload any) string {
	t.Helper()
	env, err := envelope.New(c.Name(), agent, envelope.TaskRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := c.Send(testkit.Context(t), env)
	if err != nil {
		t.Fatalf("send %v: %v", payload, err)
	}
	b, err := envelope.PayloadJSON(reply.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// publish stores a task for agent without waiting for an answer and
// returns its envelope id.
func publish(t *testing.T, conn *bus.Conn, agent string, payload any) string {
	t.Helper()
	env, err := envelope.New("tester", agent, envelope.TaskRequest, payload)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(testkit.Context(t), topo.TaskSubject(agent, envelope.TaskRequest), env); err != nil {
		t.Fatal(err)
	}
	return env.ID
}

// deadLetters waits until agent has n dead letters and returns them by
// envelope id.
func deadLetters(t *testing.T, conn *bus.Conn, agent string, n int) map[string]*dlq.Entry {
	t.Helper()
	store := dlq.NewStore(conn.JetStream(), topo)
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, err := store.List(testkit.Context(t), dlq.Filter{Agent: agent})
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) >= n {
			out := make(map[string]*dlq.Entry, len(entries))
			for _, e := range entries {
				var env envelope.Envelope
				if err := envelope.Unmarshal(e.Data, &env); err != nil {
					t.Fatal(err)
				}
				out[env.ID] = e
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters of %s, want %d", len(entries), agent, n)
		}
		time.Sleep(20 * time.Millisecond) // polling the DLQ stream
	}
}

func checkDeadLetter(t *testing.T, dl map[string]*dlq.Entry, id, what string, reason dlq.Reason, deliveries uint64, errHas string) {
	t.Helper()
	e := dl[id]
	switch {
	case e == nil:
		t.Errorf("%s: not dead-lettered", what)
	case e.Reason != reason || e.Deliveries != deliveries || !strings.Contains(e.Error, errHas):
		t.Errorf("%s: dead letter reason %s after %d deliveries, error %q; want %s after %d, error with %q",
			what, e.Reason, e.Deliveries, e.Error, reason, deliveries, errHas)
	}
}

func TestExecUnderTheRuntime(t *testing.T) {
	_, conn := natstest.Provisioned(t, topo)
	// the test child in by-payload mode: the task's payload says what it does
	h := execHandler(t, handlers.ExecConfig{Command: childCommand("by-payload")})
	rt := startRuntime(t, conn, "sidecar", 10*time.Second, h)
	// the same program with a short deadline, for the one that hangs
	short := startRuntime(t, conn, "short", 500*time.Millisecond, h)
	client := newClient(t, conn)

	var got struct {
		Got     string `json:"got"`
		Attempt int    `json:"attempt"`
	}
	if err := json.Unmarshal([]byte(send(t, client, "sidecar", "reply")), &got); err != nil || got.Got != "reply" || got.Attempt != 1 {
		t.Errorf("reply %+v (%v)", got, err)
	}
	// exit 75 twice: redelivered with backoff, answered on delivery 3
	if err := json.Unmarshal([]byte(send(t, client, "sidecar", "fail-until 3")), &got); err != nil || got.Attempt != 3 {
		t.Errorf("fail-until 3: reply %+v (%v)", got, err)
	}

	exit3 := publish(t, conn, "sidecar", "exit 3")
	garbage := publish(t, conn, "sidecar", "garbage")
	kill9 := publish(t, conn, "sidecar", "kill9")
	always75 := publish(t, conn, "sidecar", "exit 75")
	hang := publish(t, conn, "short", "hang /dev/null")
	dl := deadLetters(t, conn, "sidecar", 4)
	checkDeadLetter(t, dl, exit3, "exit 3", dlq.ReasonPermanent, 1, "exit status 3: stderr: failing with 3")
	checkDeadLetter(t, dl, garbage, "garbage stdout", dlq.ReasonPermanent, 1, "answer is not one JSON value")
	checkDeadLetter(t, dl, kill9, "kill -9", dlq.ReasonPermanent, 1, "killed by SIGKILL")
	checkDeadLetter(t, dl, always75, "exit 75 every time", dlq.ReasonMaxAttempts, 3, "EX_TEMPFAIL")
	checkDeadLetter(t, deadLetters(t, conn, "short", 1), hang, "hang past the deadline", dlq.ReasonMaxAttempts, 3, "handler deadline passed")
	if st := rt.Stats(); st.Succeeded != 2 || st.DeadLettered != 4 || st.Retried != 2+2 {
		t.Errorf("stats %+v, want 2 succeeded, 4 dead-lettered, 4 retried", st)
	}
	if st := short.Stats(); st.DeadLettered != 1 || st.Retried != 2 {
		t.Errorf("short: stats %+v, want 1 dead-lettered after 2 retries", st)
	}
}

func TestHTTPUnderTheRuntime(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]time.Time{} // attempts per envelope
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			ID      string `json:"id"`
			Payload string `json:"payload"`
		}
		_ = json.NewDecoder(r.Body).Decode(&env)
		mu.Lock()
		seen[env.ID] = append(seen[env.ID], time.Now())
		n := len(seen[env.ID])
		mu.Unlock()
		switch env.Payload {
		case "ok":
			_, _ = io.WriteString(w, `{"ok":true}`)
		case "busy-once":
			if n == 1 {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, `{"after":"retry"}`)
		case "refused":
			http.Error(w, "no such sku", http.StatusUnprocessableEntity)
		case "broken":
			http.Error(w, "boom", http.StatusInternalServerError)
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}))
	defer srv.Close()
	_, conn := natstest.Provisioned(t, topo)
	h := httpHandler(t, handlers.HTTPConfig{URL: srv.URL})
	rt := startRuntime(t, conn, "web", 10*time.Second, h)
	short := startRuntime(t, conn, "short", 500*time.Millisecond, h) // for the slow server
	client := newClient(t, conn)

	if p := send(t, client, "web", "ok"); p != `{"ok":true}` {
		t.Errorf("ok: reply %s", p)
	}
	env, err := envelope.New(client.Name(), "web", envelope.TaskRequest, "busy-once")
	if err != nil {
		t.Fatal(err)
	}
	reply, err := client.Send(testkit.Context(t), env)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := envelope.PayloadJSON(reply.Payload); string(p) != `{"after":"retry"}` {
		t.Errorf("busy-once: reply %s", p)
	}
	mu.Lock()
	at := seen[env.ID]
	mu.Unlock()
	if len(at) != 2 || at[1].Sub(at[0]) < time.Second {
		t.Errorf("busy-once: attempts at %v, want 2, the second after Retry-After (1s)", at)
	}

	refused := publish(t, conn, "web", "refused")
	broken := publish(t, conn, "web", "broken")
	slow := publish(t, conn, "short", "slow")
	dl := deadLetters(t, conn, "web", 2)
	checkDeadLetter(t, dl, refused, "422", dlq.ReasonPermanent, 1, `422 Unprocessable Entity: "no such sku"`)
	checkDeadLetter(t, dl, broken, "500", dlq.ReasonMaxAttempts, 3, `500 Internal Server Error: "boom"`)
	checkDeadLetter(t, deadLetters(t, conn, "short", 1), slow, "slow server", dlq.ReasonMaxAttempts, 3, "handler deadline passed")
	if st := rt.Stats(); st.Succeeded != 2 || st.DeadLettered != 2 || st.Retried != 1+2 {
		t.Errorf("stats %+v, want 2 succeeded, 2 dead-lettered, 3 retried", st)
	}
	if st := short.Stats(); st.DeadLettered != 1 || st.Retried != 2 {
		t.Errorf("short: stats %+v, want 1 dead-lettered after 2 retries", st)
	}
}
