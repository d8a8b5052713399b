package watermillmw

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/resilience"
)

// ErrInvalidConfig is wrapped by the errors [New] returns for a Config it
// cannot work with.
var ErrInvalidConfig = errors.New("watermillmw: invalid config")

// Config configures a [Middleware]. Agent and Publisher are required; every
// other zero value means the default named on the field.
type Config struct {
	// Agent names whoever gives up on a message: it is recorded in each
	// dead letter and is the third token of the dead-letter subjects
	// ("<prefix>.dlq.<agent>.<...>"). Required: letters, digits, '-' and
	// '_', at most 64 bytes.
	Agent string

	// Publisher publishes the dead letters and waits for the server to
	// store each one before the original is acknowledged. Required.
	Publisher *bus.Publisher

	// Topology names the dead-letter subjects; the dead-letter stream
	// ([bus.Topology.DLQStream], created by [bus.Provision]) must capture
	// them. Zero: the default topology (prefix "jetagent").
	Topology bus.Topology

	// MaxAttempts is the number of deliveries of a message whose handler
	// failed with a retryable error after which it is dead-lettered
	// (reason max_attempts) instead of redelivered. Zero:
	// bus.DefaultMaxDeliver (10).
	//
	// It must not exceed the subscriber's consumer MaxDeliver: the server
	// stops redelivering after MaxDeliver deliveries, and a message it gave
	// up on is never dead-lettered here. Keep it below MaxDeliver to leave
	// room for retrying a dead-letter publish that failed on the last
	// attempt.
	MaxAttempts int

	// Backoff gives the redelivery delay after a failure on delivery n:
	// Backoff.Delay(n). Zero: 1s doubling up to 60s, with jitter.
	Backoff resilience.Backoff

	// Breaker configures the circuit breaker of each subject (the breaker
	// of a subject opens after Threshold consecutive failures there; while
	// it is open its messages wait, see [Middleware.Middleware]). Zero:
	// the resilience defaults (5 failures, open for 60s). An
	// OnStateChange hook set here is called as well as the middleware's
	// own.
	Breaker resilience.BreakerSettings

	// BreakerRules give the subjects matching a rule's pattern their own
	// breaker settings (first match wins); the others get Breaker.
	BreakerRules []resilience.BreakerRule

	// Logger receives retries (Info), dead letters and breaker changes
	// (Warn, Info) and panics, with their stack, and dead letters that
	// could not be stored (Error). Nil: discard.
	Logger *slog.Logger
}

// validate reports the first problem with c, wrapping ErrInvalidConfig.
func (c *Config) validate() error {
	if c.Agent == "" {
		return fmt.Errorf("%w: Agent is required", ErrInvalidConfig)
	}
	if err := bus.ValidateName(c.Agent); err != nil {
		return fmt.Errorf("%w: Agent: %w", ErrInvalidConfig, err)
	}
	if c.Publisher == nil {
		return fmt.Errorf("%w: Publisher is required", ErrInvalidConfig)
	}
	if err := c.Topology.Validate(); err != nil {
		return fmt.Errorf("%w: Topology: %w", ErrInvalidConfig, err)
	}
	if c.MaxAttempts < 0 {
		return fmt.Errorf("%w: MaxAttempts %d is negative", ErrInvalidConfig, c.MaxAttempts)
	}
	if c.Backoff.Base < 0 || c.Backoff.Max < 0 {
		return fmt.Errorf("%w: Backoff base %v and max %v must not be negative", ErrInvalidConfig, c.Backoff.Base, c.Backoff.Max)
	}
	if err := validateBreaker("Breaker", c.Breaker); err != nil {
		return err
	}
	for i, r := range c.BreakerRules {
		if r.Pattern == "" {
			return fmt.Errorf("%w: BreakerRules[%d]: empty pattern", ErrInvalidConfig, i)
		}
		if err := validateBreaker(fmt.Sprintf("BreakerRules[%d] (%s)", i, r.Pattern), r.Settings); err != nil {
			return err
		}
	}
	return nil
}

func validateBreaker(name string, s resilience.BreakerSettings) error {
	if s.Threshold < 0 || s.OpenTimeout < 0 || s.ProbeLease < 0 {
		return fmt.Errorf("%w: %s: Threshold %d, OpenTimeout %v and ProbeLease %v must not be negative",
			ErrInvalidConfig, name, s.Threshold, s.OpenTimeout, s.ProbeLease)
	}
	return nil
}
