package beacon_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/jetagent/jetagent/runtime/beacon"
	"github.com/nats-io/nats.go"
)

// A breaker that opens is reported at once, not at the next interval,
// with the change named; the observer it wraps still sees every event.
func TestBreakerTransitionIsReportedAtOnce(t *testing.T) {
	topo := bus.Topology{Memory: true}
	_, conn := natstest.Provisioned(t, topo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reports := make(chan *beacon.Report, 256)
	sub, err := conn.NATS().Subscribe(beacon.Subject(topo, "flaky"), func(m *nats.Msg) {
		if r, err := beacon.Decode(m.Data); err == nil {
			reports <- r
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	b := beacon.New(conn, topo, "flaky", beacon.Options{Interval: time.Hour}) // only the first report and changes
	inner := &counting{}
	rt, err := runtime.New(conn, runtime.Config{Agent: "flaky", Topology: topo, Observer: b.Observer(inner),
		Breaker: resilience.BreakerSettings{Threshold: 1, OpenTimeout: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	rt.Handle(envelope.TaskRequest, func(context.Context, *runtime.Task) (any, error) { return nil, errors.New("down") })
	if err := rt.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b.Start(rt)
	b.Start(rt) // a second Start does nothing
	defer func() {
		b.Stop()
		b.Stop()
		_ = rt.Stop(ctx)
	}()
	env, _ := envelope.New("t", "flaky", envelope.TaskRequest, 1)
	if _, err := bus.NewPublisher(conn.JetStream()).PublishEnvelope(ctx, topo.TaskSubject("flaky", envelope.TaskRequest), env); err != nil {
		t.Fatal(err)
	}
	first := <-reports
	if first.Agent != "flaky" || first.Replica != b.Replica() || first.IntervalMS != time.Hour.Milliseconds() || first.Change != nil {
		t.Fatalf("first report %+v", first)
	}
	for {
		select {
		case r := <-reports:
			if r.Change == nil || r.Change.State != "open" {
				continue
			}
			if len(r.Breakers) != 1 || r.Breakers[0] != *r.Change || !strings.HasSuffix(r.Change.Subject, ".flaky.task.request") {
				t.Fatalf("report of the transition: %+v", r)
			}
			if inner.breakers.Load() == 0 || inner.delivered.Load() == 0 {
				t.Fatalf("the wrapped observer saw %d transitions, %d deliveries", inner.breakers.Load(), inner.delivered.Load())
			}
			return
		case <-ctx.Done():
			t.Fatal("no report of the breaker opening (the interval is an hour)")
		}
	}
}

func TestDecodeRefusesWhatIsNoReport(t *testing.T) {
	for _, s := range []string{"", "{", `{"agent":"a"}`, `{"replica":"r"}`, `[1]`} {
		if _, err := beacon.Decode([]byte(s)); !errors.Is(err, beacon.ErrNotReport) {
			t.Errorf("Decode(%q) = %v, want ErrNotReport", s, err)
		}
	}
	if r, err := beacon.Decode([]byte(`{"agent":"a","replica":"r","breakers":[{"subject":"s","state":"open"}]}`)); err != nil || r.Breakers[0].State != "open" {
		t.Errorf("Decode = %+v, %v", r, err)
	}
}

func TestStopBeforeStart(t *testing.T) {
	_, conn := natstest.Provisioned(t, bus.Topology{Memory: true})
	b := beacon.New(conn, bus.Topology{}, "a", beacon.Options{})
	b.Stop() // nothing to stop
	if b.Report() != nil {
		t.Error("a report before Start")
	}
	if got := beacon.Subject(bus.Topology{Prefix: "acme"}, "a"); got != "acme.status.a" {
		t.Errorf("Subject = %q", got)
	}
}

type counting struct {
	delivered, breakers atomic.Int64
}

func (c *counting) Delivered(string)                               { c.delivered.Add(1) }
func (c *counting) Settled(string, runtime.Outcome, time.Duration) {}
func (c *counting) BreakerChanged(string, resilience.State)        { c.breakers.Add(1) }
func (c *counting) Heartbeat()                                     {}
