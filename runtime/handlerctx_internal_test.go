package runtime

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

type ctxKey struct{}

// The lazy handler context must be indistinguishable from
// context.WithDeadline for everything a handler can observe.
func TestDeadlineCtxBehavesAsWithDeadline(t *testing.T) {
	t.Run("deadline without arming", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			dl := time.Now().Add(time.Second)
			c := newDeadlineCtx(context.Background(), dl)
			defer c.release()
			if got, ok := c.Deadline(); !ok || !got.Equal(dl) {
				t.Fatalf("Deadline() = %v, %v; want %v, true", got, ok, dl)
			}
			if c.real.Load() != nil {
				t.Fatal("Deadline armed the timer")
			}
		})
	})
	t.Run("earlier parent deadline wins", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			parent, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			c := newDeadlineCtx(parent, time.Now().Add(time.Hour))
			defer c.release()
			want, _ := parent.Deadline()
			if got, _ := c.Deadline(); !got.Equal(want) {
				t.Fatalf("Deadline() = %v, want the parent's %v", got, want)
			}
			<-c.Done()
			if !errors.Is(c.Err(), context.DeadlineExceeded) {
				t.Fatalf("Err() = %v", c.Err())
			}
		})
	})
	t.Run("expires at the deadline", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			start := time.Now()
			c := newDeadlineCtx(context.Background(), start.Add(time.Second))
			defer c.release()
			if err := c.Err(); err != nil {
				t.Fatalf("Err() before the deadline = %v", err)
			}
			<-c.Done()
			if waited := time.Since(start); waited != time.Second {
				t.Fatalf("Done after %v, want 1s", waited)
			}
			if !errors.Is(c.Err(), context.DeadlineExceeded) || !errors.Is(context.Cause(c), context.DeadlineExceeded) {
				t.Fatalf("Err() = %v, Cause = %v; want DeadlineExceeded", c.Err(), context.Cause(c))
			}
		})
	})
	t.Run("parent cancellation", func(t *testing.T) {
		parent, cancel := context.WithCancelCause(context.WithValue(context.Background(), ctxKey{}, "v"))
		c := newDeadlineCtx(parent, time.Now().Add(time.Hour))
		defer c.release()
		if c.Value(ctxKey{}) != "v" {
			t.Fatalf("Value = %v, want the parent's", c.Value(ctxKey{}))
		}
		child, stopChild := context.WithCancel(c)
		defer stopChild()
		fired := make(chan struct{})
		context.AfterFunc(c, func() { close(fired) })
		boom := errors.New("boom")
		cancel(boom)
		<-c.Done()
		<-child.Done()
		<-fired
		if !errors.Is(c.Err(), context.Canceled) || !errors.Is(context.Cause(c), boom) {
			t.Fatalf("Err() = %v, Cause = %v; want Canceled, boom", c.Err(), context.Cause(c))
		}
	})
	t.Run("released before arming", func(t *testing.T) {
		c := newDeadlineCtx(context.Background(), time.Now().Add(time.Hour))
		c.release() // the handler returned; a goroutine it left looks later
		<-c.Done()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err() = %v, want Canceled", c.Err())
		}
	})
	t.Run("released after arming", func(t *testing.T) {
		c := newDeadlineCtx(context.Background(), time.Now().Add(time.Hour))
		done := c.Done()
		c.release()
		<-done
		if !errors.Is(c.Err(), context.Canceled) {
			t.Fatalf("Err() = %v, want Canceled", c.Err())
		}
	})
}

// BenchmarkHandlerContext compares the handler context of a handler that
// never looks at it with context.WithDeadline, which arms a timer each time.
func BenchmarkHandlerContext(b *testing.B) {
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.Run("lazy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := newDeadlineCtx(parent, time.Now().Add(time.Minute))
			c.release()
		}
	})
	b.Run("WithDeadline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, stop := context.WithDeadline(parent, time.Now().Add(time.Minute))
			stop()
		}
	})
}
