package natsflags

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/pflag"
)

// Environment variables of the server's address, by precedence: jetagent's
// own, then the nats CLI's.
const (
	EnvURL         = "JETAGENT_NATS_URL"
	EnvNATSURL     = "NATS_URL"
	EnvNATSContext = "NATS_CONTEXT"
)

// Server is which NATS server a command joins: --nats (or -s, like the
// nats CLI) and --context, a nats CLI context. Register binds them; URL
// resolves them.
type Server struct {
	// Flag is --nats / -s; "" when not given.
	Flag string
	// Context is --context: the name of a nats CLI context (a file
	// NAME.json in $XDG_CONFIG_HOME/nats/context, else
	// ~/.config/nats/context), or the path of such a file. "" when not
	// given: then $NATS_CONTEXT. The context selected with "nats context
	// select" is not applied unless named.
	Context string

	ctx *natsContext // loaded by URL
}

// Register adds --nats (shorthand -s) and --context to fs. what says what
// an absent URL means for this command, e.g. "default nats://127.0.0.1:4222".
func (s *Server) Register(fs *pflag.FlagSet, what string) {
	fs.StringVarP(&s.Flag, "nats", "s", "", "`URL` of the NATS server, or comma-separated cluster URLs; "+what+" [$"+EnvURL+", $"+EnvNATSURL+"]")
	fs.StringVar(&s.Context, "context", "", "nats CLI context `NAME` (or .json file) giving the URL, credentials and TLS files [$"+EnvNATSContext+"]")
}

// URL returns the server's URL: --nats, else $JETAGENT_NATS_URL, else
// $NATS_URL, else the context's, else def. It loads the context (see
// Apply), returning an error naming the file when it cannot be read or
// uses what jetagent does not support (JetStream domains, API prefixes).
func (s *Server) URL(def string) (string, error) {
	if err := s.load(); err != nil {
		return "", err
	}
	for _, v := range []string{s.Flag, os.Getenv(EnvURL), os.Getenv(EnvNATSURL)} {
		if v != "" {
			return v, nil
		}
	}
	if s.ctx != nil && s.ctx.URL != "" {
		return s.ctx.URL, nil
	}
	return def, nil
}

// Given reports whether a server was named: by flag, variable or context.
func (s *Server) Given() bool {
	u, err := s.URL("")
	return err != nil || u != ""
}

// Apply fills the security settings of f that neither a flag nor a
// JETAGENT_NATS_* variable gives from the context's (creds, nkey, token,
// user and password, TLS files, inbox prefix). A context that cannot be
// loaded applies nothing (URL reports why).
func (s *Server) Apply(f *Flags) {
	if s.load() != nil || s.ctx == nil {
		return
	}
	c := s.ctx
	for field, v := range map[*string]string{
		&f.Creds: c.Creds, &f.NKey: c.NKey, &f.Token: c.Token, &f.User: c.User, &f.Password: c.Password,
		&f.TLSCA: c.CA, &f.TLSCert: c.Cert, &f.TLSKey: c.Key, &f.InboxPrefix: c.InboxPrefix,
	} {
		if v == "" || *field != "" {
			continue
		}
		if env := envOf(f, field); env != "" && os.Getenv(env) != "" {
			continue
		}
		*field = v
	}
}

// envOf names the variable of field (a field of f).
func envOf(f *Flags, field *string) string {
	for _, st := range settings {
		if st.field(f) == field {
			return st.env
		}
	}
	return ""
}

// natsContext is the part of a nats CLI context file jetagent reads.
type natsContext struct {
	path string

	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `json:"inbox_prefix"`
	// Unsupported: jetagent addresses JetStream's default API only.
	JSDomain    string `json:"jetstream_domain"`
	JSAPIPrefix string `json:"jetstream_api_prefix"`
	UserJWT     string `json:"user_jwt"`
}

// ContextDir returns the directory of the nats CLI's contexts.
func ContextDir() (string, error) {
	base := os.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("natsflags: nats contexts: %w", err)
		}
		base = filepath.Join(home, ".config")
	}
	return filepath.Join(base, "nats", "context"), nil
}

func (s *Server) load() error {
	name := s.Context
	src := "--context"
	if name == "" {
		name, src = os.Getenv(EnvNATSContext), EnvNATSContext
	}
	if name == "" || s.ctx != nil {
		return nil
	}
	path := name
	if !strings.ContainsRune(name, os.PathSeparator) && !strings.HasSuffix(name, ".json") {
		dir, err := ContextDir()
		if err != nil {
			return err
		}
		path = filepath.Join(dir, name+".json")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("natsflags: %s %s: no such context (%s does not exist%s)", src, name, path, knownContexts(path))
	}
	if err != nil {
		return fmt.Errorf("natsflags: %s %s: %w", src, name, err)
	}
	c := &natsContext{path: path}
	if err := json.Unmarshal(b, c); err != nil {
		return fmt.Errorf("natsflags: %s %s: %s is not a nats context: %w", src, name, path, err)
	}
	switch {
	case c.JSDomain != "" || c.JSAPIPrefix != "":
		return fmt.Errorf("natsflags: %s %s: JetStream domains and API prefixes are not supported by jetagent", src, name)
	case c.UserJWT != "":
		return fmt.Errorf("natsflags: %s %s: user_jwt is not supported: use a credentials file (creds)", src, name)
	}
	s.ctx = c
	return nil
}

// knownContexts lists the contexts beside path, for an error message.
func knownContexts(path string) string {
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "*.json"))
	var names []string
	for _, f := range files {
		names = append(names, strings.TrimSuffix(filepath.Base(f), ".json"))
	}
	if len(names) == 0 {
		return ""
	}
	sort.Strings(names)
	return "; known: " + strings.Join(names, ", ")
}

// ErrNoJetStream is wrapped by CheckJetStream's error when the server has
// JetStream disabled.
var ErrNoJetStream = errors.New("JetStream is not enabled on this NATS server (start nats-server with -js, or jetstream {} in its configuration)")

// CheckJetStream tells why a JetStream request found nobody to answer it:
// it returns an error wrapping ErrNoJetStream when the server (or the
// account) has no JetStream, and nil when it has, or when the user may not
// ask (the caller's own error then stands). Call it after an error such
// as nats.ErrNoResponders or jetstream.ErrNoStreamResponse.
func CheckJetStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.AccountInfo(ctx)
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) ||
		errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("natsflags: %w", ErrNoJetStream)
	}
	return nil
}

// NoResponders reports whether err says that no server component answered
// a request: the sign of a server without JetStream, or without the
// stream a publish is meant for.
func NoResponders(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}
