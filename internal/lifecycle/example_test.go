package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jetagent/jetagent/internal/lifecycle"
)

// ticker is a small service: a goroutine that works until Stop, or until
// its work fails.
type ticker struct {
	end     lifecycle.End
	mu      sync.Mutex
	started bool
	stopped bool
	quit    chan struct{}
	exited  chan struct{}
	fail    chan error // the work's failure, for the example
}

func (s *ticker) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.stopped:
		return fmt.Errorf("ticker: %w", lifecycle.ErrStopped)
	case s.started:
		return fmt.Errorf("ticker: %w", lifecycle.ErrStarted)
	}
	s.started, s.quit, s.exited = true, make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.exited)
		select {
		case <-s.quit:
		case err := <-s.fail:
			s.end.Close(fmt.Errorf("ticker: %w", err)) // ended on its own
		}
	}()
	return nil
}

func (s *ticker) Stop(ctx context.Context) error {
	s.mu.Lock()
	first, started := !s.stopped, s.started
	if first && started {
		close(s.quit)
	}
	s.stopped = true
	s.mu.Unlock()
	if started {
		select {
		case <-s.exited:
		case <-ctx.Done():
			return fmt.Errorf("ticker: stop: %w", ctx.Err())
		}
	}
	s.end.Close(nil) // a no-op when the work had ended on its own
	return nil
}

func (s *ticker) Done() <-chan struct{} { return s.end.Done() }
func (s *ticker) Err() error            { return s.end.Err() }

func Example() {
	var svc lifecycle.Service = &ticker{fail: make(chan error, 1)}
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println("second start:", svc.Start(ctx))

	svc.(*ticker).fail <- errors.New("disk gone") // the work fails
	<-svc.Done()
	fmt.Println("ended:", svc.Err())
	fmt.Println("stop:", svc.Stop(ctx), svc.Stop(ctx))
	fmt.Println("err after stop:", svc.Err())
	// Output:
	// second start: ticker: already started
	// ended: ticker: disk gone
	// stop: <nil> <nil>
	// err after stop: ticker: disk gone
}
