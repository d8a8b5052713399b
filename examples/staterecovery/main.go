// Command staterecovery shows state recovery from checkpoints, the seed
// tutorial's pattern 4: a 10-step task whose worker process is killed
// (SIGKILL) after step 3; a second worker process picks the task up and
// resumes at step 4, and every step runs exactly once.
//
//	go run ./examples/staterecovery [--steps 10] [--kill-after 3]
//
// The example runs an embedded NATS server and starts itself twice as the
// worker process.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/envelope"
	"github.com/jetagent/jetagent/runtime"
)

// workerEnv marks the worker processes the example starts.
const workerEnv = "JETAGENT_EXAMPLE_WORKER"

func main() {
	steps := flag.Int("steps", 10, "steps of the task")
	killAfter := flag.Int("kill-after", 3, "kill the first worker after this step")
	url := flag.String("nats", "", "(worker) server URL")
	flag.Parse()
	var err error
	if os.Getenv(workerEnv) != "" {
		err = worker(*url, *steps, *killAfter)
	} else {
		// Ctrl-C or SIGTERM stops the example and the workers it started.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = run(ctx, os.Stdout, *steps, *killAfter)
		stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "staterecovery:", err)
		os.Exit(1)
	}
}

// worker runs the "report" agent: each step checkpoints its progress. With
// pauseAfter > 0 it stops after that step, waiting to be killed.
func worker(url string, steps, pauseAfter int) error {
	ctx := context.Background()
	conn, err := bus.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close()
	rt, err := runtime.New(conn, runtime.Config{Agent: "report", Consumer: bus.ConsumerConfig{AckWait: time.Second}})
	if err != nil {
		return err
	}
	rt.Handle(envelope.TaskRequest, func(ctx context.Context, t *runtime.Task) (any, error) {
		from, err := t.LastStep(ctx)
		if err != nil {
			return nil, err
		}
		if from > 0 {
			fmt.Printf("resuming after step %d\n", from)
		}
		for i := 1; i <= steps; i++ {
			err := t.Step(ctx, i, func(context.Context) (any, error) {
				fmt.Printf("step %d\n", i) // the side effect
				return map[string]int{"pages": i * 10}, nil
			})
			if err != nil {
				return nil, err
			}
			if i == pauseAfter {
				fmt.Printf("checkpointed %d\n", i)
				<-ctx.Done() // wait to be killed (or stopped: then the task is handed back)
				return nil, ctx.Err()
			}
		}
		return fmt.Sprintf("report of %d steps", steps), nil
	})
	sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return rt.Run(sig)
}

// checkFlags refuses what the example cannot show: the first worker is
// killed after step killAfter of steps, so 1 <= killAfter <= steps.
func checkFlags(steps, killAfter int) error {
	if steps < 1 {
		return fmt.Errorf("--steps %d: the task needs at least one step", steps)
	}
	if killAfter < 1 || killAfter > steps {
		return fmt.Errorf("--kill-after %d: must be a step of the task, 1..%d (--steps)", killAfter, steps)
	}
	return nil
}

// run starts a server, the first worker (killed after killAfter), sends
// the task, then starts the second worker and prints the outcome.
//
// Every worker it starts is gone when it returns, on every path: killed
// when ctx ends, and (on Linux) by the kernel if this process dies first.
func run(ctx context.Context, w io.Writer, steps, killAfter int) error {
	if err := checkFlags(steps, killAfter); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "jetagent-example-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := bus.StartEmbedded(ctx, bus.EmbeddedOptions{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer srv.Shutdown(context.Background())
	conn, err := srv.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := bus.Provision(ctx, conn.JetStream(), bus.Topology{}); err != nil {
		return err
	}

	first, err := startWorker(srv.ClientURL(), steps, killAfter, w, "worker 1")
	if err != nil {
		return err
	}
	defer first.kill()
	client, err := runtime.NewClient(conn, runtime.ClientConfig{Retry: &runtime.RetryConfig{AttemptTimeout: time.Minute}})
	if err != nil {
		return err
	}
	defer client.Close()
	req, err := envelope.New(client.Name(), "report", envelope.TaskRequest, nil)
	if err != nil {
		return err
	}
	req.TaskID = "quarterly-report"
	type result struct {
		rep *envelope.Envelope
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := client.Send(ctx, req)
		done <- result{rep, err}
	}()

	if err := first.waitFor(ctx, fmt.Sprintf("checkpointed %d", killAfter)); err != nil {
		return err
	}
	_ = first.cmd.Process.Signal(syscall.SIGKILL)
	first.wait()
	fmt.Fprintf(w, "worker 1 killed (SIGKILL) after step %d\n", killAfter)

	second, err := startWorker(srv.ClientURL(), steps, 0, w, "worker 2")
	if err != nil {
		return err
	}
	defer second.kill()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	_ = second.cmd.Process.Signal(syscall.SIGTERM)
	second.wait() // its output is all written before ours
	if res.err != nil {
		return res.err
	}
	var answer string
	if err := res.rep.DecodePayload(&answer); err != nil {
		return err
	}
	fmt.Fprintf(w, "reply: %q\n", answer)
	return nil
}

// workerProcess is a running worker whose output lines are copied to w
// (by one goroutine; run writes to w only once that goroutine is done).
type workerProcess struct {
	waitOnce sync.Once
	cmd      *exec.Cmd
	lines    chan string   // its lines, for waitFor
	copied   chan struct{} // closed when all its output is copied
}

// kill ends the process if it still runs, and waits for it.
func (p *workerProcess) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait()
}

// wait waits for the process to exit and its output to be copied. It is
// safe to call more than once.
func (p *workerProcess) wait() {
	p.waitOnce.Do(p.waitExit)
}

func (p *workerProcess) waitExit() {
	for range p.lines { // nobody else reads them now
	}
	<-p.copied
	_ = p.cmd.Wait()
}

func startWorker(url string, steps, pauseAfter int, w io.Writer, name string) (*workerProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "--nats", url, "--steps", fmt.Sprint(steps), "--kill-after", fmt.Sprint(pauseAfter))
	cmd.Env = append(os.Environ(), workerEnv+"=1")
	cmd.SysProcAttr = dieWithParent()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &workerProcess{cmd: cmd, lines: make(chan string, 64), copied: make(chan struct{})}
	go func() {
		defer close(p.copied)
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintf(w, "%s: %s\n", name, sc.Text())
			select {
			case p.lines <- sc.Text():
			default: // nobody waits for lines any more
			}
		}
	}()
	return p, nil
}

// waitFor reads the worker's output until line, or until ctx ends.
func (p *workerProcess) waitFor(ctx context.Context, line string) error {
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return errors.New("worker exited before printing " + line)
			}
			if strings.TrimSpace(l) == line {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
