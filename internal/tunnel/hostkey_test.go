package tunnel

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// hostKeySetup is a server, a client key and a Spec without known_hosts
// content yet.
type hostKeySetup struct {
	srv  *testServer
	spec Spec
	kh   string
}

func setupHostKey(t *testing.T, hk ssh.Signer) hostKeySetup {
	dir := t.TempDir()
	key, pub := clientKey(t, dir)
	srv := newTestServerWithHostKey(t, pub, hk)
	kh := filepath.Join(dir, "known_hosts")
	return hostKeySetup{srv: srv, kh: kh, spec: Spec{
		Host: "t", HostName: "127.0.0.1", Port: srv.port(), User: "u",
		IdentityFiles: []string{key}, IdentitiesOnly: true, UserKnownHostsFiles: []string{kh},
		StrictHostKeyChecking: HostKeyStrict, ServerAliveInterval: time.Second, ServerAliveCountMax: 3,
		ConnectTimeout: 3 * time.Second,
	}}
}

// connectWith writes known_hosts lines and tries one connection under policy.
func (s hostKeySetup) connectWith(t *testing.T, policy HostKeyPolicy, lines ...string) error {
	t.Helper()
	if err := os.WriteFile(s.kh, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sp := s.spec
	sp.StrictHostKeyChecking = policy
	tun := New(sp, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	c, _, err := tun.connect(context.Background())
	if err == nil {
		c.Close()
	}
	return err
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func hostCert(t *testing.T, ca, hk ssh.Signer, principals ...string) ssh.Signer {
	cert := &ssh.Certificate{
		Key: hk.PublicKey(), CertType: ssh.HostCert, KeyId: "test-host",
		ValidPrincipals: principals, ValidAfter: 0, ValidBefore: ssh.CertTimeInfinity,
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewCertSigner(cert, hk)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestHashedKnownHosts(t *testing.T) {
	hk := newSigner(t)
	s := setupHostKey(t, hk)
	hashed := knownhosts.HashHostname(knownhosts.Normalize(s.srv.addr))
	if !strings.HasPrefix(hashed, "|1|") {
		t.Fatalf("hashed name %q", hashed)
	}
	if err := s.connectWith(t, HostKeyStrict, hashed+" "+authorized(hk.PublicKey())); err != nil {
		t.Fatalf("hashed known host: %v", err)
	}
	other := newSigner(t)
	if err := s.connectWith(t, HostKeyAcceptNew, hashed+" "+authorized(other.PublicKey())); !errors.Is(err, ErrHostKey) {
		t.Fatalf("hashed known host, other key: err = %v, want ErrHostKey", err)
	}
	// A hashed line for another port does not match.
	wrong := knownhosts.HashHostname(knownhosts.Normalize("127.0.0.1:1"))
	if err := s.connectWith(t, HostKeyStrict, wrong+" "+authorized(hk.PublicKey())); !errors.Is(err, ErrHostKey) {
		t.Fatalf("hashed line of another port: err = %v, want ErrHostKey", err)
	}
}

func TestCertAuthority(t *testing.T) {
	ca, hk := newSigner(t), newSigner(t)
	s := setupHostKey(t, hostCert(t, ca, hk, "127.0.0.1"))
	pattern := knownhosts.Normalize(s.srv.addr)
	caLine := "@cert-authority " + pattern + " " + authorized(ca.PublicKey())
	if err := s.connectWith(t, HostKeyStrict, caLine); err != nil {
		t.Fatalf("@cert-authority: %v", err)
	}
	// With ssh -G's algorithm list (plain algorithms listed first).
	s2 := s
	s2.spec.HostKeyAlgorithms = []string{ssh.KeyAlgoED25519, ssh.CertAlgoED25519v01}
	if err := s2.connectWith(t, HostKeyStrict, caLine); err != nil {
		t.Fatalf("@cert-authority with HostKeyAlgorithms: %v", err)
	}
	// A wildcard pattern. (x/crypto/ssh/knownhosts gives a pattern
	// without brackets port 22 only, where OpenSSH's "*" matches
	// "[host]:port" too; so the port is spelled out.)
	wild := "@cert-authority [127.0.0.*]:" + strconv.Itoa(s.srv.port()) + " " + authorized(ca.PublicKey())
	if err := s.connectWith(t, HostKeyStrict, wild); err != nil {
		t.Fatalf("@cert-authority with a wildcard: %v", err)
	}
	// A hashed @cert-authority line.
	hashedCA := "@cert-authority " + knownhosts.HashHostname(pattern) + " " + authorized(ca.PublicKey())
	if err := s.connectWith(t, HostKeyStrict, hashedCA); err != nil {
		t.Fatalf("hashed @cert-authority: %v", err)
	}
	// Another CA: not trusted; the plain key is unknown.
	if err := s.connectWith(t, HostKeyStrict, "@cert-authority * "+authorized(newSigner(t).PublicKey())); !errors.Is(err, ErrHostKey) {
		t.Fatalf("untrusted CA: err = %v, want ErrHostKey", err)
	}
	// Untrusted CA but the plain key is known: accepted, as ssh does.
	if err := s.connectWith(t, HostKeyStrict, pattern+" "+authorized(hk.PublicKey())); err != nil {
		t.Fatalf("cert of untrusted CA, plain key known: %v", err)
	}
	// Revoked CA: refused even with StrictHostKeyChecking no.
	if err := s.connectWith(t, HostKeyOff, caLine, "@revoked * "+authorized(ca.PublicKey())); !errors.Is(err, ErrHostKey) {
		t.Fatalf("revoked CA: err = %v, want ErrHostKey", err)
	}
	// Revoked host key under a valid cert: refused.
	if err := s.connectWith(t, HostKeyStrict, caLine, "@revoked * "+authorized(hk.PublicKey())); !errors.Is(err, ErrHostKey) {
		t.Fatalf("revoked key in cert: err = %v, want ErrHostKey", err)
	}
}

func TestCertAuthorityWrongPrincipal(t *testing.T) {
	ca, hk := newSigner(t), newSigner(t)
	s := setupHostKey(t, hostCert(t, ca, hk, "other.example"))
	caLine := "@cert-authority " + knownhosts.Normalize(s.srv.addr) + " " + authorized(ca.PublicKey())
	if err := s.connectWith(t, HostKeyStrict, caLine); !errors.Is(err, ErrHostKey) {
		t.Fatalf("cert for another principal: err = %v, want ErrHostKey", err)
	}
}

func TestRevokedHostKey(t *testing.T) {
	hk := newSigner(t)
	s := setupHostKey(t, hk)
	known := knownhosts.Normalize(s.srv.addr) + " " + authorized(hk.PublicKey())
	rev := "@revoked * " + authorized(hk.PublicKey())
	for _, p := range []HostKeyPolicy{HostKeyStrict, HostKeyAcceptNew, HostKeyOff} {
		err := s.connectWith(t, p, known, rev)
		if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "revoked") {
			t.Errorf("%s: revoked key: err = %v, want ErrHostKey (revoked)", p, err)
		}
	}
	// accept-new must not add a revoked key either.
	if err := s.connectWith(t, HostKeyAcceptNew, rev); !errors.Is(err, ErrHostKey) {
		t.Errorf("accept-new, revoked unknown key: err = %v", err)
	}
	if b, _ := os.ReadFile(s.kh); strings.Count(string(b), "\n") != 1 {
		t.Errorf("known_hosts after refusing a revoked key: %q", b)
	}
	// Without the @revoked line, off accepts anything.
	if err := s.connectWith(t, HostKeyOff); err != nil {
		t.Errorf("off: %v", err)
	}
}
