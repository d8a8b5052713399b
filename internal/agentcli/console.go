package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/console"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/spf13/cobra"
)

func newConsoleCmd(stderr io.Writer) *cobra.Command {
	var (
		listen, natsURL, prefix, tokenFile, usersFile, auditFile string
		readOnly                                                 bool
		logs                                                     logFlags
		security                                                 natsflags.Flags
	)
	cmd := &cobra.Command{
		Use:   "console [--listen 127.0.0.1:8090] [--nats URL]",
		Short: "Serve the web console: agents, breakers, dead letters (replay, purge), tasks, live events",
		Long: `console serves a web console for operators on --listen: each agent's
consumer (pending, in flight, redelivered), throughput, breakers and replicas;
the dead-letter queue (filter, inspect, replay with a dry-run count first, a
rate and an optional other agent, purge with a typed confirmation); the
tasks' snapshots (checkpoint history, cancel); a live page of dead letters,
breaker transitions and replays; and the audit log of every action.

It joins the NATS server at --nats (an "agent run" on this machine listens on
` + bus.DefaultURL + `). Its NATS user needs the operator role of
docs/security.md.

Without --console-token-file or --console-users it has no authentication and
listens on loopback only: any other --listen address is refused. With a token,
log in from a browser with any user name and the token as password, or send
"Authorization: Bearer TOKEN". The users file has one "name:role:secret" per
line, role operator or viewer (sees everything, changes nothing), secret a
bcrypt hash (htpasswd -nbB) or the password. --read-only makes everyone a
viewer. See docs/console.md.`,
		Example: `  agent console
  agent console --listen 127.0.0.1:9000 --nats nats://127.0.0.1:4222
  agent console --listen 0.0.0.0:8090 --console-users /etc/jetagent/console-users --audit-file /var/log/jetagent-console.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := logs.logger(stderr)
			if err != nil {
				return err
			}
			var auth console.Auth
			auth.ReadOnly = readOnly
			if tokenFile != "" {
				if err := auth.LoadTokenFile(tokenFile); err != nil {
					return cliexit.UsageError(err)
				}
			}
			if usersFile != "" {
				if err := auth.LoadCredentialsFile(usersFile); err != nil {
					return cliexit.UsageError(err)
				}
			}
			topo := bus.Topology{Prefix: prefix}
			if err := topo.Validate(); err != nil {
				return cliexit.UsageError(fmt.Errorf("--prefix: %w", err))
			}
			cfg := console.Config{Topology: topo, Addr: listen, Auth: auth, AuditFile: auditFile, Logger: log}
			if err := cfg.Check(); err != nil {
				return cliexit.UsageError(err) // refused before connecting: no auth off loopback, a bad address
			}
			opts, err := security.Options()
			if errors.Is(err, natsflags.ErrConflict) {
				return cliexit.UsageError(err)
			}
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			conn, err := bus.Connect(cctx, natsURL, append(opts, natsflags.LogAsyncErrors(log))...)
			if err != nil {
				return fmt.Errorf("cannot reach NATS at %s (start an agent with 'agent run', or pass --nats): %w", bus.RedactURL(natsURL), err)
			}
			defer drain(conn)
			cfg.Conn = conn
			srv, err := console.New(cfg)
			if err != nil {
				return cliexit.UsageError(err)
			}
			if err := srv.Start(ctx); err != nil {
				return err
			}
			log.Info("console ready: open "+srv.URL(), "nats", bus.RedactURL(natsURL), "auth", auth.Enabled(), "read_only", readOnly)
			select {
			case <-ctx.Done():
			case <-srv.Done(): // serving failed: exit 1, for a supervisor to restart it
			}
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			serr := srv.Stop(sctx)
			if err := srv.Err(); err != nil {
				return cliexit.WithCode(cliexit.Failure, err)
			}
			return serr
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", envOr("JETAGENT_CONSOLE_LISTEN", console.DefaultAddr), "address (host:port) to serve the console on; off loopback it needs --console-token-file or --console-users [$JETAGENT_CONSOLE_LISTEN]")
	f.StringVar(&natsURL, "nats", envOr("JETAGENT_NATS_URL", bus.DefaultURL), "URL of the NATS server [$JETAGENT_NATS_URL]")
	f.StringVar(&prefix, "prefix", envOr("JETAGENT_PREFIX", bus.DefaultPrefix), "subject prefix and stream name stem of the agents [$JETAGENT_PREFIX]")
	f.StringVar(&tokenFile, "console-token-file", os.Getenv("JETAGENT_CONSOLE_TOKEN_FILE"), "file holding the console's access token (operator role) [$JETAGENT_CONSOLE_TOKEN_FILE]")
	f.StringVar(&usersFile, "console-users", os.Getenv("JETAGENT_CONSOLE_USERS"), "file of console users, one name:role:secret per line (role operator or viewer) [$JETAGENT_CONSOLE_USERS]")
	f.BoolVar(&readOnly, "read-only", false, "every user is a viewer: nothing can be changed")
	f.StringVar(&auditFile, "audit-file", os.Getenv("JETAGENT_CONSOLE_AUDIT_FILE"), "append every action to this file as JSON lines (the console also shows them) [$JETAGENT_CONSOLE_AUDIT_FILE]")
	logs.register(cmd)
	security.Register(f)
	return cmd
}
