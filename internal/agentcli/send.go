package agentcli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/dlq"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/internal/cliexit"
	"github.com/jetagent/jetagent/internal/didyoumean"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
)

type sendOptions struct {
	server      natsflags.Server
	to          string
	payload     string
	payloadFile string
	typ         string
	from        string
	taskID      string
	prefix      string
	client      string
	timeout     time.Duration
	noWait      bool
	deadline    string
	idemKey     string
	extensions  map[string]string
	nats        natsflags.Flags
}

func newSendCmd(stdout, stderr io.Writer) *cobra.Command {
	var o sendOptions
	cmd := &cobra.Command{
		Use:   "send --to AGENT [--payload JSON | --payload-file FILE]",
		Short: "Send one task to an agent and print its reply envelope as JSON",
		Long: `send builds an envelope with the JSON payload (encoded as msgpack on the
wire; from --payload, or from a file or stdin with --payload-file), publishes
it to the agent's tasks subject, waits for the reply whose correlation id is
the envelope's id, and prints the reply as JSON. The task waits in the stream
if no agent is running; send gives up waiting after --timeout (the task stays
and still runs), or at once when the agent dead-letters it, with the reason.
With --no-wait it prints where the task was stored and does not wait.

An interrupt (Ctrl-C, SIGTERM) while waiting exits with status 130, saying
that the task was published and will still run.

Integers in the payload must fit in 64 bits (larger ones would silently become
floating-point numbers: send them as strings). The encoded envelope must fit
in 1 MiB and in the server's max_payload.

On a server that authenticates and authorizes users, pass the credentials
(--creds, --nkey, --token-file, --user with --password-file, or their
JETAGENT_NATS_* variables, or a nats CLI --context; secrets given as flags are
visible in ps), and --client and --inbox-prefix so that the user may be
allowed to read only its own replies (see docs/security.md). A permission the
server refuses is reported at once, naming the subject.

Exit status: 0 with the reply; 1 when the task failed, was dead-lettered or
got no reply in time; 2 on a usage error; 130 when interrupted.`,
		Example: `  agent send --to echo --payload '{"hello":"world"}'
  agent send --to echo --payload-file big.json --timeout 30s
  jq -c . order.json | agent send --to billing --payload-file - --idempotency-key order-42
  agent send --to report --task-id q3 --no-wait
  agent send -s nats://127.0.0.1:4222 --to echo --deadline 5m --header tenant=acme
  JETAGENT_NATS_PASSWORD_FILE=/run/secrets/nats agent send --nats tls://nats.internal:4222 \
    --tls-ca ca.pem --user web --client web --inbox-prefix _INBOX_web --to echo`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), cmd.InOrStdin(), stdout, stderr, cmd.Flags().Changed("payload"))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "`NAME` of the agent to send to (required)")
	f.StringVar(&o.payload, "payload", "null", "task payload as `JSON`")
	f.StringVar(&o.payloadFile, "payload-file", "", "read the JSON payload from `FILE` (- for stdin) instead of --payload")
	f.StringVar(&o.typ, "type", string(envelope.TaskRequest), "payload `TYPE`: task.request, task.cancel, state.query, ... (agent task cancel sends task.cancel for you)")
	f.StringVar(&o.from, "from", "cli", "sender `NAME` on the envelope")
	f.StringVar(&o.taskID, "task-id", "", "task `ID` on the envelope (default: the envelope id)")
	f.StringVar(&o.deadline, "deadline", "", "the task's deadline: a duration from now (`5m`) or an RFC 3339 time; past it, the agent dead-letters the task (expired)")
	f.StringVar(&o.idemKey, "idempotency-key", "", "idempotency `KEY` on the envelope")
	f.StringToStringVar(&o.extensions, "header", nil, "envelope extension `NAME=VALUE` (repeatable, or comma-separated): string headers carried in the envelope")
	f.BoolVar(&o.noWait, "no-wait", false, "publish, print where the task was stored as JSON, and do not wait for the reply")
	o.server.Register(f, "default "+bus.DefaultURL)
	f.StringVar(&o.prefix, "prefix", bus.DefaultPrefix, "subject `PREFIX` the agents use [$JETAGENT_PREFIX]")
	f.StringVar(&o.client, "client", os.Getenv("JETAGENT_CLIENT"), "client `NAME`: replies come on <prefix>.replies.<name>.<envelope id> (default a random name) [$JETAGENT_CLIENT]")
	f.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the reply")
	o.nats.Register(f)
	_ = cmd.MarkFlagRequired("to")
	_ = cmd.RegisterFlagCompletionFunc("type", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"task.request", "task.cancel", "state.query", "state.restore", "message.send"}, cobra.ShellCompDirectiveNoFileComp
	})
	groupFlags(cmd, sendGroups)
	return cmd
}

// sendGroups orders send's help.
var sendGroups = []flagGroup{
	{"Task", []string{"to", "payload", "payload-file", "type", "task-id", "deadline", "idempotency-key", "header", "from"}},
	{"Waiting", []string{"timeout", "no-wait", "client"}},
	{"Connection", append([]string{"nats", "context", "prefix"}, natsflags.FlagNames()...)},
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// errDeadLettered ends a send whose task the agent dead-lettered.
type errDeadLettered struct {
	agent, taskID string
	rec           *dlq.Record
}

func (e *errDeadLettered) Error() string {
	return fmt.Sprintf("agent %s dead-lettered task %s (reason %s): %s; see: replay list --agent %s --reason %s",
		e.agent, e.taskID, e.rec.Reason, e.rec.Error, e.agent, e.rec.Reason)
}

// buildEnvelope checks the flags and builds the envelope to send.
func (o *sendOptions) buildEnvelope(stdin io.Reader, payloadGiven bool) (*envelope.Envelope, bus.Topology, error) {
	topo := bus.Topology{Prefix: envOr("JETAGENT_PREFIX", o.prefix)}
	if err := bus.ValidateName(o.to); err != nil {
		return nil, topo, cliexit.UsageError(fmt.Errorf("--to: %w", err))
	}
	typ := envelope.PayloadType(o.typ)
	if !typ.Valid() {
		return nil, topo, cliexit.UsageError(fmt.Errorf("--type %q is not a valid payload type (e.g. task.request)", o.typ))
	}
	if o.timeout <= 0 {
		return nil, topo, cliexit.UsageError(fmt.Errorf("--timeout must be positive, got %v", o.timeout))
	}
	if err := topo.Validate(); err != nil {
		return nil, topo, cliexit.UsageError(fmt.Errorf("--prefix: %w", err))
	}
	if o.client != "" {
		if err := bus.ValidateName(o.client); err != nil {
			return nil, topo, cliexit.UsageError(fmt.Errorf("--client: %w", err))
		}
	}
	raw := []byte(o.payload)
	what := "--payload"
	if o.payloadFile != "" {
		if payloadGiven {
			return nil, topo, cliexit.UsageError(errors.New("--payload and --payload-file are both given: give the payload one way"))
		}
		var err error
		what = "--payload-file " + o.payloadFile
		if o.payloadFile == "-" {
			raw, err = io.ReadAll(io.LimitReader(stdin, envelope.DefaultMaxSize+1))
		} else {
			raw, err = readLimited(o.payloadFile, envelope.DefaultMaxSize+1)
		}
		if err != nil {
			return nil, topo, fmt.Errorf("%s: %w", what, err)
		}
		if len(raw) > envelope.DefaultMaxSize {
			return nil, topo, cliexit.UsageError(fmt.Errorf("%s: more than 1 MiB, the envelope limit", what))
		}
	}
	payload, err := envelope.PayloadFromJSON(bytes.TrimSpace(raw))
	if err != nil {
		return nil, topo, cliexit.UsageError(fmt.Errorf("%s is not a valid payload: %w", what, err))
	}
	env, err := envelope.New(o.from, o.to, typ, nil)
	if err != nil {
		return nil, topo, cliexit.UsageError(err)
	}
	env.Payload = payload
	env.TaskID = o.taskID
	if env.TaskID == "" {
		env.TaskID = env.ID
	}
	env.IdempotencyKey = o.idemKey
	if len(o.extensions) > 0 {
		env.Extensions = o.extensions
	}
	if o.deadline != "" {
		dl, err := parseDeadline(o.deadline, time.Now())
		if err != nil {
			return nil, topo, cliexit.UsageError(fmt.Errorf("--deadline: %w", err))
		}
		env.Deadline = dl
	}
	if err := env.Validate(envelope.Limits{}); err != nil {
		return nil, topo, cliexit.UsageError(err)
	}
	if n, err := envelope.Marshal(env); err == nil && len(n) > envelope.DefaultMaxSize {
		return nil, topo, cliexit.UsageError(fmt.Errorf("the envelope is %d bytes, above the 1 MiB limit agents accept", len(n)))
	}
	return env, topo, nil
}

func readLimited(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// parseDeadline reads a duration from now or an RFC 3339 time in the future.
func parseDeadline(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("%q: want a positive duration", s)
		}
		return now.Add(d).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (5m) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("%s is in the past", s)
	}
	return t.UTC(), nil
}

func (o *sendOptions) run(parent context.Context, stdin io.Reader, stdout, stderr io.Writer, payloadGiven bool) error {
	env, topo, err := o.buildEnvelope(stdin, payloadGiven)
	if err != nil {
		return err
	}
	url, err := o.server.URL(bus.DefaultURL)
	if err != nil {
		return cliexit.UsageError(err)
	}
	o.server.Apply(&o.nats)
	natsOpts, err := o.nats.Options()
	if errors.Is(err, natsflags.ErrConflict) {
		return cliexit.UsageError(err)
	}
	if err != nil {
		return err
	}
	// A refused permission ends ctx at once (the server drops what it
	// refuses, and the request would only time out); the look-ups made
	// only to say more are optional.
	// The look-up of the agent's consumer ends as soon as it is refused.
	lookup, endLookup := context.WithCancel(parent)
	defer endLookup()
	ctx, denied, stop := natsflags.FailFast(parent,
		natsflags.Optional{Subject: "$JS.API.>", Refused: func(*natsflags.PermissionError) { endLookup() }},
		natsflags.Optional{Subject: topo.AgentDLQ(o.to)})
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	conn, err := bus.Connect(ctx, url, append(natsOpts, denied)...)
	if err != nil {
		if parent.Err() != nil {
			return cliexit.WithCode(cliexit.Interrupted, errors.New("interrupted before the task was sent"))
		}
		return fmt.Errorf("cannot reach NATS at %s (is 'agent run' running? or pass --nats): %w", bus.RedactURL(url), err)
	}
	defer drain(conn)
	js := conn.JetStream()
	lookupCtx, cancelLookup := context.WithTimeout(lookup, 5*time.Second)
	defer cancelLookup()
	unknown := warnUnknownAgent(lookupCtx, js, topo, o.to, stderr)
	willRun := "will still run"
	if unknown {
		willRun = "waits in the stream until an agent named " + o.to + " starts"
	}

	client := o.client
	if client == "" {
		client = "cli-" + strings.ToLower(env.ID)
	}
	env.ReplyTo = topo.ReplySubject(client) + "." + env.ID
	// The client's reply subjects, as runtime.Client subscribes (and as
	// docs/security.md grants a client): replies to this envelope only are
	// taken.
	replies := make(chan *nats.Msg, 16)
	sub, err := conn.NATS().ChanSubscribe(topo.ReplySubject(client)+".>", replies)
	if err != nil {
		return fmt.Errorf("subscribe to the reply subjects %s.>: %w", topo.ReplySubject(client), err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Dead letters of this agent: a task refused at once fails fast.
	// Optional: a least-privilege client may not read them.
	letters := make(chan *nats.Msg, 16)
	if dsub, err := conn.NATS().ChanSubscribe(topo.AgentDLQ(o.to), letters); err == nil {
		defer func() { _ = dsub.Unsubscribe() }()
	}
	if err := conn.NATS().FlushWithContext(ctx); err != nil && natsflags.Violation(ctx) == nil {
		return fmt.Errorf("cannot reach NATS at %s: %w", bus.RedactURL(url), err)
	}

	subject := topo.TaskSubject(o.to, env.PayloadType)
	ack, err := bus.NewPublisher(js).PublishEnvelope(ctx, subject, env)
	if err != nil {
		if v := natsflags.Violation(ctx); v != nil {
			return v
		}
		if parent.Err() != nil {
			if seq := storedTask(js, topo, subject, env); seq > 0 {
				return cliexit.WithCode(cliexit.Interrupted, fmt.Errorf("interrupted: task %s (envelope %s) was published to %s (stream %s, sequence %d) and %s (see: agent task show %s --agent %s)",
					env.TaskID, env.ID, subject, topo.TasksStream(), seq, willRun, env.TaskID, o.to))
			}
			return cliexit.WithCode(cliexit.Interrupted, fmt.Errorf("interrupted while publishing task %s: it may or may not have been stored (agent task show %s --agent %s)", env.TaskID, env.TaskID, o.to))
		}
		return publishFailure(ctx, js, subject, err)
	}
	published := fmt.Sprintf("task %s (envelope %s) was published to %s (stream %s, sequence %d)", env.TaskID, env.ID, subject, ack.Stream, ack.Sequence)
	if ack.Duplicate {
		published = fmt.Sprintf("task %s (envelope %s) was already stored: the server dropped this copy as a duplicate", env.TaskID, env.ID)
	}
	if o.noWait {
		return writeJSON(stdout, map[string]any{"id": env.ID, "task_id": env.TaskID, "subject": subject, "reply_to": env.ReplyTo,
			"stream": ack.Stream, "sequence": ack.Sequence, "duplicate": ack.Duplicate})
	}

	for {
		select {
		case m := <-replies:
			var reply envelope.Envelope
			if m.Subject != env.ReplyTo || envelope.Unmarshal(m.Data, &reply) != nil || reply.CorrelationID != env.ID {
				continue // not this task's answer: never returned as one
			}
			return printEnvelope(stdout, &reply)
		case m := <-letters:
			rec, err := dlq.Parse(m.Data, m.Header)
			if err != nil {
				continue
			}
			var dead envelope.Envelope
			if envelope.Unmarshal(rec.Data, &dead) != nil || dead.ID != env.ID {
				continue
			}
			return &errDeadLettered{agent: o.to, taskID: env.TaskID, rec: rec}
		case <-ctx.Done():
			if v := natsflags.Violation(ctx); v != nil {
				return v
			}
			if parent.Err() != nil {
				return cliexit.WithCode(cliexit.Interrupted, fmt.Errorf("interrupted: %s and %s; its reply will be kept on %s (see: agent task show %s --agent %s)",
					published, willRun, env.ReplyTo, env.TaskID, o.to))
			}
			// A reply published while the connection was down reached no
			// subscriber; the replies stream keeps it.
			if reply := storedReply(js, topo, env); reply != nil {
				return printEnvelope(stdout, reply)
			}
			return fmt.Errorf("no reply from agent %q within %v: %s; the agent may not be running (the task waits in the stream until it is) or be slower than that (see: agent ls, agent task show %s --agent %s)",
				o.to, o.timeout, published, env.TaskID, o.to)
		}
	}
}

// storedTask returns the stream sequence of env when it is the last task
// stored on subject (0 when it is not there: never stored, or taken
// already, or the user may not look).
func storedTask(js jetstream.JetStream, topo bus.Topology, subject string, env *envelope.Envelope) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, topo.TasksStream())
	if err != nil {
		return 0
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil || m.Header.Get(bus.HeaderMsgID) != env.ID {
		return 0
	}
	return m.Sequence
}

// storedReply looks the reply up in the replies stream (nil when it is
// not there, or the user may not read it).
func storedReply(js jetstream.JetStream, topo bus.Topology, env *envelope.Envelope) *envelope.Envelope {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, topo.RepliesStream())
	if err != nil {
		return nil
	}
	m, err := st.GetLastMsgForSubject(ctx, env.ReplyTo)
	if err != nil {
		return nil
	}
	var reply envelope.Envelope
	if envelope.Unmarshal(m.Data, &reply) != nil || reply.CorrelationID != env.ID {
		return nil
	}
	return &reply
}

// publishFailure explains a failed publish: nobody answering means no
// JetStream, or no stream for the subject.
func publishFailure(ctx context.Context, js jetstream.JetStream, subject string, err error) error {
	if !natsflags.NoResponders(err) {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	if jerr := natsflags.CheckJetStream(ctx, js); jerr != nil {
		return jerr
	}
	return fmt.Errorf("no stream stores %s on this server: has an agent run here (it provisions the streams), and is --prefix the agents'? (%w)", subject, err)
}

// warnUnknownAgent warns, and reports, when no agent of that name has a
// consumer on this server: its task would wait for ever, unseen. Look-ups
// the user may not make are skipped (false).
func warnUnknownAgent(ctx context.Context, js jetstream.JetStream, topo bus.Topology, agent string, stderr io.Writer) bool {
	_, err := js.Consumer(ctx, topo.TasksStream(), agent)
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false
	}
	known := agentNames(ctx, js, topo)
	hint := "none yet"
	if len(known) > 0 {
		hint = strings.Join(known, ", ")
		if near := didyoumean.Closest(agent, known); near != "" {
			hint += fmt.Sprintf("; did you mean %q?", near)
		}
	}
	fmt.Fprintf(stderr, "agent: warning: no agent named %s has consumed here (known: %s); the task waits in the stream until one named %s starts\n", agent, hint, agent)
	return true
}

// agentNames lists the agents with a consumer on the tasks stream.
func agentNames(ctx context.Context, js jetstream.JetStream, topo bus.Topology) []string {
	st, err := js.Stream(ctx, topo.TasksStream())
	if err != nil {
		return nil
	}
	var known []string
	names := st.ConsumerNames(ctx)
	for n := range names.Name() {
		known = append(known, n)
	}
	sort.Strings(known)
	return known
}

func printEnvelope(w io.Writer, env *envelope.Envelope) error {
	out, err := env.MarshalJSON()
	if err != nil {
		return fmt.Errorf("render reply: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, out, "", "  "); err != nil {
		return fmt.Errorf("render reply: %w", err)
	}
	buf.WriteByte('\n')
	_, err = w.Write(buf.Bytes())
	return err
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
