package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterSurvivesLosingTheTasksStreamLeader runs two replicas of a real agent process on
// one durable consumer against a three-node NATS cluster whose streams keep three copies,
// SIGKILLs the server leading the tasks stream while tasks are being published, and checks
// that every task whose publish was acknowledged is answered exactly once, that the work
// queue empties and that both agents are still running and connected. The killed server is
// then started again and must catch up with the stream it used to lead.
func TestClusterSurvivesLosingTheTasksStreamLeader(t *testing.T) {
	requireDocker(t)
	bin := buildHostBinary(t, "./cmd/agent")
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	began := time.Now()
	nodes := startJetStreamCluster(ctx, t, "c1", "c2", "c3")
	t.Logf("3-node cluster with a JetStream meta leader after %v", took(began))
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.srv.URL()
	}
	allURLs := strings.Join(urls, ",")

	// The test's own client stays on the published ports (see README): the container
	// addresses the cluster gossips are not reachable from every Docker host.
	conn, err := bus.Connect(ctx, allURLs, nats.Name(t.Name()), nats.IgnoreDiscoveredServers(),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	js := conn.JetStream()
	topo := bus.Topology{Replicas: 3}
	clusterProvision(ctx, t, js, topo)

	// Two replicas of one agent share the durable consumer "echo". They are given every
	// published URL and also follow the cluster's gossip, as any client would: here the
	// gossiped container addresses are reachable from the host, and where they are not, the
	// published URLs still lead back to a live server.
	agents := make([]*agentProcess, 2)
	for i := range agents {
		agents[i] = startAgentProcessBin(t, bin, "run", "--nats", allURLs, "--name", "echo",
			"--ack-wait", "2s", "--replicas", "3", "--log-format", "json")
	}
	for _, a := range agents {
		waitForClusterAgentStarted(ctx, t, a)
	}
	clients := clusterClientCount(ctx, t, nodes)
	tasks, err := js.Stream(ctx, topo.TasksStream())
	if err != nil {
		t.Fatal(err)
	}

	// Publish n tasks over about 10s; the server leading the tasks stream dies a third of
	// the way through.
	const n = 3000
	const every = 10 * time.Second / n
	replyTo := topo.ReplySubject("ledger")
	subject := topo.TaskSubject("echo", envelope.TaskRequest)
	killAt := make(chan struct{})
	publishing := make(chan struct{})
	var res clusterPublishResult // written by the publisher, read once publishing is closed
	go func() {
		defer close(publishing)
		res = clusterPublishPaced(ctx, bus.NewPublisher(js), subject, replyTo, n, every, n/3, killAt)
	}()
	defer func() { // on every path, the publisher has stopped when the test returns
		cancel()
		<-publishing
	}()
	select {
	case <-killAt:
	case <-ctx.Done():
		t.Fatalf("publisher never got a third of the way: %v", ctx.Err())
	}

	leader := clusterStreamLeader(ctx, t, tasks, "")
	victim := clusterNodeNamed(t, nodes, leader)
	onVictim := clusterClientCount(ctx, t, []clusterNode{victim})
	testOnVictim := conn.NATS().ConnectedServerName() == victim.name
	killed := time.Now()
	if err := victim.srv.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	newLeader := clusterStreamLeader(ctx, t, tasks, leader)
	election := time.Since(killed)
	t.Logf("killed %s, the tasks stream leader, serving %d of the %d clients (the test's: %t); %s leads the stream %v later",
		leader, onVictim, clients, testOnVictim, newLeader, election.Round(time.Millisecond))

	// Every client is back: the survivors serve as many as the three servers did (the
	// test's and both agents').
	waitForClusterClients(ctx, t, nodes, victim, clients)
	t.Logf("all %d clients connected to the survivors %v after the kill (checked after the election)",
		clients, time.Since(killed).Round(time.Millisecond))

	<-publishing // it ends by itself, or when ctx does
	publishEnded := time.Now()
	if res.err != nil {
		t.Fatalf("publisher: %v (%d of %d acknowledged)", res.err, len(res.acked), n)
	}
	if len(res.acked) != n {
		t.Fatalf("%d of %d tasks acknowledged", len(res.acked), n)
	}
	t.Logf("published %d tasks in %v: longest wait for an acknowledgement %v, longest gap between two %v; "+
		"%d failed attempts (last: %v), %d acknowledged as duplicates of an earlier attempt",
		n, res.elapsed.Round(time.Millisecond), res.slowest.Round(time.Millisecond), res.longestGap.Round(time.Millisecond),
		res.failedAttempts, res.lastErr, res.duplicates)

	// Every task is settled, and a task is acked only after its reply is stored, so the
	// replies stream now holds every reply there will be.
	waitStreamEmpty(ctx, t, js, topo.TasksStream())
	drained := time.Since(publishEnded)
	replies := readAllClusterReplies(ctx, t, js, topo.RepliesStream(), replyTo)
	replyIDs := make(map[string][]string, n) // task id -> ids of its replies
	for _, r := range replies {
		i, ok := res.acked[r.CorrelationID]
		if !ok {
			t.Errorf("reply %s answers unknown task %s", r.ID, r.CorrelationID)
			continue
		}
		var payload int
		if err := r.DecodePayload(&payload); err != nil || payload != i {
			t.Errorf("reply to task %d carries %d (%v)", i, payload, err)
		}
		replyIDs[r.CorrelationID] = append(replyIDs[r.CorrelationID], r.ID)
	}
	lost, sameID, otherID := 0, 0, 0
	for id := range res.acked {
		got := replyIDs[id]
		switch {
		case len(got) == 0:
			lost++
		case len(got) > 1:
			distinct := slices.Compact(slices.Sorted(slices.Values(got)))
			sameID += len(got) - len(distinct)
			if len(distinct) > 1 {
				otherID++
				t.Errorf("task %s answered by %d different replies: %v", id, len(distinct), distinct)
			}
		}
	}
	t.Logf("%d tasks, %d replies stored (%d duplicates with the same id, %d tasks with replies of different ids, %d lost); "+
		"work queue empty %v after the last publish", n, len(replies), sameID, otherID, lost, drained.Round(time.Millisecond))
	if lost != 0 {
		t.Errorf("%d acknowledged tasks never answered", lost)
	}

	for i, a := range agents {
		if !a.running() {
			t.Errorf("agent %d exited:\n%s", i, a.logs.String())
		}
	}

	// The killed server comes back and catches up with the streams.
	restarted := time.Now()
	if err := victim.srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{topo.TasksStream(), topo.RepliesStream()} {
		waitForClusterReplica(ctx, t, js, name, victim.name)
	}
	t.Logf("%s rejoined and is current on the tasks and replies streams %v after its restart", victim.name, took(restarted))

	for i, a := range agents {
		if err := a.stop(15 * time.Second); err != nil {
			t.Errorf("agent %d exit after SIGTERM: %v", i, err)
		}
		t.Logf("agent %d: %s", i, clusterAgentStopStats(a.logs.String()))
	}
	t.Logf("summary: leader election %v, publish stall %v, %d tasks, %d replies, %d same-id duplicates",
		election.Round(time.Millisecond), res.longestGap.Round(time.Millisecond), n, len(replies), sameID)
}

// clusterProvision provisions topo, retrying while the meta leader cannot place the
// replicas yet (it learns of its peers' JetStream resources a little after they join).
func clusterProvision(ctx context.Context, t *testing.T, js jetstream.JetStream, topo bus.Topology) {
	t.Helper()
	const noSuitablePeers = 10005 // the server's JSClusterNoPeersErrF
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := bus.Provision(ctx, js, topo)
		var apiErr *jetstream.APIError
		if err == nil {
			return
		}
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != noSuitablePeers {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("provision never found peers for %d replicas: %v", topo.Replicas, err)
		case <-tick.C:
		}
	}
}

// clusterNode is one server of a cluster started by startJetStreamCluster.
type clusterNode struct {
	name string
	srv  *NATSContainer
}

// startJetStreamCluster starts one JetStream server per name on a fresh Docker network,
// each routed to all the others by alias, and waits until they agree on a meta leader that
// counts every server as a current peer, so that streams with one replica per server can be
// placed at once.
func startJetStreamCluster(ctx context.Context, t *testing.T, names ...string) []clusterNode {
	t.Helper()
	nw := newNetwork(t)
	nodes := make([]clusterNode, len(names))
	for i, name := range names {
		var routes []string
		for _, peer := range names {
			if peer != name {
				routes = append(routes, "nats://"+peer+":6222")
			}
		}
		nodes[i] = clusterNode{name: name, srv: startNATS(t, NATSOptions{ServerName: name, Network: nw, Args: []string{
			"--cluster_name", "jetagent", "--cluster", "nats://0.0.0.0:6222", "--routes", strings.Join(routes, ","),
		}})}
	}
	for _, n := range nodes {
		if err := waitForRoutes(ctx, n.srv, len(nodes)-1); err != nil {
			t.Fatal(err)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		last, err := clusterMetaReady(ctx, nodes)
		if err == nil {
			return nodes
		}
		select {
		case <-ctx.Done():
			t.Fatalf("JetStream cluster never ready: %v (last: %s)", err, last)
		case <-tick.C:
		}
	}
}

// clusterMetaReady reports whether every node names the same meta leader and the leader sees
// all the others as current peers; it returns what it saw.
func clusterMetaReady(ctx context.Context, nodes []clusterNode) (string, error) {
	leaders := make(map[string]bool)
	var seen []string
	var leaderView *clusterJSZMeta
	for _, n := range nodes {
		var jsz struct {
			Meta *clusterJSZMeta `json:"meta_cluster"`
		}
		if err := clusterMonitorJSON(ctx, n.srv.MonitorURL()+"/jsz", &jsz); err != nil {
			return strings.Join(seen, "; "), err
		}
		if jsz.Meta == nil || jsz.Meta.Leader == "" {
			return strings.Join(append(seen, n.name+": no meta leader"), "; "), errors.New("no meta leader yet")
		}
		leaders[jsz.Meta.Leader] = true
		seen = append(seen, fmt.Sprintf("%s: leader %s, size %d", n.name, jsz.Meta.Leader, jsz.Meta.ClusterSize))
		if jsz.Meta.Leader == n.name {
			leaderView = jsz.Meta
		}
	}
	what := strings.Join(seen, "; ")
	if len(leaders) != 1 || leaderView == nil {
		return what, errors.New("servers disagree on the meta leader")
	}
	current := 0
	for _, r := range leaderView.Replicas {
		if r.Current {
			current++
		}
	}
	if leaderView.ClusterSize != len(nodes) || current != len(nodes)-1 {
		return what, fmt.Errorf("meta leader sees %d of %d peers current", current+1, len(nodes))
	}
	return what, nil
}

// clusterJSZMeta is the part of the monitoring endpoint's /jsz meta_cluster these tests read.
type clusterJSZMeta struct {
	Leader      string `json:"leader"`
	ClusterSize int    `json:"cluster_size"`
	Replicas    []struct {
		Name    string `json:"name"`
		Current bool   `json:"current"`
	} `json:"replicas"`
}

// clusterMonitorJSON decodes the JSON answer of a monitoring endpoint URL into v.
func clusterMonitorJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No keep-alive: an idle connection would outlive the test as two goroutines.
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func clusterNodeNamed(t *testing.T, nodes []clusterNode, name string) clusterNode {
	t.Helper()
	for _, n := range nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no cluster node named %q", name)
	return clusterNode{}
}

// clusterStreamLeader polls the stream's info until it names a leader other than not, and
// returns it. While a stream has no leader its info requests go unanswered, so each one is
// bounded by a short timeout.
func clusterStreamLeader(ctx context.Context, t *testing.T, s jetstream.Stream, not string) string {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		info, err := s.Info(rctx)
		cancel()
		switch {
		case err != nil:
			last = err.Error()
		case info.Cluster == nil:
			last = "no cluster info"
		case info.Cluster.Leader != "" && info.Cluster.Leader != not:
			return info.Cluster.Leader
		default:
			last = "leader " + info.Cluster.Leader
		}
		select {
		case <-ctx.Done():
			t.Fatalf("stream never had a leader other than %q (last: %s): %v", not, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitForClusterReplica polls the stream's info until server is one of its replicas and
// has caught up with the leader.
func waitForClusterReplica(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, server string) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		s, err := js.Stream(rctx, stream)
		cancel()
		if err != nil {
			last = err.Error()
		} else if c := s.CachedInfo().Cluster; c != nil {
			last = fmt.Sprintf("leader %s", c.Leader)
			for _, r := range c.Replicas {
				if r.Name == server {
					if r.Current && !r.Offline {
						return
					}
					last += fmt.Sprintf(", %s current %t offline %t lag %d", r.Name, r.Current, r.Offline, r.Lag)
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never caught up on stream %s (last: %s): %v", server, stream, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// clusterClientCount is the number of client connections across the running nodes, read
// from each one's /connz.
func clusterClientCount(ctx context.Context, t *testing.T, nodes []clusterNode) int {
	t.Helper()
	total := 0
	for _, n := range nodes {
		var connz struct {
			NumConns int `json:"num_connections"`
		}
		if err := clusterMonitorJSON(ctx, n.srv.MonitorURL()+"/connz", &connz); err != nil {
			t.Fatalf("%s /connz: %v", n.name, err)
		}
		total += connz.NumConns
	}
	return total
}

// waitForClusterClients polls the nodes other than down until they serve want clients.
func waitForClusterClients(ctx context.Context, t *testing.T, nodes []clusterNode, down clusterNode, want int) {
	t.Helper()
	var up []clusterNode
	for _, n := range nodes {
		if n.name != down.name {
			up = append(up, n)
		}
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		got := clusterClientCount(ctx, t, up)
		if got == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the surviving servers serve %d clients, want %d: %v", got, want, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitForClusterAgentStarted polls the agent's output until it says it consumes.
func waitForClusterAgentStarted(ctx context.Context, t *testing.T, p *agentProcess) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(p.logs.String(), `"msg":"agent started"`) {
		if !p.running() {
			t.Fatalf("agent exited before it started consuming:\n%s", p.logs.String())
		}
		select {
		case <-ctx.Done():
			t.Fatalf("agent never started consuming: %v\n%s", ctx.Err(), p.logs.String())
		case <-tick.C:
		}
	}
}

// clusterAgentStopStats returns the counters of the agent's "stopped" log line (JSON format).
func clusterAgentStopStats(logs string) string {
	for line := range strings.Lines(logs) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "stopped" {
			continue
		}
		return fmt.Sprintf("succeeded %v, retried %v, dead-lettered %v, returned %v",
			rec["succeeded"], rec["retried"], rec["dead_lettered"], rec["returned"])
	}
	return "no stop statistics logged"
}

// clusterPublishResult is what clusterPublishPaced did.
type clusterPublishResult struct {
	acked          map[string]int // task id -> payload (its index), for every acknowledged task
	duplicates     int            // acknowledgements flagged duplicate: an earlier attempt was stored
	failedAttempts int
	lastErr        error
	slowest        time.Duration // longest time from a task's first attempt to its acknowledgement
	longestGap     time.Duration // longest time between two consecutive acknowledgements
	elapsed        time.Duration
	err            error // why the publisher gave up, if it did
}

// clusterPublishPaced publishes n echo tasks (payload: the index) answering to replyTo, one
// every interval (catching up after a stall), each retried with the same envelope until the
// server acknowledges it; the envelope id deduplicates the retries. It closes reached once
// mark tasks are acknowledged. It stops early only when ctx ends.
func clusterPublishPaced(ctx context.Context, pub *bus.Publisher, subject, replyTo string, n int, interval time.Duration, mark int, reached chan<- struct{}) clusterPublishResult {
	res := clusterPublishResult{acked: make(map[string]int, n)}
	start := time.Now()
	lastAck := start
	pace := time.NewTimer(0)
	defer pace.Stop()
	for i := range n {
		pace.Reset(time.Until(start.Add(time.Duration(i) * interval)))
		select {
		case <-pace.C:
		case <-ctx.Done():
			res.err = fmt.Errorf("stopped before task %d: %w", i, ctx.Err())
			return res
		}
		env, err := envelope.New("cluster-test", "echo", envelope.TaskRequest, i)
		if err != nil {
			res.err = err
			return res
		}
		env.ReplyTo = replyTo
		first := time.Now()
		for {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			ack, err := pub.PublishEnvelope(actx, subject, env)
			cancel()
			if err == nil {
				if ack.Duplicate {
					res.duplicates++
				}
				break
			}
			res.failedAttempts++
			res.lastErr = err
			// A short pause before the retry, so that a refused publish does not spin.
			pace.Reset(50 * time.Millisecond)
			select {
			case <-pace.C:
			case <-ctx.Done():
				res.err = fmt.Errorf("task %d never acknowledged: %w", i, err)
				return res
			}
		}
		now := time.Now()
		res.slowest = max(res.slowest, now.Sub(first))
		res.longestGap = max(res.longestGap, now.Sub(lastAck))
		lastAck = now
		res.acked[env.ID] = i
		if len(res.acked) == mark {
			close(reached)
		}
	}
	res.elapsed = time.Since(start)
	return res
}

// readAllClusterReplies reads every message the replies stream holds for subject. A
// cluster that has just lost a server may refuse JetStream API requests for a while after
// the tasks stream has a new leader (other streams, or the meta group, still electing), so
// a failed attempt is started again from scratch, until ctx ends. A reply that does not
// decode fails the test at once.
func readAllClusterReplies(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, subject string) []*envelope.Envelope {
	t.Helper()
	began := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for attempt := 1; ; attempt++ {
		out, err := readClusterRepliesOnce(ctx, js, stream, subject)
		if err == nil {
			if attempt > 1 {
				t.Logf("read the replies at attempt %d, %v after the first", attempt, took(began))
			}
			return out
		}
		if errors.Is(err, errClusterBadReply) {
			t.Fatal(err)
		}
		if attempt == 1 {
			t.Logf("reading the replies: %v; trying again", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("could not read the replies (attempt %d: %v): %v", attempt, err, ctx.Err())
		case <-tick.C:
		}
	}
}

var errClusterBadReply = errors.New("reply does not decode")

// readClusterRepliesOnce counts the stream's messages on subject, then reads that many with
// an ordered consumer, within 10s.
func readClusterRepliesOnce(ctx context.Context, js jetstream.JetStream, stream, subject string) ([]*envelope.Envelope, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, err
	}
	want := int(info.State.Subjects[subject])
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, err
	}
	out := make([]*envelope.Envelope, 0, want)
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, err
		}
		for m := range batch.Messages() {
			var env envelope.Envelope
			if err := envelope.Unmarshal(m.Data(), &env); err != nil {
				return nil, fmt.Errorf("%w: %v", errClusterBadReply, err)
			}
			out = append(out, &env)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("read %d of the %d replies stored: %w", len(out), want, ctx.Err())
		}
	}
	return out, nil
}
