package agentcli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/jetagent/jetagent/resilience"
	"github.com/jetagent/jetagent/runtime"
	"github.com/spf13/cobra"
)

type sendOptions struct {
	natsURL string
	to      string
	payload string
	typ     string
	from    string
	taskID  string
	prefix  string
	client  string
	timeout time.Duration
	nats    natsflags.Flags
}

func newSendCmd(stdout io.Writer) *cobra.Command {
	var o sendOptions
	cmd := &cobra.Command{
		Use:   "send --to AGENT [--payload JSON]",
		Short: "Send one task to an agent and print its reply envelope as JSON",
		Long: `send builds an envelope with the JSON payload (encoded as msgpack on the
wire), publishes it to the agent's tasks subject, waits for the reply whose
correlation id is the envelope's id, and prints the reply as JSON. The task
waits in the stream if no agent is running; send gives up after --timeout.

On a server that authenticates and authorizes users, pass the credentials
(--creds, --nkey, --token-file, --user with --password-file, or their
JETAGENT_NATS_* variables; secrets given as flags are visible in ps), and
--client and --inbox-prefix so that the user may be allowed to read only its
own replies (see docs/security.md). A permission the server refuses is
reported at once, naming the subject.`,
		Example: `  agent send --to echo --payload '{"hello":"world"}'
  agent send --to echo --payload '[1,2,3]' --timeout 30s
  JETAGENT_NATS_PASSWORD_FILE=/run/secrets/nats agent send --nats tls://nats.internal:4222 \
    --tls-ca ca.pem --user web --client web --inbox-prefix _INBOX_web --to echo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), stdout)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "name of the agent to send to (required)")
	f.StringVar(&o.payload, "payload", "null", "task payload as JSON")
	f.StringVar(&o.typ, "type", string(envelope.TaskRequest), "payload type")
	f.StringVar(&o.from, "from", "cli", "sender name on the envelope")
	f.StringVar(&o.taskID, "task-id", "", "task id on the envelope (default: the envelope id)")
	f.StringVar(&o.natsURL, "nats", envOr("JETAGENT_NATS_URL", bus.DefaultURL), "URL of the NATS server (env JETAGENT_NATS_URL)")
	f.StringVar(&o.prefix, "prefix", bus.DefaultPrefix, "subject prefix the agents use")
	f.StringVar(&o.client, "client", os.Getenv("JETAGENT_CLIENT"), "client name: replies come on <prefix>.replies.<name>.> (env JETAGENT_CLIENT; default a random name)")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the reply")
	o.nats.Register(f)
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (o *sendOptions) run(ctx context.Context, stdout io.Writer) error {
	if err := bus.ValidateName(o.to); err != nil {
		return usageError{fmt.Errorf("--to: %w", err)}
	}
	typ := envelope.PayloadType(o.typ)
	if !typ.Valid() {
		return usageError{fmt.Errorf("--type %q is not a valid payload type (e.g. task.request)", o.typ)}
	}
	if o.timeout <= 0 {
		return usageError{fmt.Errorf("--timeout must be positive, got %v", o.timeout)}
	}
	payload, err := envelope.PayloadFromJSON([]byte(o.payload))
	if err != nil {
		return usageError{fmt.Errorf("--payload is not valid JSON: %w", err)}
	}
	topo := bus.Topology{Prefix: o.prefix}
	if err := topo.Validate(); err != nil {
		return usageError{fmt.Errorf("--prefix: %w", err)}
	}
	if o.client != "" {
		if err := bus.ValidateName(o.client); err != nil {
			return usageError{fmt.Errorf("--client: %w", err)}
		}
	}
	natsOpts, err := o.nats.Options()
	if errors.Is(err, natsflags.ErrConflict) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	// A refused permission ends ctx at once (the server drops what it
	// refuses, and the request would only time out).
	ctx, denied, stop := natsflags.FailFast(ctx)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	conn, err := bus.Connect(ctx, o.natsURL, append(natsOpts, denied)...)
	if err != nil {
		return fmt.Errorf("cannot reach NATS at %s (is 'agent run' running? or pass --nats): %w", bus.RedactURL(o.natsURL), err)
	}
	defer drain(conn)
	// One attempt as long as --timeout: the task waits in the stream, so a
	// re-send would only be dropped as a duplicate.
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Name: o.client, Topology: topo, Retry: &runtime.RetryConfig{AttemptTimeout: o.timeout}})
	if err != nil {
		return err
	}
	defer client.Close()

	env, err := envelope.New(o.from, o.to, typ, nil)
	if err != nil {
		return err
	}
	env.Payload = payload
	env.TaskID = o.taskID
	if env.TaskID == "" {
		env.TaskID = env.ID
	}
	reply, err := client.Send(ctx, env)
	if v := natsflags.Violation(ctx); v != nil && err != nil {
		return v
	}
	if errors.Is(err, resilience.ErrTimeout) {
		return fmt.Errorf("no reply from agent %q within %v: it may not be running (the task waits in the stream until it is), be slower than that, or have dead-lettered the task (see: replay list --agent %s)", o.to, o.timeout, o.to)
	}
	if err != nil {
		return err
	}
	out, err := reply.MarshalJSON()
	if err != nil {
		return fmt.Errorf("render reply: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "  "); err != nil {
		return fmt.Errorf("render reply: %w", err)
	}
	buf.WriteByte('\n')
	_, err = stdout.Write(buf.Bytes())
	return err
}
