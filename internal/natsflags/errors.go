package natsflags

import "errors"

// ErrConflict is wrapped by the errors of Options for settings that cannot
// be used together, or one without the other: two ways to authenticate, a
// password without a user, a TLS certificate without its key. Commands
// report it as a usage error.
var ErrConflict = errors.New("natsflags: conflicting settings")
