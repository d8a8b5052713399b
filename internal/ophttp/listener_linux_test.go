package ophttp_test

import (
	"net"
	"os"

	"github.com/jetagent/jetagent/internal/ophttp"
	"github.com/jetagent/jetagent/internal/testio"
)

// shutdownOwnListener breaks srv's listener the way another process
// would: through a copy of its descriptor.
func shutdownOwnListener(srv *ophttp.Server) error {
	return testio.ShutdownListener(os.Getpid(), srv.Addr().(*net.TCPAddr).Port)
}
