// Package lifecycletest checks an implementation of lifecycle.Service
// against the contract: Stop before Start, Start twice, Stop twice, Stops
// at once, Start after Stop, and what Done and Err say meanwhile.
package lifecycletest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jetagent/jetagent/internal/lifecycle"
)

// limit bounds every call of the service: one that takes longer hangs.
const limit = 10 * time.Second

// Run runs the contract's cases against services made by newService,
// a fresh one, not started, for each case (newService registers its
// cleanup on the t it is given).
func Run(t *testing.T, newService func(t *testing.T) lifecycle.Service) {
	cases := []struct {
		name string
		run  func(t *testing.T, s lifecycle.Service)
	}{
		{"stop before start", func(t *testing.T, s lifecycle.Service) {
			open(t, s, "before Start")
			if err := stop(t, s); err != nil {
				t.Fatalf("Stop before Start = %v, want nil", err)
			}
			ended(t, s, "Stop before Start")
			if err := start(t, s); !errors.Is(err, lifecycle.ErrStopped) {
				t.Errorf("Start after Stop = %v, want ErrStopped", err)
			}
			ended(t, s, "Start after Stop")
		}},
		{"start twice", func(t *testing.T, s lifecycle.Service) {
			if err := start(t, s); err != nil {
				t.Fatalf("Start = %v", err)
			}
			open(t, s, "while running")
			if err := start(t, s); !errors.Is(err, lifecycle.ErrStarted) {
				t.Errorf("second Start = %v, want ErrStarted", err)
			}
			open(t, s, "after a second Start")
			if err := stop(t, s); err != nil {
				t.Fatalf("Stop = %v", err)
			}
			ended(t, s, "Stop")
		}},
		{"stop twice", func(t *testing.T, s lifecycle.Service) {
			if err := start(t, s); err != nil {
				t.Fatalf("Start = %v", err)
			}
			if err := stop(t, s); err != nil {
				t.Fatalf("Stop = %v", err)
			}
			ended(t, s, "Stop")
			if err := stop(t, s); err != nil {
				t.Errorf("second Stop = %v, want nil", err)
			}
			ended(t, s, "a second Stop")
		}},
		{"stops at once", func(t *testing.T, s lifecycle.Service) {
			if err := start(t, s); err != nil {
				t.Fatalf("Start = %v", err)
			}
			errs := make(chan error, 2)
			for range 2 {
				go func() { errs <- callStop(s) }()
			}
			for range 2 {
				select {
				case err := <-errs:
					if err != nil {
						t.Errorf("Stop = %v, want nil", err)
					}
				case <-time.After(limit + time.Second):
					t.Fatalf("Stop did not return in %v", limit)
				}
			}
			ended(t, s, "two Stops at once")
		}},
		{"start after stop", func(t *testing.T, s lifecycle.Service) {
			if err := start(t, s); err != nil {
				t.Fatalf("Start = %v", err)
			}
			if err := stop(t, s); err != nil {
				t.Fatalf("Stop = %v", err)
			}
			if err := start(t, s); !errors.Is(err, lifecycle.ErrStopped) {
				t.Errorf("Start after Stop = %v, want ErrStopped", err)
			}
			ended(t, s, "Start after Stop")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newService(t)) })
	}
}

func start(t *testing.T, s lifecycle.Service) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return s.Start(ctx)
}

// stop calls Stop, failing the test when it does not return in time.
func stop(t *testing.T, s lifecycle.Service) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- callStop(s) }()
	select {
	case err := <-errc:
		return err
	case <-time.After(limit + time.Second):
		t.Fatalf("Stop did not return in %v", limit)
		return nil
	}
}

func callStop(s lifecycle.Service) error {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return s.Stop(ctx)
}

// open checks that s has not ended.
func open(t *testing.T, s lifecycle.Service, when string) {
	t.Helper()
	select {
	case <-s.Done():
		t.Errorf("Done closed %s (Err %v)", when, s.Err())
	default:
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err %s = %v, want nil", when, err)
	}
}

// ended checks that s has ended by Stop: Done closed, Err nil.
func ended(t *testing.T, s lifecycle.Service, after string) {
	t.Helper()
	select {
	case <-s.Done():
	default:
		t.Errorf("Done open after %s", after)
	}
	if err := s.Err(); err != nil {
		t.Errorf("Err after %s = %v, want nil", after, err)
	}
}
