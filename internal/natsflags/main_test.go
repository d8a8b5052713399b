package natsflags_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/spf13/pflag"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// envVars lists every variable Options reads, to clear them in tests.
var envVars = []string{
	natsflags.EnvCreds, natsflags.EnvNKey, natsflags.EnvToken, natsflags.EnvTokenFile,
	natsflags.EnvUser, natsflags.EnvPassword, natsflags.EnvPasswordFile,
	natsflags.EnvTLSCA, natsflags.EnvTLSCert, natsflags.EnvTLSKey, natsflags.EnvTLSServerName,
	natsflags.EnvInboxPrefix,
}

// cleanEnv unsets every JETAGENT_NATS_* variable for the test (and forbids
// t.Parallel, which is what we want for tests reading the environment).
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, v := range envVars {
		t.Setenv(v, "")
		if err := os.Unsetenv(v); err != nil {
			t.Fatal(err)
		}
	}
}

// parse registers the flags on a new flag set and parses args.
func parse(t *testing.T, args ...string) *natsflags.Flags {
	t.Helper()
	var f natsflags.Flags
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %v: %v", args, err)
	}
	return &f
}

// writeFile writes data to name in a temporary directory and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// startServer starts a nats-server with o (a loopback listener on a free
// port, no logs, no signals) and shuts it down when the test ends.
func startServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host, o.Port, o.NoSigs, o.NoLog = "127.0.0.1", server.RANDOM_PORT, true, true
	srv, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return srv
}

// connect connects to url with f's options, closing the connection when
// the test ends.
func connect(t *testing.T, url string, f *natsflags.Flags) (*bus.Conn, error) {
	t.Helper()
	opts, err := f.Options()
	if err != nil {
		t.Fatalf("options: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, url, opts...)
	if err == nil {
		t.Cleanup(conn.Close)
	}
	return conn, err
}
