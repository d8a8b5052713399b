package natsflags_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

func userSeed(t *testing.T) []byte {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return seed
}

// operator is a throwaway operator with one account, for servers in
// operator mode (JWT authentication).
type operator struct {
	claims  *jwt.OperatorClaims
	account nkeys.KeyPair
	accJWT  string
}

func newOperator(t *testing.T) *operator {
	t.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oc, err = jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	return &operator{claims: oc, account: akp, accJWT: ajwt}
}

// creds returns a credentials file's contents for a new user of the account.
func (o *operator) creds(t *testing.T) []byte {
	t.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	ujwt, err := jwt.NewUserClaims(upub).Encode(o.account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func (o *operator) serverOptions(t *testing.T) *server.Options {
	t.Helper()
	apub, _ := o.account.PublicKey()
	res := &server.MemAccResolver{}
	if err := res.Store(apub, o.accJWT); err != nil {
		t.Fatal(err)
	}
	return &server.Options{TrustedOperators: []*jwt.OperatorClaims{o.claims}, AccountResolver: res}
}

// writeCreds writes the credentials of a user of a throwaway operator.
func writeCreds(t *testing.T, dir string) string {
	t.Helper()
	return writeFile(t, dir, "user.creds", newOperator(t).creds(t))
}

// credsWithoutSeed is a credentials file with its seed block removed.
func credsWithoutSeed(t *testing.T) []byte {
	t.Helper()
	c := string(newOperator(t).creds(t))
	return []byte(c[:strings.Index(c, "************************* IMPORTANT")])
}

func TestCredsAuthenticate(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	op := newOperator(t)
	srv := startServer(t, op.serverOptions(t))
	creds := writeFile(t, dir, "user.creds", op.creds(t))
	if _, err := connect(t, srv.ClientURL(), parse(t, "--creds", creds)); err != nil {
		t.Fatalf("--creds: %v", err)
	}
	t.Setenv(natsflags.EnvCreds, creds)
	if _, err := connect(t, srv.ClientURL(), parse(t)); err != nil {
		t.Fatalf("%s: %v", natsflags.EnvCreds, err)
	}
	cleanEnv(t)
	// A user of another operator is refused.
	_, err := connect(t, srv.ClientURL(), parse(t, "--creds", writeCreds(t, dir)))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("foreign credentials: err = %v, want nats.ErrAuthorization", err)
	}
}

func TestNKeyAuthenticates(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	seed := userSeed(t)
	kp, _ := nkeys.FromSeed(seed)
	pub, _ := kp.PublicKey()
	srv := startServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	if _, err := connect(t, srv.ClientURL(), parse(t, "--nkey", writeFile(t, dir, "user.nk", seed))); err != nil {
		t.Fatalf("--nkey: %v", err)
	}
	_, err := connect(t, srv.ClientURL(), parse(t, "--nkey", writeFile(t, dir, "other.nk", userSeed(t))))
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unknown nkey: err = %v, want nats.ErrAuthorization", err)
	}
}

// A token or password, right or wrong, from a flag, the environment or a
// file, never shows in a connect error; nor do credentials in the URL.
func TestTokenAndPasswordNeverInConnectErrors(t *testing.T) {
	cleanEnv(t)
	dir := t.TempDir()
	const good, bad = "good-SECRET-token", "bad-SECRET-token"
	tokSrv := startServer(t, &server.Options{Authorization: good})
	pwSrv := startServer(t, &server.Options{Username: "alice", Password: good})

	// Right secrets connect, from each source.
	if _, err := connect(t, tokSrv.ClientURL(), parse(t, "--token", good)); err != nil {
		t.Fatalf("--token: %v", err)
	}
	t.Setenv(natsflags.EnvToken, good)
	if _, err := connect(t, tokSrv.ClientURL(), parse(t)); err != nil {
		t.Fatalf("%s: %v", natsflags.EnvToken, err)
	}
	cleanEnv(t)
	t.Setenv(natsflags.EnvUser, "alice")
	t.Setenv(natsflags.EnvPassword, good)
	if _, err := connect(t, pwSrv.ClientURL(), parse(t)); err != nil {
		t.Fatalf("%s: %v", natsflags.EnvPassword, err)
	}
	cleanEnv(t)

	var errs []error
	for _, tc := range []struct {
		url  string
		args []string
	}{
		{tokSrv.ClientURL(), []string{"--token", bad}},
		{tokSrv.ClientURL(), []string{"--token-file", writeFile(t, dir, "tok", []byte(bad))}},
		{pwSrv.ClientURL(), []string{"--user", "alice", "--password", bad}},
		{pwSrv.ClientURL(), []string{"--user", "alice", "--password-file", writeFile(t, dir, "pw", []byte(bad))}},
		{pwSrv.ClientURL(), []string{"--user", "mallory", "--password", good}},
		// Credentials in the URL: refused, and redacted from the error.
		{strings.Replace(pwSrv.ClientURL(), "nats://", "nats://alice:"+bad+"@", 1), nil},
		{strings.Replace(tokSrv.ClientURL(), "nats://", "nats://"+bad+"@", 1), nil},
		// Nothing listens there: a dial error, still without the secrets.
		{"nats://alice:" + bad + "@127.0.0.1:1", []string{"--user", "alice", "--password", good}},
	} {
		_, err := connect(t, tc.url, parse(t, tc.args...))
		if err == nil {
			t.Fatalf("%s %v: connected", bus.RedactURL(tc.url), tc.args)
		}
		errs = append(errs, err)
	}
	for i, err := range errs[:7] {
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("case %d: err = %v, want nats.ErrAuthorization", i, err)
		}
	}
	for _, err := range errs {
		if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error contains a secret: %v", err)
		}
	}
	if want := "bus: connect nats://alice:xxxxx@127.0.0.1:1: "; !strings.HasPrefix(errs[7].Error(), want) {
		t.Errorf("error %q does not start with %q", errs[7], want)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                         "nats://127.0.0.1:4222",
		"nats://alice:s3cret@host:4222":                 "nats://alice:xxxxx@host:4222",
		"tls://s3cret@host:4222":                        "tls://xxxxx@host:4222",
		"nats://a:s3cret@h1:4222,nats://s3cret@h2:4222": "nats://a:xxxxx@h1:4222,nats://xxxxx@h2:4222",
		"nats://a:s3%cret@h1:4222":                      "nats://xxxxx@h1:4222", // unparsable escape
		"a:s3cret@h1:4222":                              "xxxxx@h1:4222",
		"":                                              "",
	} {
		if got := bus.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInboxPrefixIsUsed(t *testing.T) {
	cleanEnv(t)
	srv := startServer(t, &server.Options{})
	conn, err := connect(t, srv.ClientURL(), parse(t, "--inbox-prefix", "_INBOX_alice"))
	if err != nil {
		t.Fatal(err)
	}
	if in := conn.NATS().NewInbox(); !strings.HasPrefix(in, "_INBOX_alice.") {
		t.Errorf("inbox %q", in)
	}
}

// FailFast ends the context at once when the server refuses a publish,
// where the request alone would wait for its timeout.
func TestFailFastOnAPermissionViolation(t *testing.T) {
	cleanEnv(t)
	srv := startServer(t, &server.Options{Users: []*server.User{{
		Username: "u", Password: "p",
		Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{"ok.>"}},
			Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_u.>"}},
		},
	}}})
	f := parse(t, "--user", "u", "--password", "p", "--inbox-prefix", "_INBOX_u")
	opts, err := f.Options()
	if err != nil {
		t.Fatal(err)
	}
	ctx, denied, stop := natsflags.FailFast(context.Background())
	defer stop()
	conn, err := bus.Connect(ctx, srv.ClientURL(), append(opts, denied)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if natsflags.Violation(ctx) != nil {
		t.Fatal("violation before any")
	}
	start := time.Now()
	_, err = conn.NATS().RequestWithContext(ctx, "forbidden.subject", nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("request: err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
	v := natsflags.Violation(ctx)
	var pe *natsflags.PermissionError
	if !errors.As(v, &pe) || !errors.Is(v, nats.ErrPermissionViolation) {
		t.Fatalf("Violation = %v, want a *PermissionError wrapping nats.ErrPermissionViolation", v)
	}
	if pe.Op != "publish" || pe.Subject != "forbidden.subject" {
		t.Errorf("PermissionError = %+v", pe)
	}
	if want := `Permissions Violation for Publish to "forbidden.subject"`; !strings.Contains(pe.Err.Error(), want) {
		t.Errorf("nats error %q does not contain %q", pe.Err, want)
	}

	// A refused subscription, on a fresh context.
	ctx2, denied2, stop2 := natsflags.FailFast(context.Background())
	defer stop2()
	conn2, err := bus.Connect(ctx2, srv.ClientURL(), append(opts, denied2)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if _, err := conn2.NATS().SubscribeSync("_INBOX.>"); err != nil {
		t.Fatal(err)
	}
	<-ctx2.Done()
	if !errors.As(natsflags.Violation(ctx2), &pe) || pe.Op != "subscribe" || pe.Subject != "_INBOX.>" {
		t.Fatalf("Violation = %v", natsflags.Violation(ctx2))
	}
	if got, want := pe.Error(), `the NATS server refused this user permission to subscribe "_INBOX.>"`; !strings.HasPrefix(got, want) {
		t.Errorf("Error() = %q, want prefix %q", got, want)
	}
}
