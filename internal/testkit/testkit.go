// Package testkit holds the helpers the module's tests share: a context
// that ends with the test, and a bounded poll for a condition outside the
// test's goroutines. It is imported only by _test.go files.
package testkit

import (
	"context"
	"testing"
	"time"
)

// DefaultTimeout bounds a test's context: long enough for a slow machine
// under the race detector, short enough that a hang fails the test
// rather than the whole run.
const DefaultTimeout = time.Minute

// WaitTimeout bounds WaitFor.
const WaitTimeout = 20 * time.Second

// pollEvery is how often WaitFor asks again.
const pollEvery = 5 * time.Millisecond

// Context returns a context that ends after DefaultTimeout, or when t
// ends.
func Context(t testing.TB) context.Context {
	return ContextFor(t, DefaultTimeout)
}

// ContextFor returns a context that ends after d, or when t ends.
func ContextFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond until it holds, failing t (naming what) after
// WaitTimeout. It is for conditions outside the test's own goroutines (a
// server's state, a process's output); goroutines the test owns are
// synchronised with channels instead.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(WaitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", WaitTimeout, what)
		}
		time.Sleep(pollEvery) // polling an external condition, not synchronising goroutines
	}
}
