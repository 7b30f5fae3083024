package tunnel

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// startAgent serves an in-process ssh-agent holding keys on a unix
// socket in dir until the test ends, and returns the socket path.
func startAgent(t *testing.T, dir string, keys ...any) string {
	kr := agent.NewKeyring()
	for _, k := range keys {
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, ln, func(c net.Conn) { _ = agent.ServeAgent(kr, c); c.Close() })
	return sock
}

func TestAgentAuth(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	blk, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "id_protected")
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, signer.PublicKey())
	base := Spec{
		Host: "t", HostName: "127.0.0.1", Port: srv.port(), User: "u",
		UserKnownHostsFiles:   []string{srv.knownHosts(t, dir)},
		StrictHostKeyChecking: HostKeyStrict, ServerAliveInterval: time.Second, ServerAliveCountMax: 3,
		ConnectTimeout: 3 * time.Second,
	}
	connect := func(sp Spec, sock string) error {
		tun := New(sp, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: sock})
		c, _, err := tun.connect(context.Background())
		if err == nil {
			c.Close()
		}
		return err
	}
	sock := startAgent(t, dir, priv)
	other, _ := clientKey(t, t.TempDir()) // an unprotected key the server refuses

	cases := []struct {
		name  string
		files []string
		only  bool
		sock  string
		want  string // "" = success, else a substring of the error
	}{
		{"protected file, key in agent, IdentitiesOnly", []string{keyPath}, true, sock, ""},
		{"protected file, key in agent", []string{keyPath}, false, sock, ""},
		{"no identity files, agent keys", nil, false, sock, ""},
		{"refused file first, then agent", []string{other}, false, sock, ""},
		{"refused file, IdentitiesOnly hides agent", []string{other}, true, sock, "unable to authenticate"},
		{"protected file, no agent", []string{keyPath}, true, filepath.Join(dir, "nonexistent"), "not in ssh-agent"},
	}
	for _, c := range cases {
		sp := base
		sp.IdentityFiles, sp.IdentitiesOnly = c.files, c.only
		err := connect(sp, c.sock)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}

	// And a whole Run through the agent carries a LocalForward.
	echo := echoServer(t)
	eh, ep, _ := net.SplitHostPort(echo)
	lport := freeLocalPort(t)
	sp := base
	sp.IdentityFiles, sp.IdentitiesOnly = []string{keyPath}, true
	sp.Forwards = []Forward{{Kind: Local, BindHost: "127.0.0.1", BindPort: lport, DestHost: eh, DestPort: atoi(t, ep)}}
	tun := New(sp, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: sock})
	runTunnel(t, tun)
	within(t, 5*time.Second, "up through the agent", func() bool { return tun.Status().State == StateUp })
	if err := roundTrip(net.JoinHostPort("127.0.0.1", itoa(lport)), "agent"); err != nil {
		t.Fatal(err)
	}
}

func atoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func itoa(n int) string { return strconv.Itoa(n) }
