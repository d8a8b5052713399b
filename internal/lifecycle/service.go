package lifecycle

import (
	"context"
	"errors"
	"sync"
)

// Service is a long-running part of a process.
//
//   - Start begins the work and returns once it runs; ctx bounds the
//     start, not the work. A second Start returns an error wrapping
//     [ErrStarted]; a Start after Stop one wrapping [ErrStopped].
//   - Stop ends the work gracefully and returns once it has ended; when
//     ctx ends first it cuts the work short and returns ctx's error
//     (wrapped). Stop before Start returns nil at once, and the service
//     can no longer start. A later Stop waits for the first to return and
//     returns nil.
//   - Done is closed once the service has ended: when Stop returns, or
//     when the work ended on its own (it failed for good). It is not
//     closed before Start, nor while the service runs.
//   - Err is nil until Done is closed, and after a Stop; when the service
//     ended on its own it is the error that ended it. Call Stop even
//     then: it releases what the service still holds.
type Service interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Done() <-chan struct{}
	Err() error
}

// Errors of a Service's Start. Services wrap them in their own sentinels
// (runtime.ErrStarted, ...), so errors.Is matches either.
var (
	ErrStarted = errors.New("already started")
	ErrStopped = errors.New("stopped")
)

// End is the Done and Err of a [Service]: a channel closed once, and the
// error it was closed with. The zero value is an open End; it must not be
// copied after first use.
type End struct {
	mu   sync.Mutex
	done chan struct{}
	err  error
}

func (e *End) init() chan struct{} {
	if e.done == nil {
		e.done = make(chan struct{})
	}
	return e.done
}

// Done returns the channel Close closes.
func (e *End) Done() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.init()
}

// Close closes Done with err (nil for an end by Stop). It reports whether
// this call closed it: only the first does, and its err is the one kept.
func (e *End) Close(err error) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	done := e.init()
	select {
	case <-done:
		return false
	default:
	}
	e.err = err
	close(done)
	return true
}

// Err returns the error Done was closed with: nil while it is open.
func (e *End) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}
