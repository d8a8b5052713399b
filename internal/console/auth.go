package console

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Role is what a console user may do.
type Role string

// Roles.
const (
	// Viewer sees every page and can change nothing: every action
	// answers 403.
	Viewer Role = "viewer"
	// Operator may also replay, purge and cancel.
	Operator Role = "operator"
)

// ErrNoAuth is returned by New for a listen address off loopback without
// a token or credentials file.
var ErrNoAuth = errors.New("console: a listen address other than loopback needs authentication (--console-token-file or --console-users)")

// User is who made a request.
type User struct {
	Name string
	Role Role
}

// CanAct reports whether u may run actions.
func (u User) CanAct() bool { return u.Role == Operator }

// credential is one line of a credentials file, or the token.
type credential struct {
	name   string
	role   Role
	secret string // plain text, or a bcrypt hash ("$2a$", "$2b$", "$2y$")
}

func (c credential) matches(secret string) bool {
	if isBcrypt(c.secret) {
		return bcrypt.CompareHashAndPassword([]byte(c.secret), []byte(secret)) == nil
	}
	return subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) == 1
}

func isBcrypt(s string) bool {
	return strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")
}

// Auth says who may use the console. The zero value has no
// authentication: every request is user "local" with the operator role
// (or viewer, with ReadOnly), which New allows on loopback addresses only.
type Auth struct {
	creds []credential
	// ReadOnly gives every user the viewer role, whatever the file says.
	ReadOnly bool
}

// Enabled reports whether requests must authenticate.
func (a *Auth) Enabled() bool { return len(a.creds) > 0 }

// AddToken lets requests authenticate with token, with the operator role:
// as "Authorization: Bearer <token>", or in a browser as the password of
// HTTP basic authentication (any user name; the name is shown as "token").
// An empty token is an error.
func (a *Auth) AddToken(token string) error {
	token = strings.TrimSpace(token)
	if token == "" {
		return errors.New("console: the token is empty")
	}
	a.creds = append(a.creds, credential{name: "token", role: Operator, secret: token})
	return nil
}

// LoadTokenFile reads a token from path (surrounding white space
// trimmed); see AddToken.
func (a *Auth) LoadTokenFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("console: token file: %w", err)
	}
	if err := a.AddToken(string(b)); err != nil {
		return fmt.Errorf("%w (%s)", err, path)
	}
	return nil
}

// LoadCredentialsFile reads users for HTTP basic authentication from
// path: one "name:role:secret" per line, role "operator" or "viewer",
// secret a bcrypt hash (as `htpasswd -nbB` writes, or `mkpasswd -m
// bcrypt`) or the password itself; blank lines and lines starting with
// '#' are skipped. A malformed line is an error naming its number (never
// its content).
func (a *Auth) LoadCredentialsFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("console: credentials file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n, added := 0, 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, ok1 := strings.Cut(line, ":")
		role, secret, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || name == "" || secret == "" {
			return fmt.Errorf("console: credentials file %s:%d: want name:role:secret", path, n)
		}
		if r := Role(role); r != Operator && r != Viewer {
			return fmt.Errorf("console: credentials file %s:%d: role %q: want operator or viewer", path, n, role)
		}
		a.creds = append(a.creds, credential{name: name, role: Role(role), secret: secret})
		added++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("console: credentials file: %w", err)
	}
	if added == 0 {
		return fmt.Errorf("console: credentials file %s has no users", path)
	}
	return nil
}

// authenticate returns the request's user, or false.
func (a *Auth) authenticate(r *http.Request) (User, bool) {
	if !a.Enabled() {
		return a.limit(User{Name: "local", Role: Operator}), true
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		tok := strings.TrimPrefix(h, "Bearer ")
		for _, c := range a.creds {
			if c.name == "token" && c.matches(tok) {
				return a.limit(User{Name: c.name, Role: c.role}), true
			}
		}
		return User{}, false
	}
	name, pw, ok := r.BasicAuth()
	if !ok {
		return User{}, false
	}
	for _, c := range a.creds {
		if c.name == "token" && c.matches(pw) {
			return a.limit(User{Name: "token", Role: c.role}), true
		}
	}
	for _, c := range a.creds {
		if c.name == name && c.name != "token" && c.matches(pw) {
			return a.limit(User{Name: c.name, Role: c.role}), true
		}
	}
	return User{}, false
}

func (a *Auth) limit(u User) User {
	if a.ReadOnly {
		u.Role = Viewer
	}
	return u
}

// isLoopback reports whether addr's host is a loopback address or
// "localhost".
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackHost reports whether a Host header names this machine: with no
// authentication, a page asked for under another name may come from a
// site that re-pointed its DNS name at 127.0.0.1 (DNS rebinding).
func loopbackHost(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
