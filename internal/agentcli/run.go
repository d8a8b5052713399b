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
	concurrency int
	ackWait     time.Duration
	maxDeliver  int
	logs        logFlags
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the built-in echo agent, on an embedded NATS server unless --nats is given",
		Long: `run starts the built-in echo agent, which answers every task.request with
its own payload. Without --nats it first starts an embedded NATS server with
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
	f.IntVar(&o.concurrency, "concurrency", runtime.DefaultConcurrency, "tasks handled at once")
	f.DurationVar(&o.ackWait, "ack-wait", bus.DefaultAckWait, "how long the server waits for a task to be settled before redelivering it (also bounds a handler: 80%)")
	f.IntVar(&o.maxDeliver, "max-deliver", bus.DefaultMaxDeliver, "deliveries of a failing task before it is dead-lettered")
	o.logs.register(cmd)
	return cmd
}

func (o *runOptions) run(ctx context.Context, stderr io.Writer) error {
	log, err := o.logs.logger(stderr)
	if err != nil {
		return err
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
	topo := bus.Topology{Prefix: o.prefix}
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
		Agent:       o.name,
		Topology:    topo,
		Concurrency: o.concurrency,
		Consumer:    bus.ConsumerConfig{AckWait: o.ackWait, MaxDeliver: o.maxDeliver},
		Logger:      log,
	})
	if err != nil {
		return err
	}
	rt.Handle(envelope.TaskRequest, runtime.Echo)
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
