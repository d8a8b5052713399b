package natsflags_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetagent/jetagent/internal/natsflags"
)

func writeContext(t *testing.T, name, body string) {
	t.Helper()
	dir := filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".json"), []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestServerURLPrecedenceAndContexts(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv(natsflags.EnvURL, "")
	t.Setenv(natsflags.EnvNATSURL, "")
	t.Setenv(natsflags.EnvNATSContext, "")
	t.Setenv(natsflags.EnvUser, "")
	writeContext(t, "prod", `{"url": "nats://prod:4222", "user": "ops", "password": "s3cret", "inbox_prefix": "_INBOX_ops", "description": "x"}`)
	writeContext(t, "domain", `{"url": "nats://x:4222", "jetstream_domain": "hub"}`)

	url := func(s natsflags.Server) string {
		t.Helper()
		u, err := s.URL("nats://default:4222")
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	if got := url(natsflags.Server{}); got != "nats://default:4222" {
		t.Errorf("nothing given: %s", got)
	}
	if got := url(natsflags.Server{Context: "prod"}); got != "nats://prod:4222" {
		t.Errorf("--context prod: %s", got)
	}
	t.Setenv(natsflags.EnvNATSURL, "nats://natsurl:4222")
	if got := url(natsflags.Server{Context: "prod"}); got != "nats://natsurl:4222" {
		t.Errorf("$NATS_URL over the context: %s", got)
	}
	t.Setenv(natsflags.EnvURL, "nats://ours:4222")
	if got := url(natsflags.Server{}); got != "nats://ours:4222" {
		t.Errorf("$JETAGENT_NATS_URL over $NATS_URL: %s", got)
	}
	if got := url(natsflags.Server{Flag: "nats://flag:4222"}); got != "nats://flag:4222" {
		t.Errorf("--nats over everything: %s", got)
	}
	t.Setenv(natsflags.EnvNATSContext, "prod")
	t.Setenv(natsflags.EnvURL, "")
	t.Setenv(natsflags.EnvNATSURL, "")
	s := natsflags.Server{}
	if got := url(s); got != "nats://prod:4222" {
		t.Errorf("$NATS_CONTEXT: %s", got)
	}

	// The context's credentials fill what no flag or variable gives.
	var f natsflags.Flags
	s = natsflags.Server{Context: "prod"}
	url(s)
	s.Apply(&f)
	if f.User != "ops" || f.Password != "s3cret" || f.InboxPrefix != "_INBOX_ops" {
		t.Errorf("applied: %+v", f)
	}
	f = natsflags.Flags{User: "me", Password: "mine"}
	s.Apply(&f)
	if f.User != "me" || f.Password != "mine" {
		t.Errorf("a flag must win over the context: %+v", f)
	}

	for name, want := range map[string]string{"domain": "not supported", "nope": "no such context (", "prod.json": ""} {
		_, err := (&natsflags.Server{Context: name}).URL("")
		switch {
		case want == "" && err != nil && !strings.Contains(err.Error(), "no such"):
			t.Errorf("--context %s: %v", name, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("--context %s: err = %v, want %q", name, err, want)
		}
	}
	if _, err := (&natsflags.Server{Context: "nope"}).URL(""); !strings.Contains(err.Error(), "known: domain, prod") {
		t.Errorf("unknown context lists the known ones: %v", err)
	}
}
