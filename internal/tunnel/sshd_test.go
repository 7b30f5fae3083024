package tunnel

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

// TestLocalForwardThroughRealSSHD carries data through a LocalForward of
// a real OpenSSH sshd, with the host key checked strictly against a
// known_hosts file holding the server's key.
func TestLocalForwardThroughRealSSHD(t *testing.T) {
	srv := sshdtest.Start(t, sshdtest.Options{})
	kh := sshdKnownHosts(t, srv)
	echo := echoServer(t)
	eh, ep, _ := net.SplitHostPort(echo)
	epn, _ := strconv.Atoi(ep)
	lport := freeLocalPort(t)
	spec := Spec{
		Host: "sshdtest", HostName: srv.Addr, Port: srv.Port, User: srv.User,
		IdentityFiles: []string{srv.ClientKey}, IdentitiesOnly: true,
		UserKnownHostsFiles:   []string{kh},
		StrictHostKeyChecking: HostKeyStrict,
		ServerAliveInterval:   time.Second, ServerAliveCountMax: 3,
		ConnectTimeout: 5 * time.Second,
		Forwards:       []Forward{{Kind: Local, BindHost: "127.0.0.1", BindPort: lport, DestHost: eh, DestPort: epn}},
	}
	tun := New(spec, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	runTunnel(t, tun)
	within(t, 10*time.Second, "up", func() bool { return tun.Status().State == StateUp })
	for i := range 3 {
		if err := roundTrip(net.JoinHostPort("127.0.0.1", strconv.Itoa(lport)), "through sshd "+strconv.Itoa(i)); err != nil {
			t.Fatalf("round trip %d: %v\nstatus %+v\nsshd log:\n%s", i, err, tun.Status(), srv.Log())
		}
	}
	within(t, 3*time.Second, "keepalive answered by sshd", func() bool { return tun.Status().KeepaliveRTT > 0 })
	t.Logf("keepalive RTT with sshd: %s", tun.Status().KeepaliveRTT)
}

// sshdKnownHosts writes a known_hosts file holding srv's host key.
func sshdKnownHosts(tb testing.TB, srv *sshdtest.Server) string {
	pub, err := os.ReadFile(filepath.Join(srv.Dir, "host_ed25519.pub"))
	if err != nil {
		tb.Fatal(err)
	}
	kh := filepath.Join(tb.TempDir(), "known_hosts")
	host := "[" + srv.Addr + "]:" + strconv.Itoa(srv.Port)
	if err := os.WriteFile(kh, []byte(host+" "+strings.TrimSpace(string(pub))+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	return kh
}
