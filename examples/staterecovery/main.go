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
		err = run(context.Background(), os.Stdout, *steps, *killAfter)
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
				select {} // wait to be killed
			}
		}
		return fmt.Sprintf("report of %d steps", steps), nil
	})
	sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	return rt.Run(sig)
}

// run starts a server, the first worker (killed after killAfter), sends
// the task, then starts the second worker and prints the outcome.
func run(ctx context.Context, w io.Writer, steps, killAfter int) error {
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

	if err := first.waitFor(fmt.Sprintf("checkpointed %d", killAfter)); err != nil {
		return err
	}
	_ = first.cmd.Process.Signal(syscall.SIGKILL)
	first.wait()
	fmt.Fprintf(w, "worker 1 killed (SIGKILL) after step %d\n", killAfter)

	second, err := startWorker(srv.ClientURL(), steps, 0, w, "worker 2")
	if err != nil {
		return err
	}
	res := <-done
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
	cmd    *exec.Cmd
	lines  chan string   // its lines, for waitFor
	copied chan struct{} // closed when all its output is copied
}

// wait waits for the process to exit and its output to be copied.
func (p *workerProcess) wait() {
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

// waitFor reads the worker's output until line.
func (p *workerProcess) waitFor(line string) error {
	for l := range p.lines {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	return errors.New("worker exited before printing " + line)
}
