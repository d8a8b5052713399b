package natsflags

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/pflag"
)

// Flags holds the security settings of a NATS connection. Register binds
// them to command-line flags; a program may also fill the fields itself.
// Every field whose value is empty is read by Options from its environment
// variable (see the Env constants); the zero value, with no variable set,
// connects without authentication or TLS.
type Flags struct {
	// Creds is a credentials file holding a user JWT and its nkey seed, as
	// written by nsc (decentralised JWT authentication). It is read again
	// on every reconnect, so it can be rotated in place.
	Creds string

	// NKey is a file holding a user nkey seed ("SU..."), for servers that
	// list the user's public nkey.
	NKey string

	// Token is an authentication token. Command-line values are visible to
	// other users of the machine (ps): prefer TokenFile or the environment.
	Token string
	// TokenFile is a file holding the token (surrounding space trimmed).
	TokenFile string

	// User and Password authenticate with a user name and password.
	// Command-line passwords are visible in ps: prefer PasswordFile or the
	// environment.
	User     string
	Password string
	// PasswordFile is a file holding the password (a trailing newline is
	// trimmed).
	PasswordFile string

	// TLSCA is a PEM file of the certificate authorities that sign the
	// server's certificate. Zero: the system's roots.
	TLSCA string
	// TLSCert and TLSKey are the PEM client certificate and its private key,
	// for servers that verify clients (mutual TLS). Set both or neither.
	// They are read again on every reconnect.
	TLSCert string
	TLSKey  string
	// TLSServerName is the name the server's certificate must carry, when
	// it differs from the host in the URL (e.g. connecting by IP address).
	TLSServerName string

	// InboxPrefix replaces "_INBOX" as the prefix of the subjects this
	// connection receives responses, acknowledgements and pulled messages
	// on. Give each NATS user its own, and allow it only that one to
	// subscribe to: with the shared "_INBOX.>", any user could read every
	// other user's replies and pulled tasks (see docs/security.md).
	InboxPrefix string
}

// Environment variables read by Options for settings whose field is empty.
const (
	EnvCreds         = "JETAGENT_NATS_CREDS"
	EnvNKey          = "JETAGENT_NATS_NKEY"
	EnvToken         = "JETAGENT_NATS_TOKEN"
	EnvTokenFile     = "JETAGENT_NATS_TOKEN_FILE"
	EnvUser          = "JETAGENT_NATS_USER"
	EnvPassword      = "JETAGENT_NATS_PASSWORD"
	EnvPasswordFile  = "JETAGENT_NATS_PASSWORD_FILE"
	EnvTLSCA         = "JETAGENT_NATS_TLS_CA"
	EnvTLSCert       = "JETAGENT_NATS_TLS_CERT"
	EnvTLSKey        = "JETAGENT_NATS_TLS_KEY"
	EnvTLSServerName = "JETAGENT_NATS_TLS_SERVER_NAME"
	EnvInboxPrefix   = "JETAGENT_NATS_INBOX_PREFIX"
)

// setting describes one field: its flag, its variable, its help.
type setting struct {
	flag, env, usage string
	field            func(*Flags) *string
}

var settings = []setting{
	{"creds", EnvCreds, "credentials `FILE` (user JWT and nkey seed, as written by nsc)", func(f *Flags) *string { return &f.Creds }},
	{"nkey", EnvNKey, "`FILE` holding a user nkey seed", func(f *Flags) *string { return &f.NKey }},
	{"token", EnvToken, "authentication `TOKEN`; visible to other users in ps: prefer the variable or --token-file", func(f *Flags) *string { return &f.Token }},
	{"token-file", EnvTokenFile, "`FILE` holding the authentication token", func(f *Flags) *string { return &f.TokenFile }},
	{"user", EnvUser, "user `NAME`, with a password", func(f *Flags) *string { return &f.User }},
	{"password", EnvPassword, "`PASSWORD` of --user; visible to other users in ps: prefer the variable or --password-file", func(f *Flags) *string { return &f.Password }},
	{"password-file", EnvPasswordFile, "`FILE` holding the password of --user", func(f *Flags) *string { return &f.PasswordFile }},
	{"tls-ca", EnvTLSCA, "PEM `FILE` of the CAs that sign the server's certificate (default: system roots)", func(f *Flags) *string { return &f.TLSCA }},
	{"tls-cert", EnvTLSCert, "PEM client certificate `FILE`, for servers that verify clients (with --tls-key)", func(f *Flags) *string { return &f.TLSCert }},
	{"tls-key", EnvTLSKey, "PEM private key `FILE` of --tls-cert", func(f *Flags) *string { return &f.TLSKey }},
	{"tls-server-name", EnvTLSServerName, "`NAME` the server's certificate must carry, when not the URL's host", func(f *Flags) *string { return &f.TLSServerName }},
	{"inbox-prefix", EnvInboxPrefix, "`PREFIX` of this connection's reply subjects instead of _INBOX (one per NATS user, see docs/security.md)", func(f *Flags) *string { return &f.InboxPrefix }},
}

// Register adds the flags to fs: --creds, --nkey, --token, --token-file,
// --user, --password, --password-file, --tls-ca, --tls-cert, --tls-key,
// --tls-server-name and --inbox-prefix, each bound to its field of f. The
// flags have no default (the help never shows a secret taken from the
// environment), so registering empties the fields; Options falls back to
// the environment.
func (f *Flags) Register(fs *pflag.FlagSet) {
	for _, s := range settings {
		fs.StringVar(s.field(f), s.flag, "", s.usage+" [$"+s.env+"]")
	}
}

// value is a setting's resolved value, the setting's flag name, and where
// the value came from as users name it: "--token" or "JETAGENT_NATS_TOKEN".
type value struct{ v, name, src string }

func (v value) set() bool { return v.v != "" }

// resolve returns every setting by flag name, falling back to the
// environment for empty fields.
func (f *Flags) resolve() map[string]value {
	out := make(map[string]value, len(settings))
	for _, s := range settings {
		if v := *s.field(f); v != "" {
			out[s.flag] = value{v, s.flag, "--" + s.flag}
		} else if v := os.Getenv(s.env); v != "" {
			out[s.flag] = value{v, s.flag, s.env}
		}
	}
	return out
}

// Configured reports whether any setting is given, by a field (flag) or
// by the environment.
func (f *Flags) Configured() bool { return len(f.resolve()) > 0 }

// Options validates the settings and returns the nats.go options that
// apply them, to pass to bus.Connect. It reads the files the settings name
// (and the nats.go options read them again on every reconnect, so that
// they can be rotated).
//
// It returns an error wrapping ErrConflict, naming the flags or variables
// involved, for two ways to authenticate at once (credentials, nkey, token,
// user and password), a token or password given twice, a password without
// a user or a user without a password, or a TLS certificate without its key
// (or the reverse). It returns an error naming the flag (or variable) and
// the file for a file that cannot be read or does not hold what the flag
// says (wrapping the os error, e.g. fs.ErrNotExist). No error contains a
// token, a password or key material.
func (f *Flags) Options() ([]nats.Option, error) {
	r := f.resolve()
	auth, err := authOptions(r)
	if err != nil {
		return nil, err
	}
	tlsOpts, err := tlsOptions(r)
	if err != nil {
		return nil, err
	}
	opts := append(auth, tlsOpts...)
	if p := r["inbox-prefix"]; p.set() {
		if p.v != strings.TrimSpace(p.v) || strings.ContainsAny(p.v, "*> \t") || strings.HasPrefix(p.v, ".") ||
			strings.HasSuffix(p.v, ".") || strings.Contains(p.v, "..") {
			return nil, fmt.Errorf("natsflags: %s %q: an inbox prefix is one or more subject tokens without wildcards, e.g. _INBOX_billing", p.src, p.v)
		}
		opts = append(opts, nats.CustomInboxPrefix(p.v))
	}
	return opts, nil
}

// authOptions returns the option of the one authentication method given.
func authOptions(r map[string]value) ([]nats.Option, error) {
	for _, pair := range [][2]string{{"token", "token-file"}, {"password", "password-file"}} {
		if a, b := r[pair[0]], r[pair[1]]; a.set() && b.set() {
			return nil, fmt.Errorf("%w: %s and %s are both set: give it one way", ErrConflict, a.src, b.src)
		}
	}
	user := r["user"]
	pass := r["password"]
	if !pass.set() {
		pass = r["password-file"]
	}
	token := r["token"]
	if !token.set() {
		token = r["token-file"]
	}
	switch {
	case pass.set() && !user.set():
		return nil, fmt.Errorf("%w: %s needs a user (--user or %s)", ErrConflict, pass.src, EnvUser)
	case user.set() && !pass.set():
		return nil, fmt.Errorf("%w: %s needs a password (--password-file, %s or --password)", ErrConflict, user.src, EnvPassword)
	}
	var methods []string
	for _, v := range []value{r["creds"], r["nkey"], token, user} {
		if v.set() {
			methods = append(methods, v.src)
		}
	}
	if n := len(methods); n > 1 {
		list := strings.Join(methods[:n-1], ", ") + " and " + methods[n-1]
		return nil, fmt.Errorf("%w: %s are set: authenticate one way only (credentials, nkey, token, or user and password)", ErrConflict, list)
	}

	switch {
	case r["creds"].set():
		c := r["creds"]
		if err := checkCreds(c.v); err != nil {
			return nil, fmt.Errorf("natsflags: %s %s: %w", c.src, c.v, err)
		}
		return []nats.Option{nats.UserCredentials(c.v)}, nil
	case r["nkey"].set():
		k := r["nkey"]
		opt, err := nats.NkeyOptionFromSeed(k.v)
		if err != nil {
			return nil, fmt.Errorf("natsflags: %s %s: %w", k.src, k.v, err)
		}
		return []nats.Option{opt}, nil
	case token.set():
		tok := token.v
		if token.name == "token-file" {
			b, err := readSecret(token)
			if err != nil {
				return nil, err
			}
			tok = strings.TrimSpace(b)
		}
		if tok == "" {
			return nil, fmt.Errorf("natsflags: %s: the token is empty", token.src)
		}
		return []nats.Option{nats.Token(tok)}, nil
	case user.set():
		pw := pass.v
		if pass.name == "password-file" {
			b, err := readSecret(pass)
			if err != nil {
				return nil, err
			}
			pw = strings.TrimRight(b, "\r\n")
		}
		if pw == "" {
			return nil, fmt.Errorf("natsflags: %s: the password is empty", pass.src)
		}
		return []nats.Option{nats.UserInfo(user.v, pw)}, nil
	}
	return nil, nil
}

// readSecret reads the file v names; errors name the file, never its
// contents.
func readSecret(v value) (string, error) {
	b, err := os.ReadFile(v.v)
	if err != nil {
		return "", fmt.Errorf("natsflags: %s: %w", v.src, err)
	}
	return string(b), nil
}

// checkCreds checks that path holds a user JWT and a user nkey seed, so
// that a wrong file is reported now rather than at the first connect.
func checkCreds(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	defer wipe(b)
	jwt, err := nkeys.ParseDecoratedJWT(b)
	if err != nil || strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \n") {
		return fmt.Errorf("no user JWT found (want a credentials file, as written by nsc)")
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return fmt.Errorf("no user nkey seed found: %w", err)
	}
	kp.Wipe()
	return nil
}

func wipe(b []byte) {
	for i := range b {
		b[i] = 'x'
	}
}

// tlsOptions returns the TLS options, after loading the files once to
// report a bad one now.
func tlsOptions(r map[string]value) ([]nats.Option, error) {
	ca, cert, key, name := r["tls-ca"], r["tls-cert"], r["tls-key"], r["tls-server-name"]
	switch {
	case cert.set() && !key.set():
		return nil, fmt.Errorf("%w: %s needs its private key (--tls-key or %s)", ErrConflict, cert.src, EnvTLSKey)
	case key.set() && !cert.set():
		return nil, fmt.Errorf("%w: %s needs its certificate (--tls-cert or %s)", ErrConflict, key.src, EnvTLSCert)
	case !ca.set() && !cert.set() && !name.set():
		return nil, nil
	}
	// Secure comes first: RootCAs and ClientCert keep the config it sets.
	opts := []nats.Option{nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: name.v})}
	if ca.set() {
		pem, err := os.ReadFile(ca.v)
		if err != nil {
			return nil, fmt.Errorf("natsflags: %s: %w", ca.src, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("natsflags: %s %s: no PEM certificate found", ca.src, ca.v)
		}
		opts = append(opts, nats.RootCAs(ca.v))
	}
	if cert.set() {
		certPEM, err := os.ReadFile(cert.v)
		if err != nil {
			return nil, fmt.Errorf("natsflags: %s: %w", cert.src, err)
		}
		keyPEM, err := os.ReadFile(key.v)
		if err != nil {
			return nil, fmt.Errorf("natsflags: %s: %w", key.src, err)
		}
		_, err = tls.X509KeyPair(certPEM, keyPEM)
		wipe(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("natsflags: %s %s and %s %s: %w", cert.src, cert.v, key.src, key.v, err)
		}
		opts = append(opts, nats.ClientCert(cert.v, key.v))
	}
	return opts, nil
}

// LogValue describes the settings for a log line: the authentication
// method, the user name, the files and the TLS server name, never a token
// or a password.
func (f *Flags) LogValue() slog.Value {
	r := f.resolve()
	method := "none"
	switch {
	case r["creds"].set():
		method = "creds"
	case r["nkey"].set():
		method = "nkey"
	case r["token"].set() || r["token-file"].set():
		method = "token"
	case r["user"].set():
		method = "user"
	}
	attrs := []slog.Attr{slog.String("auth", method)}
	for _, name := range []string{"user", "creds", "nkey", "token-file", "password-file", "tls-ca", "tls-cert", "tls-key", "tls-server-name", "inbox-prefix"} {
		if v := r[name]; v.set() {
			attrs = append(attrs, slog.String(strings.ReplaceAll(name, "-", "_"), v.v))
		}
	}
	tlsOn := r["tls-ca"].set() || r["tls-cert"].set() || r["tls-server-name"].set()
	attrs = append(attrs, slog.Bool("tls", tlsOn))
	return slog.GroupValue(attrs...)
}

// FlagNames returns the names of the flags Register adds, in order.
func FlagNames() []string {
	out := make([]string, len(settings))
	for i, s := range settings {
		out[i] = s.flag
	}
	return out
}
