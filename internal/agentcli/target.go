package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// target is where the operational commands (ls, status, task) look: a
// server named by --nats/-s, $JETAGENT_NATS_URL, $NATS_URL or --context;
// else the agent serving --data-dir (the URL it recorded in the lock
// file); else 127.0.0.1:4222.
type target struct {
	server  natsflags.Server
	nats    natsflags.Flags
	prefix  string
	dataDir string
	timeout time.Duration
}

func (t *target) register(f *pflag.FlagSet) {
	t.server.Register(f, "default: the agent serving --data-dir, else "+bus.DefaultURL)
	f.StringVar(&t.dataDir, "data-dir", "", "data directory of an 'agent run' on this machine: join the server it recorded [$JETAGENT_DATA_DIR]")
	f.StringVar(&t.prefix, "prefix", bus.DefaultPrefix, "subject `PREFIX` the agents use [$JETAGENT_PREFIX]")
	f.DurationVar(&t.timeout, "timeout", 30*time.Second, "give up after this long")
	t.nats.Register(f)
}

var targetGroups = []string{"nats", "context", "data-dir", "prefix", "timeout"}

// session is an open connection of an operational command.
type session struct {
	conn *bus.Conn
	topo bus.Topology
	url  string
}

// open connects; close ends the connection. A refused permission ends
// ctx at once (see natsflags.FailFast).
func (t *target) open(ctx context.Context, extra ...nats.Option) (*session, func(), error) {
	topo := bus.Topology{Prefix: envOr("JETAGENT_PREFIX", t.prefix)}
	if err := topo.Validate(); err != nil {
		return nil, nil, cliexit.UsageError(fmt.Errorf("--prefix: %w", err))
	}
	if t.timeout <= 0 {
		return nil, nil, cliexit.UsageError(fmt.Errorf("--timeout must be positive, got %v", t.timeout))
	}
	url, err := t.server.URL("")
	if err != nil {
		return nil, nil, cliexit.UsageError(err)
	}
	if url == "" {
		if url, err = t.dataDirURL(ctx); err != nil {
			return nil, nil, err
		}
	}
	t.server.Apply(&t.nats)
	opts, err := t.nats.Options()
	if errors.Is(err, natsflags.ErrConflict) {
		return nil, nil, cliexit.UsageError(err)
	}
	if err != nil {
		return nil, nil, err
	}
	conn, err := bus.Connect(ctx, url, append(opts, extra...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach NATS at %s (is 'agent run' running? or pass --nats): %w", bus.RedactURL(url), err)
	}
	if _, err := conn.JetStream().Stream(ctx, topo.TasksStream()); err != nil {
		jerr := natsflags.CheckJetStream(ctx, conn.JetStream())
		conn.Close()
		if jerr != nil {
			return nil, nil, jerr
		}
		return nil, nil, fmt.Errorf("no tasks stream %s on %s (wrong --prefix? has an agent run here?): %w", topo.TasksStream(), bus.RedactURL(url), err)
	}
	return &session{conn: conn, topo: topo, url: url}, func() { drain(conn) }, nil
}

// dataDirURL is the URL the agent serving --data-dir recorded; without
// --data-dir, 127.0.0.1:4222.
func (t *target) dataDirURL(ctx context.Context) (string, error) {
	dir := envOr("JETAGENT_DATA_DIR", t.dataDir)
	if dir == "" {
		return bus.DefaultURL, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("no jetagent data in %s (has 'agent run' ever run there?)", dir)
	} else if err != nil {
		return "", fmt.Errorf("cannot read the data directory %s: %w", dir, err)
	}
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
	var locked *bus.DataDirLockedError
	switch {
	case errors.As(err, &locked) && locked.Owner.URL != "":
		return locked.Owner.URL, nil
	case errors.As(err, &locked):
		return "", fmt.Errorf("%v: pass its server with --nats", locked)
	case err != nil:
		return "", err
	}
	_ = srv.Shutdown(context.Background())
	return "", fmt.Errorf("no agent is running on %s: its tasks wait there until one starts ('agent run --data-dir %s'; the DLQ: replay --data-dir %s stats)", dir, dir, dir)
}

// withSession runs fn with a session bounded by --timeout.
func (t *target) withSession(cmd *cobra.Command, fn func(ctx context.Context, s *session) error) error {
	ctx, denied, stop := natsflags.FailFast(cmd.Context())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	s, closeSession, err := t.open(ctx, denied)
	if err == nil {
		defer closeSession()
		err = fn(ctx, s)
	}
	if v := natsflags.Violation(ctx); v != nil && err != nil {
		return v
	}
	return err
}
