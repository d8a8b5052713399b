package metrics_test

import (
	"fmt"
	"time"

	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/metrics"
	"github.com/jetagent/jetagent/runtime"
	"github.com/prometheus/client_golang/prometheus"
)

// An Agent is the runtime's Observer: set it as Config.Observer (here it
// is told of two deliveries by hand, as a runtime would).
func Example() {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, metrics.Options{})
	if err != nil {
		panic(err)
	}
	var obs runtime.Observer = m.Agent("echo") // runtime.Config{Agent: "echo", Observer: obs}
	const subject = "jetagent.tasks.echo.task.request"
	obs.Delivered(subject)
	obs.Settled(subject, runtime.Outcome{Disposition: runtime.Succeeded}, 3*time.Millisecond)
	obs.Delivered(subject)
	obs.Settled(subject, runtime.Outcome{Disposition: runtime.DeadLettered, Reason: dlq.ReasonPermanent}, time.Millisecond)

	fams, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			if c := s.GetCounter(); c != nil && c.GetValue() > 0 {
				fmt.Println(f.GetName(), c.GetValue())
			}
			if h := s.GetHistogram(); h != nil {
				fmt.Println(f.GetName(), "count", h.GetSampleCount())
			}
		}
	}
	// Output:
	// jetagent_dead_lettered_total 1
	// jetagent_deliveries_total 2
	// jetagent_handler_duration_seconds count 2
	// jetagent_processed_total 1
}
