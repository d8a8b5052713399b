package agentcli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
	"github.com/spf13/cobra"
)

type runOptions struct {
	natsURL     string
	dataDir     string
	listen      string
	name        string
	prefix      string
	replicas    int
	concurrency int
	ackWait     time.Duration
	maxDeliver  int
	handler     string
	chaos       runtime.ChaosConfig
	timeout     time.Duration
	skew        time.Duration
	logs        logFlags
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run a built-in agent, on an embedded NATS server unless --nats is given",
		Long: `run starts a built-in agent: echo answers every task.request with its own
payload; chaos does the same but fails, slows down or crashes as often as
--fail-rate, --permanent-rate, --latency and --crash-rate say (for demos and
chaos tests). Without --nats it first starts an embedded NATS server with
JetStream (data under --data-dir, clients on --listen); with --nats it joins
that server instead. It provisions the streams it needs, then serves tasks
until interrupted (Ctrl-C or SIGTERM), finishing the tasks in hand first.`,
		Example: `  agent run
  agent run --name echo2 --concurrency 8
  agent run --nats nats://127.0.0.1:4222`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), stderr)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.natsURL, "nats", os.Getenv("JETAGENT_NATS_URL"), "URL of a NATS server to join (env JETAGENT_NATS_URL); empty starts an embedded server")
	f.StringVar(&o.dataDir, "data-dir", os.Getenv("JETAGENT_DATA_DIR"), "embedded server's JetStream directory (env JETAGENT_DATA_DIR; default $XDG_DATA_HOME/jetagent or ~/.local/share/jetagent)")
	f.StringVar(&o.listen, "listen", bus.DefaultListen, "embedded server's client address; port 0 picks a free one")
	f.StringVar(&o.name, "name", "echo", "agent name: tasks sent to this name reach this agent")
	f.StringVar(&o.prefix, "prefix", bus.DefaultPrefix, "subject prefix and stream name stem")
	f.IntVar(&o.replicas, "replicas", 1, "copies the cluster keeps of each stream and bucket it provisions (1, 3 or 5; must match streams that exist)")
	f.IntVar(&o.concurrency, "concurrency", runtime.DefaultConcurrency, "tasks handled at once")
	f.DurationVar(&o.ackWait, "ack-wait", bus.DefaultAckWait, "how long the server waits for a silent task before redelivering it (running tasks send heartbeats)")
	f.IntVar(&o.maxDeliver, "max-deliver", bus.DefaultMaxDeliver, "deliveries of a failing task before it is dead-lettered")
	f.DurationVar(&o.timeout, "handler-timeout", runtime.DefaultHandlerTimeout, "how long one task may run")
	f.DurationVar(&o.skew, "max-clock-skew", envelope.DefaultMaxClockSkew, "dead-letter envelopes whose timestamp is further than this from the server's receive time")
	f.StringVar(&o.handler, "handler", "echo", "built-in handler: echo (answers with the payload) or chaos (echo with the failures below)")
	f.Float64Var(&o.chaos.FailRate, "fail-rate", 0, "chaos: fraction of attempts that fail transiently")
	f.Float64Var(&o.chaos.PermanentRate, "permanent-rate", 0, "chaos: fraction of tasks that fail permanently")
	f.DurationVar(&o.chaos.Latency, "latency", 0, "chaos: random delay up to this much per attempt")
	f.Float64Var(&o.chaos.CrashRate, "crash-rate", 0, "chaos: fraction of attempts that make the process exit (code 3)")
	o.logs.register(cmd)
	return cmd
}

func (o *runOptions) run(ctx context.Context, stderr io.Writer) error {
	log, err := o.logs.logger(stderr)
	if err != nil {
		return err
	}
	if o.replicas < 1 || o.replicas > 5 {
		return usageError{fmt.Errorf("--replicas must be 1..5, got %d", o.replicas)}
	}
	if o.concurrency < 1 {
		return usageError{fmt.Errorf("--concurrency must be at least 1, got %d", o.concurrency)}
	}
	if o.ackWait < time.Second {
		return usageError{fmt.Errorf("--ack-wait must be at least 1s, got %v", o.ackWait)}
	}
	if o.maxDeliver < 1 {
		return usageError{fmt.Errorf("--max-deliver must be at least 1, got %d", o.maxDeliver)}
	}
	if o.timeout <= 0 || o.skew <= 0 {
		return usageError{fmt.Errorf("--handler-timeout and --max-clock-skew must be positive")}
	}
	var handler runtime.Handler
	switch o.handler {
	case "echo":
		handler = runtime.Echo
	case "chaos":
		for name, v := range map[string]float64{"--fail-rate": o.chaos.FailRate, "--permanent-rate": o.chaos.PermanentRate, "--crash-rate": o.chaos.CrashRate} {
			if v < 0 || v > 1 {
				return usageError{fmt.Errorf("%s must be between 0 and 1, got %v", name, v)}
			}
		}
		o.chaos.Crash = func() {
			fmt.Fprintln(stderr, "agent: chaos: crashing on purpose")
			os.Exit(3)
		}
		handler = runtime.Chaos(o.chaos)
	default:
		return usageError{fmt.Errorf("--handler %q: want echo or chaos", o.handler)}
	}
	topo := bus.Topology{Prefix: o.prefix, Replicas: o.replicas}
	if err := topo.Validate(); err != nil {
		return usageError{fmt.Errorf("--prefix: %w", err)}
	}
	if err := bus.ValidateName(o.name); err != nil {
		return usageError{fmt.Errorf("--name: %w", err)}
	}

	var conn *bus.Conn
	if o.natsURL == "" {
		srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: o.dataDir, Listen: o.listen})
		if errors.Is(err, bus.ErrDataDirLocked) {
			return fmt.Errorf("%w (another 'agent run' owns it: join that one with --nats %s, or pass another --data-dir)", err, bus.DefaultURL)
		}
		if err != nil {
			return err
		}
		defer shutdownServer(srv)
		conn, err = srv.Connect(ctx)
		if err != nil {
			return err
		}
		log.Info("embedded NATS server ready", "url", srv.ClientURL(), "data_dir", srv.DataDir())
	} else {
		conn, err = bus.Connect(ctx, o.natsURL)
		if err != nil {
			return fmt.Errorf("cannot reach NATS (check --nats): %w", err)
		}
		log.Info("connected to NATS", "url", o.natsURL)
	}
	defer drain(conn)

	if err := bus.Provision(ctx, conn.JetStream(), topo); err != nil {
		return err
	}
	rt, err := runtime.New(conn, runtime.Config{
		Agent:          o.name,
		Topology:       topo,
		Concurrency:    o.concurrency,
		Consumer:       bus.ConsumerConfig{AckWait: o.ackWait, MaxDeliver: o.maxDeliver},
		HandlerTimeout: o.timeout,
		Limits:         envelope.Limits{MaxClockSkew: o.skew},
		Logger:         log,
	})
	if err != nil {
		return err
	}
	rt.Handle(envelope.TaskRequest, handler)
	if err := rt.Start(ctx); err != nil {
		return err
	}
	log.Info("ready; try: agent send --to " + o.name + ` --payload '{"hello":"world"}'`)
	<-ctx.Done()
	log.Info("stopping: finishing tasks in hand (interrupt again to quit at once)")
	sctx, cancel := context.WithTimeout(context.Background(), runtime.DefaultShutdownTimeout)
	defer cancel()
	if err := rt.Stop(sctx); err != nil {
		return err
	}
	st := rt.Stats()
	log.Info("stopped", "succeeded", st.Succeeded, "retried", st.Retried, "dead_lettered", st.DeadLettered, "returned", st.Returned)
	return nil
}

func shutdownServer(srv *bus.EmbeddedServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

func drain(conn *bus.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Drain(ctx)
}
