package integration

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// testcontainers-go reads its configuration once, on first use, so this must come before
	// any call into it. The reaper (Ryuk) is an image pulled from a registry, and machines
	// without one cannot start it; every helper here removes what it creates with t.Cleanup.
	if err := os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true"); err != nil {
		fmt.Fprintln(os.Stderr, "integration: set TESTCONTAINERS_RYUK_DISABLED:", err)
		os.Exit(2)
	}

	// The harness publishes ports on 127.0.0.1 and talks to them there. Left alone,
	// testcontainers guesses the address of published ports itself, and when it finds it
	// runs inside a container (/.dockerenv, as on the build machine, where the engine still
	// shares our network namespace) it picks the bridge gateway, where nothing listens.
	if err := os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1"); err != nil {
		fmt.Fprintln(os.Stderr, "integration: set TESTCONTAINERS_HOST_OVERRIDE:", err)
		os.Exit(2)
	}

	code := m.Run()

	// The shared Docker client keeps idle HTTP connections (two goroutines each) until closed.
	closeDockerClient()
	if code == 0 {
		if err := goleak.Find(leakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "integration: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// leakOptions lists the goroutines that may outlive the tests. None so far: with the reaper
// off and the shared Docker client closed, testcontainers-go v0.45 leaves none behind (the
// keep-alive connections of its wait.ForHTTP client end when the container is removed, and
// goleak.Find retries for a while before it reports). Add goleak.IgnoreTopFunction entries
// here, with the reason, if that changes.
func leakOptions() []goleak.Option {
	return nil
}
