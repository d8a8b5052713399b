package agentcli

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/internal/natstest"
	"github.com/jetagent/jetagent/internal/testio"
)

func TestConsoleRefusesWhatItCannotServeSafely(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:admin:s3cret-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"console", "--listen", "0.0.0.0:0"}, 2, "agent: console: a listen address other than loopback needs authentication (--console-token-file or --console-users): refusing to listen on 0.0.0.0:0"},
		{[]string{"console", "--listen", "nonsense"}, 2, `agent: console: listen address "nonsense"`},
		{[]string{"console", "--console-users", users}, 2, `role "admin": want operator or viewer`},
		{[]string{"console", "--console-token-file", filepath.Join(dir, "missing")}, 2, "agent: console: token file:"},
		{[]string{"console", "--listen", "127.0.0.1:0", "--nats", "nats://127.0.0.1:" + strconv.Itoa(freePort(t))}, 1, "cannot reach NATS at nats://127.0.0.1:"},
	} {
		code, _, stderr := runMain(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
		if strings.Contains(stderr, "s3cret-pw") {
			t.Errorf("%v: the error shows the users file's secret", tc.args)
		}
	}
}

// agent console joins a server and serves the pages; with a token, only
// requests that bring it.
func TestConsoleServesWithAToken(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{Listen: true})
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	var errb testio.Buffer
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"console", "--nats", srv.ClientURL(), "--listen", "127.0.0.1:" + strconv.Itoa(port), "--console-token-file", tokenFile}, &testio.Buffer{}, &errb)
	}()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("console exited %d: %s", code, errb.String())
		}
	}()
	url := "http://127.0.0.1:" + strconv.Itoa(port) + "/agents"
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(errb.String(), "console ready") {
		if time.Now().After(deadline) {
			t.Fatalf("console not ready: %s", errb.String())
		}
		time.Sleep(20 * time.Millisecond) // the console starts in its goroutine
	}
	get := func(token string) int {
		req, _ := http.NewRequest("GET", url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(""); code != http.StatusUnauthorized {
		t.Errorf("without the token: %d, want 401", code)
	}
	if code := get("tok-123"); code != http.StatusOK {
		t.Errorf("with the token: %d, want 200", code)
	}
	if strings.Contains(errb.String(), "tok-123") {
		t.Error("the log shows the token")
	}
}
