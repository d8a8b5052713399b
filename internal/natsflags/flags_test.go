package natsflags_test

import (
	"bytes"
	"errors"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"
)

func TestRegisterAddsEveryFlagWithItsVariable(t *testing.T) {
	var f natsflags.Flags
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f.Register(fs)
	want := map[string]string{
		"creds": natsflags.EnvCreds, "nkey": natsflags.EnvNKey, "token": natsflags.EnvToken,
		"token-file": natsflags.EnvTokenFile, "user": natsflags.EnvUser, "password": natsflags.EnvPassword,
		"password-file": natsflags.EnvPasswordFile, "tls-ca": natsflags.EnvTLSCA, "tls-cert": natsflags.EnvTLSCert,
		"tls-key": natsflags.EnvTLSKey, "tls-server-name": natsflags.EnvTLSServerName, "inbox-prefix": natsflags.EnvInboxPrefix,
	}
	n := 0
	fs.VisitAll(func(fl *pflag.Flag) {
		n++
		env, ok := want[fl.Name]
		if !ok {
			t.Errorf("unexpected flag --%s", fl.Name)
			return
		}
		if !strings.Contains(fl.Usage, "[$"+env+"]") {
			t.Errorf("--%s usage %q does not name %s", fl.Name, fl.Usage, env)
		}
		if fl.DefValue != "" {
			t.Errorf("--%s has default %q, want none", fl.Name, fl.DefValue)
		}
	})
	if n != len(want) {
		t.Errorf("%d flags, want %d", n, len(want))
	}
	for _, name := range []string{"token", "password"} {
		if u := fs.Lookup(name).Usage; !strings.Contains(u, "ps") {
			t.Errorf("--%s usage %q does not warn that flags are visible in ps", name, u)
		}
	}
}

func TestNoSettingsNoOptions(t *testing.T) {
	cleanEnv(t)
	f := parse(t)
	opts, err := f.Options()
	if err != nil || len(opts) != 0 {
		t.Fatalf("Options() = %d options, %v; want none", len(opts), err)
	}
	if f.Configured() {
		t.Error("Configured() = true with nothing set")
	}
}

func TestEveryFlagAlsoComesFromTheEnvironment(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	pki := newPKI(t, dir)
	seed := userSeed(t)
	for _, tc := range []struct {
		env  map[string]string
		want string // the LogValue attribute proving the variable was read
	}{
		{map[string]string{natsflags.EnvCreds: writeCreds(t, dir)}, "auth=creds"},
		{map[string]string{natsflags.EnvNKey: writeFile(t, dir, "seed.nk", seed)}, "auth=nkey"},
		{map[string]string{natsflags.EnvToken: "tok"}, "auth=token"},
		{map[string]string{natsflags.EnvTokenFile: writeFile(t, dir, "tok", []byte("tok\n"))}, "auth=token"},
		{map[string]string{natsflags.EnvUser: "alice", natsflags.EnvPassword: "pw"}, "user=alice"},
		{map[string]string{natsflags.EnvUser: "alice", natsflags.EnvPasswordFile: writeFile(t, dir, "pw", []byte("pw\n"))}, "password_file="},
		{map[string]string{natsflags.EnvTLSCA: pki.caFile}, "tls_ca=" + pki.caFile},
		{map[string]string{natsflags.EnvTLSCert: pki.clientCert, natsflags.EnvTLSKey: pki.clientKey}, "tls_key=" + pki.clientKey},
		{map[string]string{natsflags.EnvTLSServerName: "nats.test"}, "tls_server_name=nats.test"},
		{map[string]string{natsflags.EnvInboxPrefix: "_INBOX_a"}, "inbox_prefix=_INBOX_a"},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		f := parse(t)
		if !f.Configured() {
			t.Errorf("%v: Configured() = false", tc.env)
		}
		opts, err := f.Options()
		if err != nil || len(opts) == 0 {
			t.Errorf("%v: Options() = %d options, %v", tc.env, len(opts), err)
		}
		if got := logLine(f); !strings.Contains(got, tc.want) {
			t.Errorf("%v: log value %q does not contain %q", tc.env, got, tc.want)
		}
		cleanEnv(t)
	}
}

func TestFlagWinsOverItsVariable(t *testing.T) {
	cleanEnv(t)
	t.Setenv(natsflags.EnvUser, "from-env")
	t.Setenv(natsflags.EnvPassword, "pw")
	f := parse(t, "--user", "from-flag")
	if _, err := f.Options(); err != nil {
		t.Fatal(err)
	}
	if got := logLine(f); !strings.Contains(got, "user=from-flag") {
		t.Errorf("log value %q: the flag did not win", got)
	}
}

func TestConflictsNameTheSettings(t *testing.T) {
	dir := t.TempDir()
	pki := newPKI(t, dir)
	creds := writeCreds(t, dir)
	seed := writeFile(t, dir, "seed.nk", userSeed(t))
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want []string
	}{
		{args: []string{"--creds", creds, "--token", "tok"}, want: []string{"--creds and --token are set: authenticate one way only"}},
		{args: []string{"--nkey", seed, "--user", "u", "--password", "pw"}, want: []string{"--nkey", "--user"}},
		{args: []string{"--creds", creds}, env: map[string]string{natsflags.EnvToken: "tok"}, want: []string{"--creds", natsflags.EnvToken}},
		{args: []string{"--token", "a", "--token-file", "f"}, want: []string{"--token and --token-file are both set"}},
		{args: []string{"--user", "u", "--password", "a", "--password-file", "f"}, want: []string{"--password and --password-file are both set"}},
		{args: []string{"--password", "pw"}, want: []string{"--password needs a user"}},
		{env: map[string]string{natsflags.EnvPassword: "pw"}, want: []string{natsflags.EnvPassword + " needs a user"}},
		{args: []string{"--user", "u"}, want: []string{"--user needs a password"}},
		{args: []string{"--tls-cert", pki.clientCert}, want: []string{"--tls-cert needs its private key"}},
		{args: []string{"--tls-key", pki.clientKey}, want: []string{"--tls-key needs its certificate"}},
		{args: []string{"--tls-ca", pki.caFile}, env: map[string]string{natsflags.EnvTLSKey: pki.clientKey}, want: []string{natsflags.EnvTLSKey + " needs its certificate"}},
	} {
		cleanEnv(t)
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		_, err := parse(t, tc.args...).Options()
		if !errors.Is(err, natsflags.ErrConflict) {
			t.Errorf("%v %v: err = %v, want ErrConflict", tc.args, tc.env, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v %v: error %q does not contain %q", tc.args, tc.env, err, w)
			}
		}
	}
}

func TestBadFilesNameTheFlagAndTheFile(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	pki := newPKI(t, dir)
	missing := filepath.Join(dir, "missing")
	junk := writeFile(t, dir, "junk", []byte("not what you think\n"))
	empty := writeFile(t, dir, "empty", []byte("\n"))
	accountSeed := func() []byte {
		kp, _ := nkeys.CreateAccount()
		s, _ := kp.Seed()
		return s
	}()
	for _, tc := range []struct {
		args     []string
		want     []string
		notExist bool
	}{
		{[]string{"--creds", missing}, []string{"--creds", missing}, true},
		{[]string{"--creds", junk}, []string{"--creds", junk, "no user JWT"}, false},
		{[]string{"--creds", writeFile(t, dir, "jwt-only.creds", credsWithoutSeed(t))}, []string{"--creds", "no user nkey seed"}, false},
		{[]string{"--nkey", missing}, []string{"--nkey", missing}, true},
		{[]string{"--nkey", junk}, []string{"--nkey", junk, "seed"}, false},
		{[]string{"--nkey", writeFile(t, dir, "account.nk", accountSeed)}, []string{"--nkey", "user seed"}, false},
		{[]string{"--token-file", missing}, []string{"--token-file", missing}, true},
		{[]string{"--token-file", empty}, []string{"--token-file", "empty"}, false},
		{[]string{"--user", "u", "--password-file", missing}, []string{"--password-file", missing}, true},
		{[]string{"--user", "u", "--password-file", empty}, []string{"--password-file", "empty"}, false},
		{[]string{"--tls-ca", missing}, []string{"--tls-ca", missing}, true},
		{[]string{"--tls-ca", junk}, []string{"--tls-ca", junk, "no PEM certificate"}, false},
		{[]string{"--tls-cert", missing, "--tls-key", pki.clientKey}, []string{"--tls-cert", missing}, true},
		{[]string{"--tls-cert", pki.clientCert, "--tls-key", missing}, []string{"--tls-key", missing}, true},
		{[]string{"--tls-cert", pki.clientCert, "--tls-key", pki.serverKey}, []string{"--tls-cert", "--tls-key", "does not match"}, false},
		{[]string{"--inbox-prefix", "_INBOX.>"}, []string{"--inbox-prefix", "without wildcards"}, false},
		{[]string{"--inbox-prefix", "_INBOX."}, []string{"--inbox-prefix"}, false},
	} {
		_, err := parse(t, tc.args...).Options()
		if err == nil {
			t.Errorf("%v: no error", tc.args)
			continue
		}
		if errors.Is(err, natsflags.ErrConflict) {
			t.Errorf("%v: %v is reported as a conflict", tc.args, err)
		}
		if tc.notExist != errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%v: errors.Is(%v, fs.ErrNotExist) = %v", tc.args, err, !tc.notExist)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not contain %q", tc.args, err, w)
			}
		}
	}
}

// Secrets given by flag, variable or file never appear in an error, a log
// value or the help text.
func TestSecretsNeverInErrorsLogsOrHelp(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	const tok, pw, envTok, envPw, filePw = "tok-SECRET-1", "pw-SECRET-2", "tok-SECRET-3", "pw-SECRET-4", "pw-SECRET-5"
	secrets := []string{tok, pw, envTok, envPw, filePw, "SECRET"}
	t.Setenv(natsflags.EnvToken, envTok)
	t.Setenv(natsflags.EnvPassword, envPw)

	var out []string
	// The help text, with the secrets in the environment.
	var f natsflags.Flags
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f.Register(fs)
	out = append(out, fs.FlagUsages())
	// Errors of every kind, with the secrets set.
	pwFile := writeFile(t, dir, "pw", []byte(filePw+"\n"))
	for _, args := range [][]string{
		{"--token", tok, "--user", "u", "--password", pw}, // conflict, flags
		{"--user", "u"},                                                // conflict: env token and env password
		{"--token", tok, "--token-file", pwFile},                       // token twice
		{"--user", "u", "--password", pw, "--tls-cert", pwFile},        // TLS conflict
		{"--user", "u", "--password-file", pwFile, "--tls-ca", pwFile}, // unreadable CA
		{"--user", "u", "--password", pw, "--tls-cert", pwFile, "--tls-key", pwFile},
		{"--creds", pwFile}, {"--nkey", pwFile},
	} {
		f := parse(t, args...)
		_, err := f.Options()
		if err == nil {
			t.Fatalf("%v: no error", args)
		}
		out = append(out, err.Error(), logLine(f))
	}
	// Log values of working settings.
	cleanEnv(t)
	for i, args := range [][]string{{"--token", tok}, {"--user", "u", "--password", pw}, {"--user", "u", "--password-file", pwFile}, {"--user", "u"}} {
		if i == 3 {
			t.Setenv(natsflags.EnvPassword, envPw)
		}
		f := parse(t, args...)
		if _, err := f.Options(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		out = append(out, logLine(f))
	}
	for _, o := range out {
		for _, s := range secrets {
			if strings.Contains(o, s) {
				t.Errorf("output contains the secret %q: %s", s, o)
			}
		}
	}
}

func TestPasswordAndTokenFilesAreTrimmed(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	srv := startServer(t, &server.Options{Username: "alice", Password: " p w "})
	f := parse(t, "--user", "alice", "--password-file", writeFile(t, dir, "pw", []byte(" p w \r\n")))
	if _, err := connect(t, srv.ClientURL(), f); err != nil {
		t.Fatalf("password file with a trailing newline: %v", err)
	}
	srv2 := startServer(t, &server.Options{Authorization: "tok"})
	f = parse(t, "--token-file", writeFile(t, dir, "tok", []byte("\n  tok \n")))
	if _, err := connect(t, srv2.ClientURL(), f); err != nil {
		t.Fatalf("token file with spaces: %v", err)
	}
}

func logLine(f *natsflags.Flags) string {
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Info("connect", "nats", f)
	return b.String()
}
