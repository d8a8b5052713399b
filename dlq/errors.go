package dlq

import (
	"errors"
	"fmt"

	"github.com/jetagent/jetagent/internal/lifecycle"
)

var (
	// ErrNotDeadLetter is returned by Parse for a message without provenance.
	ErrNotDeadLetter = errors.New("dlq: not a dead letter")

	// ErrNotFound is returned when no DLQ entry has the requested id.
	ErrNotFound = errors.New("dlq: entry not found")

	// ErrSweeperStarted is returned by Sweeper.Start when the sweeper was
	// started already, and ErrSweeperStopped once it was stopped: a
	// Sweeper runs once. They wrap lifecycle.ErrStarted and ErrStopped.
	ErrSweeperStarted = fmt.Errorf("dlq: sweeper: %w", lifecycle.ErrStarted)
	ErrSweeperStopped = fmt.Errorf("dlq: sweeper: %w", lifecycle.ErrStopped)

	// ErrSweeperEnded is wrapped by Sweeper.Err when consuming advisories
	// ended without Stop.
	ErrSweeperEnded = errors.New("consuming advisories ended")
)
