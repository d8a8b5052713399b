package handlers_test

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// childEnv marks a run of the test binary as a child program of the exec
// handler; its arguments say what to do (see child).
const childEnv = "HANDLERS_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// childCommand returns the command running the test binary as a child
// in the given mode.
func childCommand(mode ...string) []string {
	return append([]string{os.Args[0]}, mode...)
}

// childVars are the variables a child needs (ExecConfig.Env); a child
// built with -race would otherwise sleep a second at exit.
var childVars = map[string]string{childEnv: "1", "GORACE": "atexit_sleep_ms=0"}

// child is the program the tests run. Modes:
//
//	reply               answers {"got": payload, "id": ..., "attempt": N, "env": {...}}
//	exit CODE           writes a line to stderr and exits with CODE
//	fail-until N        exits 75 while JETAGENT_ATTEMPT < N, then replies
//	hang PIDFILE        starts a grandchild (sleep), writes both pids, sleeps
//	sleep               sleeps (the grandchild)
//	kill9               kills itself with SIGKILL
//	garbage             writes text that is not JSON, exits 0
//	flood-stderr N      writes N bytes of stderr lines, then replies
//	flood-stdout N      writes N bytes to stdout
//	no-stdin            replies without reading stdin
//	leave-behind PIDFILE  starts a grandchild holding stdout, replies, exits
//	by-payload          reads the envelope; its payload (a string) is the mode
func child(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "child: no mode")
		return 64
	}
	arg := func(i int) string {
		if len(args) > i {
			return args[i]
		}
		return ""
	}
	switch args[0] {
	case "by-payload":
		env, err := readEnvelope()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad stdin:", err)
			return 65
		}
		var mode string
		_ = json.Unmarshal(env.Payload, &mode)
		preread = &env
		return child(strings.Fields(mode))
	case "reply":
		return replyToStdin()
	case "exit":
		code, _ := strconv.Atoi(arg(1))
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Fprintf(os.Stderr, "first line\nfailing with %d\n", code)
		return code
	case "fail-until":
		n, _ := strconv.Atoi(arg(1))
		attempt, _ := strconv.Atoi(os.Getenv("JETAGENT_ATTEMPT"))
		if attempt < n {
			_, _ = io.Copy(io.Discard, os.Stdin)
			fmt.Fprintf(os.Stderr, "attempt %d: not yet\n", attempt)
			return 75
		}
		return replyToStdin()
	case "hang", "leave-behind":
		gc := exec.Command(os.Args[0], "sleep")
		gc.Env = os.Environ()
		if args[0] == "leave-behind" {
			gc.Stdout = os.Stdout // holds the pipe open
		}
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pids := fmt.Sprintf("%d %d\n", os.Getpid(), gc.Process.Pid)
		if err := os.WriteFile(arg(1), []byte(pids), 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if args[0] == "leave-behind" {
			return replyToStdin()
		}
		time.Sleep(time.Hour)
		return 0
	case "sleep":
		signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
		time.Sleep(time.Hour)
		return 0
	case "kill9":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Hour)
		return 0
	case "garbage":
		_, _ = io.Copy(io.Discard, os.Stdin)
		fmt.Println("hello, I am not JSON")
		return 0
	case "flood-stderr":
		n, _ := strconv.Atoi(arg(1))
		line := strings.Repeat("e", 99) + "\n"
		for i := 0; i < n; i += len(line) {
			_, _ = os.Stderr.WriteString(line)
		}
		return replyToStdin()
	case "flood-stdout":
		n, _ := strconv.Atoi(arg(1))
		chunk := []byte(strings.Repeat("[", 1024))
		for i := 0; i < n; i += len(chunk) {
			if _, err := os.Stdout.Write(chunk); err != nil {
				return 1
			}
		}
		return 0
	case "no-stdin":
		fmt.Println(`{"ok":true}`)
		return 0
	}
	fmt.Fprintln(os.Stderr, "child: unknown mode", args[0])
	return 64
}

type childEnvelope struct {
	ID      string          `json:"id"`
	Payload json.RawMessage `json:"payload"`
}

// preread is the envelope by-payload read already.
var preread *childEnvelope

func readEnvelope() (childEnvelope, error) {
	if preread != nil {
		return *preread, nil
	}
	var env childEnvelope
	err := json.NewDecoder(os.Stdin).Decode(&env)
	return env, err
}

func replyToStdin() int {
	env, err := readEnvelope()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad stdin:", err)
		return 65
	}
	return reply(env)
}

func reply(env childEnvelope) int {
	vars := map[string]string{}
	for _, k := range []string{"JETAGENT_AGENT", "JETAGENT_ENVELOPE_ID", "JETAGENT_ATTEMPT", "JETAGENT_DEADLINE", "JETAGENT_SECRET", "EXTRA", "TRACEPARENT"} {
		if v, ok := os.LookupEnv(k); ok {
			vars[k] = v
		}
	}
	attempt, _ := strconv.Atoi(os.Getenv("JETAGENT_ATTEMPT"))
	out, _ := json.Marshal(map[string]any{"got": env.Payload, "id": env.ID, "attempt": attempt, "env": vars})
	fmt.Println(string(out))
	return 0
}
