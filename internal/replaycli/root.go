package replaycli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/didyoumean"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/jetagent/jetagent/internal/version"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
)

// IO is where the commands read and write; tests replace it.
type IO struct {
	In            io.Reader
	Out, Err      io.Writer
	InIsTerminal  bool // confirmations may be asked
	ErrIsTerminal bool // a progress bar may be drawn
}

// Main runs the replay command line with args and returns the exit code
// (internal/cliexit; the root command's help lists them). Errors are
// printed as one line "replay: <error>" on stderr, and usage errors
// followed by a hint to --help.
func Main(ctx context.Context, args []string, stdio IO) int {
	root := newRoot(stdio)
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	return cliexit.Report(stdio.Err, cmd, err)
}

// globals are the flags every command shares.
type globals struct {
	server  natsflags.Server
	dataDir string
	prefix  string
	timeout time.Duration
	nats    natsflags.Flags
}

func newRoot(stdio IO) *cobra.Command {
	var g globals
	root := &cobra.Command{
		Use:   "replay",
		Short: "Inspect, replay and purge jetagent's dead-letter queue",
		Long: `replay operates on jetagent's dead-letter queue (DLQ): every task an agent
could not process, kept with its original bytes and headers and where and why
it failed.

It works on a running server (--nats or -s URL, JETAGENT_NATS_URL, NATS_URL, or
a nats CLI --context), or, without
one, on the data directory of the embedded server of "agent run" (--data-dir;
if an agent is running on it, replay joins the server that agent recorded in
the directory's lock file, and refuses when it accepts no network clients).

Entries are identified by their sequence number in the DLQ stream (the ID
column of "replay list").

On a server that authenticates and authorizes users, pass the credentials
(--creds, --nkey, --token-file, --user with --password-file, or their
JETAGENT_NATS_* variables; secrets given as flags are visible in ps), TLS
settings (--tls-ca, --tls-cert, --tls-key, --tls-server-name) and
--inbox-prefix; docs/security.md lists the permissions replay needs. A
permission the server refuses is reported at once, naming the subject.

Exit codes:
  0    done
  1    failed (server unreachable, entry not found, ...)
  2    wrong flags or arguments
  3    aborted: confirmation declined, or needed and stdin is not a terminal (use --yes)
  4    some entries could not be replayed
  130  interrupted (Ctrl-C or SIGTERM) before it finished`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				var names []string
				for _, c := range cmd.Commands() {
					names = append(names, c.Name())
				}
				if near := didyoumean.Closest(args[0], names); near != "" {
					return cliexit.Usagef("unknown command %q (did you mean %q?)", args[0], near)
				}
				return cliexit.Usagef("unknown command %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.Err)
	pf := root.PersistentFlags()
	g.server.Register(pf, "none given: --data-dir")
	pf.StringVar(&g.dataDir, "data-dir", os.Getenv("JETAGENT_DATA_DIR"), "data directory of the embedded server (default $XDG_DATA_HOME/jetagent or ~/.local/share/jetagent) [$JETAGENT_DATA_DIR]")
	pf.StringVar(&g.prefix, "prefix", envOr("JETAGENT_PREFIX", bus.DefaultPrefix), "subject prefix and stream name stem of the agents [$JETAGENT_PREFIX]")
	pf.DurationVar(&g.timeout, "timeout", 5*time.Minute, "give up after this long")
	g.nats.Register(pf)
	root.AddCommand(newListCmd(&g, stdio), newShowCmd(&g, stdio), newReplayCmd(&g, stdio),
		newPurgeCmd(&g, stdio), newStatsCmd(&g, stdio))
	version.SetOn(root)
	// cliexit adds cobra's "completion" (bash, zsh, fish, powershell).
	cliexit.MarkUsageErrors(root)
	return root
}

// session is an open connection to the DLQ.
type session struct {
	store *dlq.Store
	topo  bus.Topology
	close func()
}

// open connects as the globals say: --nats, else the data directory's
// embedded server (in process), else the agent running on it. The
// security settings (and extra, e.g. an error handler) apply to network
// connections; the in-process server has no authentication.
func (g *globals) open(ctx context.Context, extra ...nats.Option) (*session, error) {
	topo := bus.Topology{Prefix: g.prefix}
	if err := topo.Validate(); err != nil {
		return nil, cliexit.Usagef("--prefix: %v", err)
	}
	natsURL, err := g.server.URL("")
	if err != nil {
		return nil, cliexit.UsageError(err)
	}
	g.server.Apply(&g.nats)
	natsOpts, err := g.nats.Options()
	if errors.Is(err, natsflags.ErrConflict) {
		return nil, cliexit.UsageError(err)
	}
	if err != nil {
		return nil, err
	}
	natsOpts = append(natsOpts, extra...)
	var conn *bus.Conn
	var stop func()
	switch {
	case natsURL != "":
		c, err := bus.Connect(ctx, natsURL, natsOpts...)
		if err != nil {
			return nil, fmt.Errorf("cannot reach NATS at %s: %w", bus.RedactURL(natsURL), err)
		}
		conn, stop = c, func() {}
	default:
		dir := g.dataDir
		if dir == "" {
			d, err := bus.DefaultDataDir()
			if err != nil {
				return nil, err
			}
			dir = d
		}
		if err := checkDataDir(dir); err != nil {
			return nil, err
		}
		srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, DontListen: true})
		var locked *bus.DataDirLockedError
		switch {
		case errors.As(err, &locked):
			// An agent serves this directory: join its server, the one it
			// recorded, or refuse: never another one.
			url := locked.Owner.URL
			if url == "" {
				return nil, fmt.Errorf("%v: join its server with --nats URL, or stop it", locked)
			}
			c, cerr := bus.Connect(ctx, url, natsOpts...)
			if cerr != nil {
				return nil, fmt.Errorf("%s is in use by a running agent (pid %d), but its server at %s cannot be reached (pass --nats): %w", dir, locked.Owner.PID, url, cerr)
			}
			conn, stop = c, func() {}
		case err != nil:
			return nil, err
		default:
			c, err := srv.Connect(ctx)
			if err != nil {
				_ = srv.Shutdown(context.Background())
				return nil, err
			}
			conn = c
			stop = func() { _ = srv.Shutdown(context.Background()) }
		}
	}
	if _, err := conn.JetStream().Stream(ctx, topo.DLQStream()); err != nil {
		jerr := natsflags.CheckJetStream(ctx, conn.JetStream())
		conn.Close()
		stop()
		if jerr != nil {
			return nil, jerr
		}
		return nil, fmt.Errorf("no DLQ stream %s on this server (wrong --prefix? has an agent run here?): %w", topo.DLQStream(), err)
	}
	return &session{store: dlq.NewStore(conn.JetStream(), topo), topo: topo, close: func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Drain(dctx)
		stop()
	}}, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// checkDataDir reports a data directory that holds no jetagent data, or
// that cannot be read (naming the real cause).
func checkDataDir(dir string) error {
	_, err := os.Stat(filepath.Join(dir, "jetstream"))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if st, serr := os.Stat(dir); serr == nil && !st.IsDir() {
			return fmt.Errorf("--data-dir %s is not a directory", dir)
		}
		return fmt.Errorf("no jetagent data in %s (has 'agent run' ever run there? or pass --nats URL)", dir)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("--data-dir %s is not a directory", dir)
	default:
		return fmt.Errorf("cannot read the data directory %s: %w", dir, err)
	}
}

// run opens a session bounded by --timeout and runs fn in it. A permission
// the server refuses ends it at once, with an error naming the subject.
func (g *globals) run(cmd *cobra.Command, fn func(ctx context.Context, s *session) error) error {
	ctx, denied, stop := natsflags.FailFast(cmd.Context())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	s, err := g.open(ctx, denied)
	if err == nil {
		defer s.close()
		err = fn(ctx, s)
	}
	if v := natsflags.Violation(ctx); v != nil && err != nil {
		return v
	}
	return err
}

// NewCommand returns the replay command tree, for tools that check command
// lines against it (the docs' examples are). Main is how to run it.
func NewCommand(stdio IO) *cobra.Command { return newRoot(stdio) }
