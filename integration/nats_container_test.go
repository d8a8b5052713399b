package integration

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	tcnetwork "github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

const (
	natsClientPort  = "4222/tcp"
	natsMonitorPort = "8222/tcp"
	natsDataDir     = "/data"

	defaultNATSStartupTimeout = 30 * time.Second
	defaultNATSStopTimeout    = 10 * time.Second
	// cleanupTimeout bounds what a t.Cleanup does with Docker.
	cleanupTimeout = 30 * time.Second
	// natsStartAttempts covers the rare case of another process taking a host port between
	// freePorts choosing it and Docker binding it.
	natsStartAttempts = 3
	// logLinesOnFailure is how much of the server log a failed test shows.
	logLinesOnFailure = 100
)

// NATSOptions configures startNATS. The zero value is one standalone JetStream server.
type NATSOptions struct {
	// ServerName is passed as --server_name, and is the container's alias on Network when
	// Aliases is empty. Empty: nats-server makes up a name.
	ServerName string
	// Args are more nats-server arguments, after the fixed ones (-js -sd /data -m 8222),
	// for example the cluster flags.
	Args []string
	// Network is a Docker network (see newNetwork) to attach the container to, so that other
	// containers reach it by alias. Empty: Docker's default bridge.
	Network string
	// Aliases are the container's DNS names on Network. Empty: ServerName, if set.
	Aliases []string
	// StartupTimeout bounds each wait for readiness, at start and in Start. Zero: 30s.
	StartupTimeout time.Duration
}

// NATSContainer is a nats-server in a container, started by startNATS and removed, with its
// data volume, when the test ends. Its client and monitoring ports are published on
// 127.0.0.1 at host ports fixed at creation, so URL and MonitorURL stay valid across Stop,
// Start, Kill and Restart (a client that reconnects finds the server again), and its
// JetStream store is a named volume, so it survives them too.
type NATSContainer struct {
	container      *testcontainers.DockerContainer
	docker         *testcontainers.DockerClient
	volume         string
	clientPort     int
	monitorPort    int
	startupTimeout time.Duration
}

// startNATS starts a nats-server container from natsImage and waits until it serves
// (GET /healthz?js-enabled-only=true on the monitoring port answers 200). It calls
// requireDocker, so a test without Docker skips (or fails, with CI=true) here.
// The container and its volume are removed by t.Cleanup; if the test failed, the last
// 100 lines of the server log are logged first.
func startNATS(t testing.TB, opts NATSOptions) *NATSContainer {
	t.Helper()
	requireDocker(t)
	image := natsImage(t)
	docker, err := dockerClient()
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	if opts.StartupTimeout <= 0 {
		opts.StartupTimeout = defaultNATSStartupTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), natsStartAttempts*(opts.StartupTimeout+30*time.Second))
	defer cancel()

	volume := createVolume(ctx, t, "jetagent-nats")
	args := []string{"-js", "-sd", natsDataDir, "-m", "8222"}
	if opts.ServerName != "" {
		args = append(args, "--server_name", opts.ServerName)
	}
	args = append(args, opts.Args...)

	var lastErr error
	for attempt := 1; attempt <= natsStartAttempts; attempt++ {
		n := &NATSContainer{docker: docker, volume: volume, startupTimeout: opts.StartupTimeout}
		err := n.run(ctx, t, image, args, opts)
		if err == nil {
			return n
		}
		lastErr = err
		if !isPortConflict(err) {
			break
		}
		t.Logf("NATS container, attempt %d: a host port was taken before Docker bound it: %v", attempt, err)
	}
	t.Fatalf("start NATS container: %v", lastErr)
	return nil
}

// run creates and starts the container on two free host ports. On success the container's
// removal is registered with t.Cleanup; on failure it is already removed.
func (n *NATSContainer) run(ctx context.Context, t testing.TB, image string, args []string, opts NATSOptions) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	n.clientPort, n.monitorPort = ports[0], ports[1]
	loopback := netip.MustParseAddr("127.0.0.1")

	customizers := []testcontainers.ContainerCustomizer{
		testcontainers.WithLogger(tclog.TestLogger(t)),
		testcontainers.WithCmd(args...),
		testcontainers.WithLabels(map[string]string{harnessLabel: "true"}),
		testcontainers.WithMounts(testcontainers.VolumeMount(n.volume, natsDataDir)),
		testcontainers.WithExposedPorts(natsClientPort, natsMonitorPort),
		// Fixed host ports: left to Docker, a restarted container gets new ones.
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort(natsClientPort):  {{HostIP: loopback, HostPort: strconv.Itoa(n.clientPort)}},
				network.MustParsePort(natsMonitorPort): {{HostIP: loopback, HostPort: strconv.Itoa(n.monitorPort)}},
			}
		}),
		// An HTTP check from the host: the image has no shell for an in-container check.
		testcontainers.WithWaitStrategy(
			wait.ForHTTP("/healthz?js-enabled-only=true").
				WithPort(natsMonitorPort).
				WithForcedIPv4LocalHost().
				WithPollInterval(100 * time.Millisecond).
				WithStartupTimeout(n.startupTimeout),
		),
	}
	if opts.Network != "" {
		aliases := opts.Aliases
		if len(aliases) == 0 && opts.ServerName != "" {
			aliases = []string{opts.ServerName}
		}
		customizers = append(customizers, tcnetwork.WithNetworkName(aliases, opts.Network))
	}

	ctr, err := testcontainers.Run(ctx, image, customizers...)
	if ctr != nil {
		n.container = ctr
	}
	if err != nil {
		if ctr != nil {
			cleanupCtx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			defer cancel()
			// testcontainers has already logged the server's output when the wait failed.
			if termErr := ctr.Terminate(cleanupCtx); termErr != nil {
				t.Errorf("remove failed NATS container: %v", termErr)
			}
		}
		return err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if t.Failed() {
			t.Logf("NATS container %s log, last %d lines:\n%s", n.ID(), logLinesOnFailure, lastLines(n.Logs(ctx), logLinesOnFailure))
		}
		if state, err := ctr.State(ctx); err == nil && state.Paused {
			_ = n.Unpause(ctx) // Docker thaws it to stop it; not every engine does
		}
		if err := ctr.Terminate(ctx, testcontainers.StopTimeout(defaultNATSStopTimeout)); err != nil {
			t.Errorf("remove NATS container: %v", err)
		}
	})
	return nil
}

// URL is the client URL, nats://127.0.0.1:<port>; it does not change for the container's life.
func (n *NATSContainer) URL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", n.clientPort)
}

// MonitorURL is the monitoring endpoint's base URL, http://127.0.0.1:<port>.
func (n *NATSContainer) MonitorURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", n.monitorPort)
}

// ID is the Docker container ID.
func (n *NATSContainer) ID() string {
	return n.container.GetContainerID()
}

// Container is the testcontainers handle, for what the methods here do not cover, such as
// the container's address on a network. (Exec cannot work: the image has no shell.)
func (n *NATSContainer) Container() *testcontainers.DockerContainer {
	return n.container
}

// Stop sends SIGTERM (nats-server shuts down cleanly, flushing its store) and SIGKILL after
// timeout, rounded up to whole seconds (Docker's unit; testcontainers would round 500ms down
// to an immediate kill). It returns once the container has stopped.
func (n *NATSContainer) Stop(ctx context.Context, timeout time.Duration) error {
	timeout = max(0, timeout+time.Second-1).Truncate(time.Second) // round up
	if err := n.container.Stop(ctx, &timeout); err != nil {
		return fmt.Errorf("stop NATS container: %w", err)
	}
	return nil
}

// Start starts a stopped or killed container on the same ports and volume, and waits until
// it serves again (bounded by NATSOptions.StartupTimeout and ctx).
func (n *NATSContainer) Start(ctx context.Context) error {
	if err := n.container.Start(ctx); err != nil {
		return fmt.Errorf("start NATS container: %w", err)
	}
	return nil
}

// Restart is Stop with a 10s grace period, then Start.
func (n *NATSContainer) Restart(ctx context.Context) error {
	if err := n.Stop(ctx, defaultNATSStopTimeout); err != nil {
		return err
	}
	return n.Start(ctx)
}

// Kill sends SIGKILL: the server gets no chance to flush or say goodbye to its clients.
// It returns once the container has stopped; Start brings it back.
func (n *NATSContainer) Kill(ctx context.Context) error {
	if _, err := n.docker.ContainerKill(ctx, n.ID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		return fmt.Errorf("kill NATS container: %w", err)
	}
	wait := n.docker.ContainerWait(ctx, n.ID(), client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case <-wait.Result:
		return nil
	case err := <-wait.Error:
		return fmt.Errorf("wait for killed NATS container: %w", err)
	}
}

// Pause freezes the server's process (cgroup freezer): connections stay open but nothing
// answers, as in a hung process or a network black hole.
func (n *NATSContainer) Pause(ctx context.Context) error {
	if _, err := n.docker.ContainerPause(ctx, n.ID(), client.ContainerPauseOptions{}); err != nil {
		return fmt.Errorf("pause NATS container: %w", err)
	}
	return nil
}

// Unpause thaws a paused server; it carries on where it was.
func (n *NATSContainer) Unpause(ctx context.Context) error {
	if _, err := n.docker.ContainerUnpause(ctx, n.ID(), client.ContainerUnpauseOptions{}); err != nil {
		return fmt.Errorf("unpause NATS container: %w", err)
	}
	return nil
}

// Logs returns the server's output (stdout and stderr) since the container was created,
// across restarts. It is for diagnostics: on error, the text says why instead.
func (n *NATSContainer) Logs(ctx context.Context) string {
	rc, err := n.container.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(no logs: %v)", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Sprintf("%s\n(logs cut short: %v)", b, err)
	}
	return string(b)
}

// createVolume makes a named Docker volume, removed by t.Cleanup after the containers that
// use it (cleanups run last-registered first).
func createVolume(ctx context.Context, t testing.TB, prefix string) string {
	t.Helper()
	docker, err := dockerClient()
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	name := prefix + "-" + strings.ToLower(rand.Text()[:12])
	if _, err := docker.VolumeCreate(ctx, client.VolumeCreateOptions{
		Name: name, Labels: map[string]string{harnessLabel: "true"},
	}); err != nil {
		t.Fatalf("create volume: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if _, err := docker.VolumeRemove(ctx, name, client.VolumeRemoveOptions{Force: true}); err != nil {
			t.Errorf("remove volume %s: %v", name, err)
		}
	})
	return name
}

// newNetwork creates a Docker bridge network for containers that talk to each other by
// alias (NATSOptions.Network), removed by t.Cleanup after the containers on it. It returns
// the network's name.
func newNetwork(t testing.TB) string {
	t.Helper()
	requireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	nw, err := tcnetwork.New(ctx, tcnetwork.WithLabels(map[string]string{harnessLabel: "true"}))
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		if err := nw.Remove(ctx); err != nil {
			t.Errorf("remove network %s: %v", nw.Name, err)
		}
	})
	return nw.Name
}

// freePorts returns n distinct TCP ports free on 127.0.0.1 at the time of the call.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		defer l.Close() // held until all are chosen, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// isPortConflict tells whether Docker failed to bind a host port that something else holds.
func isPortConflict(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "port is already allocated") || strings.Contains(msg, "address already in use")
}

// lastLines returns at most the last n lines of s.
func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
