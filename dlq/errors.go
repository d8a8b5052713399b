package dlq

import "errors"

var (
	// ErrNotDeadLetter is returned by Parse for a message without provenance.
	ErrNotDeadLetter = errors.New("dlq: not a dead letter")

	// ErrNotFound is returned when no DLQ entry has the requested id.
	ErrNotFound = errors.New("dlq: entry not found")
)
