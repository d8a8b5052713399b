package lifecycle_test

import (
	"errors"
	"testing"

	"github.com/jetagent/jetagent/internal/lifecycle"
	"github.com/jetagent/jetagent/internal/lifecycle/lifecycletest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEndKeepsTheFirstClose(t *testing.T) {
	var e lifecycle.End
	select {
	case <-e.Done():
		t.Fatal("a zero End is closed")
	default:
	}
	if e.Err() != nil {
		t.Fatalf("Err of an open End = %v", e.Err())
	}
	boom := errors.New("boom")
	if !e.Close(boom) {
		t.Fatal("the first Close did not close")
	}
	if e.Close(nil) {
		t.Fatal("a second Close closed again")
	}
	<-e.Done()
	if e.Err() != boom {
		t.Fatalf("Err = %v, want the first Close's", e.Err())
	}
}

// The example's service keeps the contract.
func TestTickerKeepsTheContract(t *testing.T) {
	lifecycletest.Run(t, func(*testing.T) lifecycle.Service { return &ticker{fail: make(chan error, 1)} })
}
