package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// composeStackTimeout bounds the test once the images exist: up, the checks, the replay
	// one-off. The cleanup (docker-compose down) has its own budget.
	composeStackTimeout = 2 * time.Minute
	// composeAgentsTimeout bounds the wait for the agents to pull, once NATS serves.
	composeAgentsTimeout = 45 * time.Second
	// composeCommandTimeout bounds one docker-compose command.
	composeCommandTimeout = time.Minute
	// composeLogLines is how much of each service's log a failed test shows.
	composeLogLines = 50
	// composeFlakyPermanentRate replaces the flaky agent's default (0.05) so that 50 tasks
	// give dead letters for certain (0.8^50: about 1 run in 70,000 has none).
	composeFlakyPermanentRate = "0.2"
)

// TestComposeStackComesUp builds the images as `make compose-up` does (deploy/build.sh),
// brings docker-compose.yml up under a project of its own on free host ports, and checks
// what the README promises: the two echo replicas share the work, every task sent to the
// flaky agent ends either answered or dead-lettered as permanent, and the replay one-off
// reports those dead letters. The stack, its volume and network are removed at the end,
// whatever happened.
func TestComposeStackComesUp(t *testing.T) {
	requireDocker(t)
	composeBin := requireCompose(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	buildComposeImages(t, root, composeBin)

	ctx, cancel := context.WithTimeout(context.Background(), composeStackTimeout)
	defer cancel()
	stack := startComposeStack(ctx, t, composeBin, filepath.Join(root, "docker-compose.yml"))

	conn, err := bus.Connect(ctx, stack.natsURL(), nats.IgnoreDiscoveredServers(), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close) // before docker-compose down: cleanups run last-registered first
	topo := bus.Topology{}
	js := conn.JetStream()
	// Both echo replicas pull on the one durable consumer, and the flaky agent on its own.
	// An agent that lost the race with NATS is restarted by Docker within a few seconds.
	wctx, wcancel := context.WithTimeout(ctx, composeAgentsTimeout)
	waitForComposeConsumer(wctx, t, js, topo, "echo", 2)
	waitForComposeConsumer(wctx, t, js, topo, "flaky", 1)
	wcancel()
	t.Logf("stack %s serving after %v", stack.project, took(stack.started))

	checkComposeEchoReplicas(ctx, t, conn, stack)
	dead := checkComposeFlaky(ctx, t, conn, topo)
	checkComposeReplayStats(ctx, t, stack, dead)
}

// requireCompose returns the path of docker-compose. Without it, the test is skipped, or
// fails when CI=true (as requireDocker does for the engine).
func requireCompose(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-compose")
	if err == nil {
		return bin
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("the compose test needs docker-compose and CI=true: %v", err)
	}
	t.Skipf("skipping: docker-compose not found (%v); install it to run this test (with CI=true this is a failure)", err)
	return ""
}

// buildComposeImages runs deploy/build.sh, the step `make compose-up` runs first: static
// binaries, then docker-compose build (jetagent/nats:dev, jetagent/agent:dev,
// jetagent/replay:dev). Unchanged sources make it quick: Go's build cache, reproducible
// binaries, Docker's layer cache.
func buildComposeImages(t *testing.T, root, composeBin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	started := time.Now()
	cmd := exec.CommandContext(ctx, "sh", filepath.Join(root, "deploy", "build.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DOCKER_COMPOSE="+composeBin)
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("deploy/build.sh: %v\n%s", err, out)
	}
	t.Logf("deploy/build.sh: images built in %v", took(started))
}

// composeStack is docker-compose.yml brought up under a project name of its own.
type composeStack struct {
	bin, file, project string
	envFile            string // an empty file: see command
	env                []string
	natsPort           int
	monitorPort        int
	started            time.Time
}

// startComposeStack runs docker-compose up -d on two free host ports and waits until NATS
// serves JetStream. docker-compose down -v is registered with t.Cleanup before the stack
// starts, so whatever part of it came up is removed; when the test failed, the last lines
// of every service's log are logged first.
func startComposeStack(ctx context.Context, t *testing.T, bin, file string) *composeStack {
	t.Helper()
	s := &composeStack{
		bin:     bin,
		file:    file,
		project: "jetagent-test-" + strings.ToLower(rand.Text()[:10]),
		envFile: filepath.Join(t.TempDir(), "empty.env"), // removed after docker-compose down
		started: time.Now(),
	}
	if err := os.WriteFile(s.envFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A run killed before its cleanups (go test -timeout) leaves the stack behind; remove it
	// with: docker-compose -p <project> down -v
	t.Logf("docker-compose project %s", s.project)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), composeCommandTimeout)
		defer cancel()
		if t.Failed() {
			out, _ := s.output(ctx, "logs", "--no-color", "--tail", strconv.Itoa(composeLogLines))
			t.Logf("docker-compose logs, last %d lines per container:\n%s", composeLogLines, out)
		}
		if out, err := s.output(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "10"); err != nil {
			t.Errorf("docker-compose down: %v\n%s", err, out)
		}
	})

	var lastErr error
	for attempt := 1; attempt <= natsStartAttempts; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			t.Fatal(err)
		}
		s.natsPort, s.monitorPort = ports[0], ports[1]
		s.env = composeEnv(map[string]string{
			"JETAGENT_NATS_PORT":            strconv.Itoa(s.natsPort),
			"JETAGENT_NATS_MONITOR_PORT":    strconv.Itoa(s.monitorPort),
			"JETAGENT_FLAKY_PERMANENT_RATE": composeFlakyPermanentRate,
		})
		out, err := s.output(ctx, "up", "--detach", "--no-build")
		if err == nil {
			break
		}
		lastErr = fmt.Errorf("docker-compose up: %w\n%s", err, out)
		if !isPortConflict(errors.New(out)) {
			t.Fatal(lastErr)
		}
		t.Logf("docker-compose up, attempt %d: a host port was taken before Docker bound it", attempt)
		if out, err := s.output(ctx, "down", "--volumes", "--remove-orphans", "--timeout", "1"); err != nil {
			t.Fatalf("docker-compose down after a failed up: %v\n%s", err, out)
		}
		if attempt == natsStartAttempts {
			t.Fatal(lastErr)
		}
	}
	if err := waitForComposeNATS(ctx, s.monitorURL()); err != nil {
		t.Fatal(err)
	}
	return s
}

// composeEnv is this process's environment without what would change the stack under the
// test (a project name, compose files or profiles, the stack's knobs), plus set.
func composeEnv(set map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "COMPOSE_PROJECT_NAME", name == "COMPOSE_FILE", name == "COMPOSE_PROFILES",
			strings.HasPrefix(name, "JETAGENT_"):
			continue
		}
		env = append(env, kv)
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// command is docker-compose with the stack's project, file and environment, and args. The
// .env file next to docker-compose.yml is replaced by an empty one: a developer's settings
// must not change the test. (docker-compose 1.29 wants a regular file: /dev/null is refused.)
func (s *composeStack) command(ctx context.Context, args ...string) *exec.Cmd {
	base := []string{"--project-name", s.project, "--file", s.file, "--env-file", s.envFile}
	cmd := exec.CommandContext(ctx, s.bin, append(base, args...)...)
	cmd.Env = s.env
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// output runs a docker-compose command bounded by composeCommandTimeout and returns its
// stdout and stderr together.
func (s *composeStack) output(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, composeCommandTimeout)
	defer cancel()
	out, err := s.command(ctx, args...).CombinedOutput()
	return string(out), err
}

func (s *composeStack) natsURL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", s.natsPort)
}

func (s *composeStack) monitorURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d", s.monitorPort)
}

// waitForComposeNATS polls GET /healthz?js-enabled-only=true on the monitoring port until it
// answers 200: the server takes clients and JetStream is on.
func waitForComposeNATS(ctx context.Context, monitorURL string) error {
	// No keep-alive: an idle connection would outlive the test as two goroutines.
	httpClient := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, monitorURL+"/healthz?js-enabled-only=true", nil)
		if err != nil {
			return err
		}
		if resp, err := httpClient.Do(req); err != nil {
			last = err
		} else {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %s", resp.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for NATS at %s: %v: %w", monitorURL, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitForComposeConsumer polls until the agent's durable consumer exists and has at least
// pullers pull requests waiting: that many replicas are connected and pulling. The agents
// provision the streams themselves, after reconnecting if they started before NATS.
func waitForComposeConsumer(ctx context.Context, t *testing.T, js jetstream.JetStream, topo bus.Topology, agent string, pullers int) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		cons, err := js.Consumer(ctx, topo.TasksStream(), agent)
		if err == nil {
			info, err := cons.Info(ctx)
			if err == nil && info.NumWaiting >= pullers {
				return
			}
			if err == nil {
				last = fmt.Sprintf("%d pull requests waiting", info.NumWaiting)
			} else {
				last = err.Error()
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent %q: want %d replicas pulling, last saw: %s", agent, pullers, last)
		case <-tick.C:
		}
	}
}

// stoppedLine is the last line `agent run` logs, with its counts (text or JSON logs).
var stoppedLine = regexp.MustCompile(`"?msg"?[=:]"?stopped"?[ ,].*"?succeeded"?[=:](\d+)`)

// checkComposeEchoReplicas sends 20 tasks to echo at once and checks every reply, then stops
// the two replicas and reads, in each one's last log line, how many tasks it answered: both
// must have served (the reply's sender is the agent's name, the same for both).
func checkComposeEchoReplicas(ctx context.Context, t *testing.T, conn *bus.Conn, stack *composeStack) {
	t.Helper()
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Name: "compose-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			payload := fmt.Sprint("echo ", i)
			env, err := envelope.New("compose-test", "echo", envelope.TaskRequest, payload)
			if err != nil {
				errs <- err
				return
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			rep, err := client.Send(sctx, env)
			if err != nil {
				errs <- fmt.Errorf("send %q: %w", payload, err)
				return
			}
			var got string
			if err := rep.DecodePayload(&got); err != nil || got != payload || rep.CorrelationID != env.ID {
				errs <- fmt.Errorf("reply to %q: %q (%v), correlation id %s, want %s", payload, got, err, rep.CorrelationID, env.ID)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}

	if out, err := stack.output(ctx, "stop", "--timeout", "30", "agent"); err != nil {
		t.Fatalf("docker-compose stop agent: %v\n%s", err, out)
	}
	cmd := stack.command(ctx, "logs", "--no-color", "agent")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	logs, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker-compose logs agent: %v\n%s", err, stderr.String())
	}
	served := map[string]int{} // container -> tasks answered, from its last "stopped" line
	for line := range strings.Lines(string(logs)) {
		container, text, ok := strings.Cut(line, "|")
		if m := stoppedLine.FindStringSubmatch(text); ok && m != nil {
			served[strings.TrimSpace(container)], _ = strconv.Atoi(m[1])
		}
	}
	total := 0
	for _, k := range served {
		total += k
	}
	t.Logf("echo replicas served %v", served)
	if len(served) != 2 || total != n {
		t.Fatalf("want 2 replicas answering %d tasks in all, got %v; logs:\n%s", n, served, logs)
	}
	for container, k := range served {
		if k == 0 {
			t.Errorf("replica %s answered no task: the replicas do not share the work", container)
		}
	}
}

// checkComposeFlaky publishes 50 tasks to the flaky agent and waits until each one either has
// its reply stored or is dead-lettered with the reason "permanent", never both, never twice.
// Transient failures are retried with backoff in between. It returns the dead letter count.
func checkComposeFlaky(ctx context.Context, t *testing.T, conn *bus.Conn, topo bus.Topology) int {
	t.Helper()
	const n = 50
	js := conn.JetStream()
	replyTo := topo.ReplySubject("compose-test-flaky")
	msgs := make([]*nats.Msg, n)
	tasks := make(map[string]bool, n)
	for i := range msgs {
		env, err := envelope.New("compose-test", "flaky", envelope.TaskRequest, fmt.Sprint("flaky ", i))
		if err != nil {
			t.Fatal(err)
		}
		env.ReplyTo = replyTo
		tasks[env.ID] = true
		if msgs[i], err = bus.EnvelopeMsg(topo.TaskSubject("flaky", envelope.TaskRequest), env); err != nil {
			t.Fatal(err)
		}
	}
	started := time.Now()
	if _, err := bus.NewPublisher(js).PublishBatch(ctx, msgs); err != nil {
		t.Fatalf("publish tasks: %v", err)
	}

	store := dlq.NewStore(js, topo)
	settled := func() (replies uint64, dead []*dlq.Entry) {
		replies, err := composeSubjectCount(ctx, js, topo.RepliesStream(), replyTo)
		if err != nil {
			t.Fatalf("count replies: %v", err)
		}
		dead, err = store.List(ctx, dlq.Filter{Agent: "flaky"})
		if err != nil {
			t.Fatalf("list dead letters: %v", err)
		}
		return replies, dead
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	replies, dead := settled()
	for replies+uint64(len(dead)) < n {
		select {
		case <-ctx.Done():
			t.Fatalf("after %v, %d of %d flaky tasks settled (%d replies, %d dead letters)",
				took(started), replies+uint64(len(dead)), n, replies, len(dead))
		case <-tick.C:
		}
		replies, dead = settled()
	}
	t.Logf("flaky: %d tasks settled in %v: %d answered, %d dead-lettered", n, took(started), replies, len(dead))

	outcome := map[string]string{}
	settle := func(id, how string) {
		switch {
		case !tasks[id]:
			t.Errorf("%s for a task this test did not send: %s", how, id)
		case outcome[id] != "":
			t.Errorf("task %s settled twice: %s, then %s", id, outcome[id], how)
		default:
			outcome[id] = how
		}
	}
	for _, r := range readReplies(ctx, t, js, topo, replyTo, int(replies)) {
		settle(r.CorrelationID, "reply")
	}
	for _, e := range dead {
		var env envelope.Envelope
		if err := envelope.Unmarshal(e.Data, &env); err != nil {
			t.Errorf("dead letter %d does not decode: %v", e.Seq, err)
			continue
		}
		if e.Reason != dlq.ReasonPermanent {
			t.Errorf("task %s dead-lettered as %q (%s), want %q", env.ID, e.Reason, e.Error, dlq.ReasonPermanent)
		}
		settle(env.ID, "dead letter")
	}
	for id := range tasks {
		if outcome[id] == "" {
			t.Errorf("task %s neither answered nor dead-lettered", id)
		}
	}
	if len(dead) == 0 {
		t.Errorf("no dead letters at a permanent rate of %s: is the flaky agent's --permanent-rate passed?", composeFlakyPermanentRate)
	}
	return len(dead)
}

// composeSubjectCount returns how many messages stream holds under subject.
func composeSubjectCount(ctx context.Context, js jetstream.JetStream, stream, subject string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// checkComposeReplayStats runs the replay one-off as the README says (docker-compose run --rm
// replay stats) and checks that it counts the flaky agent's dead letters, all permanent.
func checkComposeReplayStats(ctx context.Context, t *testing.T, stack *composeStack, dead int) {
	t.Helper()
	// -T: no pseudo-terminal, the test has none to give it.
	cmd := stack.command(ctx, "run", "--rm", "-T", "replay", "stats")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("docker-compose run --rm replay stats: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	t.Logf("docker-compose run --rm replay stats:\n%s", out)
	for _, want := range []string{
		fmt.Sprintf(`(?m)^total %d\b`, dead),
		fmt.Sprintf(`(?m)^flaky\s+%d$`, dead),
		fmt.Sprintf(`(?m)^permanent\s+%d$`, dead),
	} {
		if !regexp.MustCompile(want).Match(out) {
			t.Errorf("replay stats output does not match %s", want)
		}
	}
}
