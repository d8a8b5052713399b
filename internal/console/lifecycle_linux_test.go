package console

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/internal/testio"
)

// When the console's listener breaks (shut down from outside the
// console), Done is closed with the serving error.
func TestConsoleEndsWhenItsListenerBreaks(t *testing.T) {
	f := startConsole(t, Auth{})
	if err := testio.ShutdownListener(os.Getpid(), f.srv.Addr().(*net.TCPAddr).Port); err != nil {
		t.Skipf("cannot break the listener from outside on this system: %v", err)
	}
	select {
	case <-f.srv.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done still open 10s after the listener broke")
	}
	if err := f.srv.Err(); err == nil || !strings.HasPrefix(err.Error(), "console: serving 127.0.0.1:") {
		t.Errorf("Err = %v, want the serving error", err)
	}
}
