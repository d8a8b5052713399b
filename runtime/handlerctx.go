package runtime

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// deadlineCtx behaves as context.WithDeadline(parent, deadline) but arms
// the timer behind Done only when the handler first looks at Done, Err or
// Value: a handler that never consults its context (a pure computation)
// costs no timer, the biggest per-delivery allocation of the dispatch
// path; every other handler gets exactly WithDeadline's context.
type deadlineCtx struct {
	parent   context.Context
	deadline time.Time

	real     atomic.Pointer[context.Context] // set once armed
	mu       sync.Mutex                      // guards arming and release
	cancel   context.CancelFunc
	released bool
}

func newDeadlineCtx(parent context.Context, deadline time.Time) *deadlineCtx {
	return &deadlineCtx{parent: parent, deadline: deadline}
}

// arm returns the WithDeadline context, creating it on first use. After
// release it is born cancelled, as WithDeadline's would be after cancel.
func (c *deadlineCtx) arm() context.Context {
	if p := c.real.Load(); p != nil {
		return *p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.real.Load(); p != nil {
		return *p
	}
	ctx, cancel := context.WithDeadline(c.parent, c.deadline)
	c.cancel = cancel
	if c.released {
		cancel()
	}
	c.real.Store(&ctx)
	return ctx
}

// release is the CancelFunc: it cancels the context if armed and makes a
// later arming cancelled.
func (c *deadlineCtx) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = true
	if c.cancel != nil {
		c.cancel()
	}
}

// Deadline is the earlier of the parent's deadline and the handler's.
func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.arm().Done() }
func (c *deadlineCtx) Err() error            { return c.arm().Err() }
func (c *deadlineCtx) Value(key any) any     { return c.arm().Value(key) }
func (c *deadlineCtx) String() string {
	return "runtime.handlerContext(deadline " + c.deadline.String() + ")"
}
