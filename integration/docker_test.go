package integration

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// dockerPingTimeout bounds the one look for a Docker engine a test process makes.
const dockerPingTimeout = 5 * time.Second

// sharedDocker is the process-wide Docker client, found once by dockerClient and closed by
// TestMain.
var sharedDocker struct {
	once sync.Once
	cli  *testcontainers.DockerClient
	err  error
}

// dockerClient returns the process-wide Docker client, or why there is none. It is made by
// testcontainers-go, so it finds the engine the way testcontainers does (DOCKER_HOST,
// ~/.testcontainers.properties, the usual sockets), and it has answered a ping.
func dockerClient() (*testcontainers.DockerClient, error) {
	sharedDocker.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dockerPingTimeout)
		defer cancel()
		sharedDocker.cli, sharedDocker.err = connectDocker(ctx)
	})
	return sharedDocker.cli, sharedDocker.err
}

// connectDocker makes a Docker client through testcontainers-go and pings the engine.
func connectDocker(ctx context.Context) (cli *testcontainers.DockerClient, err error) {
	// testcontainers panics in a few of its "Must" look-ups when no engine can be found.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers panicked while looking for a Docker engine: %v", r)
		}
	}()
	cli, err = testcontainers.NewDockerClientWithOpts(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("ping Docker engine: %w", err)
	}
	return cli, nil
}

// closeDockerClient closes the shared client, if one was made. Call it once the tests are done.
func closeDockerClient() {
	sharedDocker.once.Do(func() {}) // orders this read after the write in dockerClient, if any
	if sharedDocker.cli != nil {
		_ = sharedDocker.cli.Close()
	}
}

// requireDocker must be the first call of every integration test. When the Docker engine
// cannot be reached it skips the test, or fails it when the environment says CI=true: a CI
// run that silently skipped every integration test would look green and prove nothing.
func requireDocker(t testing.TB) {
	t.Helper()
	_, err := dockerClient()
	switch verdict, msg := dockerDecision(os.Getenv("CI"), err); verdict {
	case dockerFatal:
		t.Fatal(msg)
	case dockerSkip:
		t.Skip(msg)
	}
}

// dockerVerdict is what requireDocker does with a test.
type dockerVerdict int

const (
	dockerRun   dockerVerdict = iota // the engine answered: run the test
	dockerSkip                       // no engine, not in CI: skip the test
	dockerFatal                      // no engine in CI: fail the test
)

// dockerDecision is requireDocker's rule as a pure function of the CI environment variable
// and the result of looking for the engine. It returns the verdict and the message to give
// with it. CI counts as set when strconv.ParseBool reads it as true ("true", "1", ...).
func dockerDecision(ciEnv string, pingErr error) (dockerVerdict, string) {
	if pingErr == nil {
		return dockerRun, ""
	}
	if ci, _ := strconv.ParseBool(ciEnv); ci {
		return dockerFatal, fmt.Sprintf("integration tests need Docker and CI=true: %v", pingErr)
	}
	return dockerSkip, fmt.Sprintf("skipping integration test: Docker engine not reachable (%v); "+
		"start Docker or point DOCKER_HOST at an engine to run it (with CI=true this is a failure)", pingErr)
}
