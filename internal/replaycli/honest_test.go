package replaycli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/cliexit"
	natsserver "github.com/nats-io/nats-server/v2/server"
)

// Tests of what replay says and refuses when something is off.

// TestDataDirInUseJoinsTheOwnersServer: an agent's embedded server owns
// the data directory and listens on a port of its own; replay --data-dir
// must work on that server, never on another one (127.0.0.1:4222).
func TestDataDirInUseJoinsTheOwnersServer(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	conn, err := srv.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		t.Fatal(err)
	}
	fill(t, conn, "owner", 1, 7, dlq.ReasonPermanent)

	r := run(t, "", false, "list", "--data-dir", dir, "--json", "--timeout", "10s")
	var got []summary
	if err := json.Unmarshal([]byte(r.out), &got); r.code != cliexit.OK || err != nil || len(got) != 1 || got[0].Agent != "owner" {
		t.Fatalf("list --data-dir of a running agent: %+v; want the owner's one entry", r)
	}
}

func TestUnreadableDataDirIsNotCalledEmpty(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := run(t, "", false, "list", "--data-dir", file)
	if r.code != cliexit.Failure || strings.Contains(r.stderr, "no jetagent data") || !strings.Contains(r.stderr, "not a directory") {
		t.Errorf("--data-dir FILE: %+v; want the real cause", r)
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: the permission case cannot be produced")
		return
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "jetstream"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	r = run(t, "", false, "list", "--data-dir", dir)
	if r.code != cliexit.Failure || strings.Contains(r.stderr, "no jetagent data") || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("unreadable --data-dir: %+v; want the real cause", r)
	}
}

func TestReplayRefusesInternalDestinations(t *testing.T) {
	for _, to := range []string{"jetagent.dlq.echo.task.request", "$KV.JETAGENT_SNAPSHOTS.echo.x", "$JS.API.STREAM.LIST",
		"_INBOX.abc", "jetagent.replies.cli.x", "$SYS.REQ.SERVER.PING"} {
		r := run(t, "", false, "replay", "--to", to, "--nats", "nats://127.0.0.1:1")
		if r.code != cliexit.Usage || !strings.Contains(r.stderr, "--to") {
			t.Errorf("--to %s: %+v; want a usage error", to, r)
		}
	}
}

func TestNonsenseNumbersAndWindowsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"replay", "--rate", "NaN"},
		{"replay", "--rate", "+Inf"},
		{"list", "--since", "1h", "--until", "2h"},
		{"list", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"},
	} {
		r := run(t, "", false, append(args, "--nats", "nats://127.0.0.1:1")...)
		if r.code != cliexit.Usage {
			t.Errorf("%v: %+v; want a usage error", args, r)
		}
	}
}

func TestMessagesCountInEnglish(t *testing.T) {
	url, conn := server(t)
	fill(t, conn, "echo", 1, 1, dlq.ReasonPermanent)
	r := run(t, "", false, "replay", "--nats", url, "--yes", "--quiet")
	if r.code != cliexit.OK || !strings.HasPrefix(r.out, "replayed 1,") {
		t.Fatalf("replay: %+v", r)
	}
	r = run(t, "", false, "replay", "--nats", url, "--yes", "--quiet", "--force")
	if r.code != cliexit.OK || strings.Contains(r.out, "use --force") {
		t.Errorf("replay --force: %+v; the hint to use --force makes no sense with it", r)
	}
	r = run(t, "", false, "purge", "--nats", url, "--yes")
	if r.code != cliexit.OK || r.out != "purged 1 entry\n" {
		t.Errorf("purge: %+v; want \"purged 1 entry\"", r)
	}
}

func TestTyposGetSuggestions(t *testing.T) {
	r := run(t, "", false, "lst", "--nats", "nats://127.0.0.1:1")
	if r.code != cliexit.Usage || !strings.Contains(r.stderr, `did you mean "list"`) {
		t.Errorf("replay lst: %+v", r)
	}
	r = run(t, "", false, "list", "--reason", "permanant", "--nats", "nats://127.0.0.1:1")
	if r.code != cliexit.Usage || !strings.Contains(r.stderr, `did you mean "permanent"`) {
		t.Errorf("--reason permanant: %+v", r)
	}
}

func TestAServerWithoutJetStreamIsNamed(t *testing.T) {
	srv, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: natsserver.RANDOM_PORT, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	r := run(t, "", false, "stats", "--nats", srv.ClientURL())
	if r.code != cliexit.Failure || !strings.Contains(r.stderr, "JetStream is not enabled") {
		t.Fatalf("%+v", r)
	}
}
