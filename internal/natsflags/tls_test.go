package natsflags_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jetagent/jetagent/bus"
	"github.com/jetagent/jetagent/internal/natsflags"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// pki is a throwaway certificate authority with a server and a client
// certificate, plus an unrelated CA, all as PEM files.
type pki struct {
	caFile, otherCAFile       string
	serverCert, serverKey     string
	clientCert, clientKey     string
	strangerCert, strangerKey string // a client certificate signed by the other CA
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	ca, caKey := newCA(t, "jetagent test CA")
	other, otherKey := newCA(t, "some other CA")
	p := &pki{
		caFile:      writeFile(t, dir, "ca.pem", pemCert(ca)),
		otherCAFile: writeFile(t, dir, "other-ca.pem", pemCert(other)),
	}
	srv, srvKey := issue(t, ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "nats.test"},
		DNSNames:    []string{"nats.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	p.serverCert, p.serverKey = writeFile(t, dir, "server.pem", pemCert(srv)), writeFile(t, dir, "server-key.pem", pemKey(t, srvKey))
	cli, cliKey := issue(t, ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "agent-A"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.clientCert, p.clientKey = writeFile(t, dir, "client.pem", pemCert(cli)), writeFile(t, dir, "client-key.pem", pemKey(t, cliKey))
	str, strKey := issue(t, other, otherKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "stranger"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	p.strangerCert, p.strangerKey = writeFile(t, dir, "stranger.pem", pemCert(str)), writeFile(t, dir, "stranger-key.pem", pemKey(t, strKey))
	return p
}

var serial int64

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func issue(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func pemKey(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// startTLSServer starts a server presenting p's server certificate; with
// verify, it also requires a client certificate signed by p's CA.
func startTLSServer(t *testing.T, p *pki, verify bool) *server.Server {
	t.Helper()
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.caFile, Verify: verify})
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, &server.Options{TLSConfig: tc, TLSVerify: verify, TLSTimeout: 5})
}

// assertTLS checks that err is nil and the connection is encrypted.
func assertTLS(t *testing.T, what string, conn *bus.Conn, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	st, err := conn.NATS().TLSConnectionState()
	if err != nil || !st.HandshakeComplete {
		t.Fatalf("%s: not a TLS connection (%v)", what, err)
	}
}

func TestTLSWithTheServersCA(t *testing.T) {
	cleanEnv(t)
	p := newPKI(t, t.TempDir())
	srv := startTLSServer(t, p, false)
	url := srv.ClientURL()

	conn, err := connect(t, url, parse(t, "--tls-ca", p.caFile))
	assertTLS(t, "--tls-ca", conn, err)

	// The certificate is for 127.0.0.1 and nats.test: --tls-server-name
	// checks the name asked for.
	conn, err = connect(t, url, parse(t, "--tls-ca", p.caFile, "--tls-server-name", "nats.test"))
	assertTLS(t, "--tls-server-name nats.test", conn, err)

	_, err = connect(t, url, parse(t, "--tls-ca", p.caFile, "--tls-server-name", "wrong.test"))
	var hostErr x509.HostnameError
	if !errors.As(err, &hostErr) || !errors.Is(err, nats.ErrTLS) {
		t.Fatalf("--tls-server-name wrong.test: err = %v, want an x509.HostnameError wrapped in nats.ErrTLS", err)
	}
	if !strings.Contains(err.Error(), "certificate is valid for nats.test, not wrong.test") {
		t.Errorf("error %q does not say which name the certificate carries", err)
	}
}

func TestTLSWithAnotherCAFailsClearly(t *testing.T) {
	cleanEnv(t)
	p := newPKI(t, t.TempDir())
	srv := startTLSServer(t, p, false)
	_, err := connect(t, srv.ClientURL(), parse(t, "--tls-ca", p.otherCAFile))
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) || !errors.Is(err, nats.ErrTLS) {
		t.Fatalf("err = %v, want an x509.UnknownAuthorityError wrapped in nats.ErrTLS", err)
	}
	want := "bus: connect " + srv.ClientURL() + ": nats: tls error: tls: failed to verify certificate: x509: certificate signed by unknown authority"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\ndoes not start with %q", err, want)
	}
}

func TestMutualTLS(t *testing.T) {
	cleanEnv(t)
	p := newPKI(t, t.TempDir())
	srv := startTLSServer(t, p, true)
	url := srv.ClientURL()

	conn, err := connect(t, url, parse(t, "--tls-ca", p.caFile, "--tls-cert", p.clientCert, "--tls-key", p.clientKey))
	assertTLS(t, "with a client certificate", conn, err)
	st, _ := conn.NATS().TLSConnectionState()
	if len(st.PeerCertificates) == 0 || st.PeerCertificates[0].Subject.CommonName != "nats.test" {
		t.Errorf("server certificate %v", st.PeerCertificates)
	}

	// The same from the environment.
	t.Setenv(natsflags.EnvTLSCA, p.caFile)
	t.Setenv(natsflags.EnvTLSCert, p.clientCert)
	t.Setenv(natsflags.EnvTLSKey, p.clientKey)
	conn, err = connect(t, url, parse(t))
	assertTLS(t, "settings from the environment", conn, err)
	cleanEnv(t)

	// Without a client certificate, or with one the server's CA did not
	// sign, the server ends the handshake. (With TLS 1.3 the client learns
	// it after its own side of the handshake: by the server's alert, e.g.
	// "remote error: tls: certificate required", or by a write on the
	// closed connection, whichever comes first.)
	for name, args := range map[string][]string{
		"no client certificate":     {"--tls-ca", p.caFile},
		"certificate of another CA": {"--tls-ca", p.caFile, "--tls-cert", p.strangerCert, "--tls-key", p.strangerKey},
	} {
		if _, err := connect(t, url, parse(t, args...)); err == nil {
			t.Errorf("%s: connected", name)
		}
	}
}
