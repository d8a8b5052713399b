package agentcli

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/jetagent/jetagent/internal/testio"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/spf13/pflag"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb testio.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = Main(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestUsageErrorsExitTwoWithOneLine(t *testing.T) {
	cases := [][]string{
		{"send"}, // --to missing
		{"send", "--to", "echo", "--payload", "{"}, // bad JSON
		{"send", "--to", "a.b"},                    // bad agent name
		{"send", "--to", "echo", "--timeout", "0s"},
		{"run", "--concurrency", "0"},
		{"run", "--ack-wait", "10ms"},
		{"run", "--max-deliver", "0"},
		{"run", "--handler", "nope"},
		{"run", "--handler", "chaos", "--fail-rate", "1.5"},
		{"run", "--max-clock-skew", "0s"},
		{"run", "--replicas", "0"},
		{"run", "--log-level", "loud"},
		{"nope"},
		{"run", "--no-such-flag"},
	}
	for _, args := range cases {
		code, _, stderr := runMain(t, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr)
		}
		if !strings.HasPrefix(stderr, "agent: ") || strings.Count(stderr, "\n") != 2 {
			t.Errorf("%v: stderr %q, want one error line and one hint", args, stderr)
		}
	}
}

func TestSendToUnreachableServerFailsClearly(t *testing.T) {
	url := "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	code, _, stderr := runMain(t, "send", "--to", "echo", "--nats", url, "--timeout", "2s")
	if code != 1 || !strings.Contains(stderr, "cannot reach NATS at "+url) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestHelpExplainsEveryFlag(t *testing.T) {
	for _, cmd := range []string{"run", "send"} {
		code, out, _ := runMain(t, cmd, "--help")
		if code != 0 {
			t.Fatalf("%s --help: exit %d", cmd, code)
		}
		root := newRoot(&bytes.Buffer{}, &bytes.Buffer{})
		sub, _, err := root.Find([]string{cmd})
		if err != nil {
			t.Fatal(err)
		}
		sub.Flags().VisitAll(func(f *pflag.Flag) {
			if !strings.Contains(out, "--"+f.Name) || f.Usage == "" {
				t.Errorf("%s --help does not explain --%s", cmd, f.Name)
			}
		})
	}
}

func TestRunAndSendEndToEnd(t *testing.T) {
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	var runErr testio.Buffer
	runDone := make(chan int, 1)
	go func() {
		runDone <- Main(ctx, []string{"run", "--listen", "127.0.0.1:" + strconv.Itoa(port), "--data-dir", t.TempDir()}, &bytes.Buffer{}, &runErr)
	}()
	defer func() {
		cancel()
		if code := <-runDone; code != 0 {
			t.Errorf("run exited %d: %s", code, runErr.String())
		}
	}()
	waitUntilReady(t, url, &runErr)

	code, stdout, stderr := runMain(t, "send", "--to", "echo", "--nats", url, "--payload", `{"hello":"world","n":[1,2,3]}`)
	if code != 0 {
		t.Fatalf("send exit %d: %s", code, stderr)
	}
	var reply map[string]any
	if err := json.Unmarshal([]byte(stdout), &reply); err != nil {
		t.Fatalf("reply is not JSON: %v\n%s", err, stdout)
	}
	payload, _ := json.Marshal(reply["payload"])
	if string(payload) != `{"hello":"world","n":[1,2,3]}` || reply["payload_type"] != "task.response" || reply["sender"] != "echo" {
		t.Fatalf("reply = %s", stdout)
	}
}

// waitUntilReady polls until the agent's embedded server accepts clients
// and the echo consumer exists.
func waitUntilReady(t *testing.T, url string, log *testio.Buffer) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(log.String(), "ready;") {
		if time.Now().After(deadline) {
			t.Fatalf("agent never became ready: %s", log.String())
		}
		time.Sleep(10 * time.Millisecond) // polling another goroutine's log output
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := bus.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
