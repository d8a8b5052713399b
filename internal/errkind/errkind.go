// Package errkind holds the sentinel errors that more than one of the
// leaf packages (envelope, resilience) must share, so that one meaning has
// one value: errors.Is matches it whichever package's name a caller uses.
// It imports nothing of ours.
package errkind

import "errors"

// ErrMalformed: a message (an envelope, or the payload inside it) could
// not be decoded. It is envelope.ErrMalformed, which resilience.Classify
// reports as KindMalformed without importing envelope.
var ErrMalformed = errors.New("envelope: malformed")
