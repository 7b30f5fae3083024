package openvpntest

import (
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// ClientOptions configure Connect.
type ClientOptions struct {
	// Username and Password are sent with auth-user-pass when Username is
	// set (the server needs Options.Users).
	Username, Password string
	// ExtraConfig are client configuration lines added at the end.
	ExtraConfig []string
}

// Client is a running openvpn client.
type Client struct {
	// CN is its certificate's common name.
	CN string
	// ReadyAt is when the harness read "Initialization Sequence
	// Completed" from the client.
	ReadyAt time.Time
	// Device is its tun device, VirtualAddr its address in the VPN.
	Device, VirtualAddr string
	// StoppedAt is when Stop or Kill sent the signal.
	StoppedAt time.Time

	t      testing.TB
	server *Server
	proc   *process
}

var (
	tunOpened = regexp.MustCompile(`TUN/TAP device (\S+) opened`)
	addrAdded = regexp.MustCompile(`net_addr_v4_add: ([0-9.]+)/\d+ dev`)
)

// Connect starts a client with a certificate for cn in the client
// namespace and waits (at most 20 s) for "Initialization Sequence
// Completed". t.Cleanup stops it.
func (s *Server) Connect(t testing.TB, cn string, o ClientOptions) *Client {
	t.Helper()
	openvpn := netnstest.RequireBinary(t, "openvpn")
	s.mu.Lock()
	s.clients++
	name := fmt.Sprintf("client%d", s.clients)
	s.mu.Unlock()
	cert, key, err := s.pki.issue(name, cn, x509.ExtKeyUsageClientAuth)
	if err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	proto := s.opts.Proto
	if s.opts.IPv6 {
		proto += "6"
	}
	if proto == "tcp" || proto == "tcp6" {
		proto += "-client"
	}
	conf := []string{
		"client",
		"dev tun",
		"proto " + proto,
		"remote " + s.ServerAddr + " " + strconv.Itoa(Port),
		"nobind",
		"ca " + s.pki.CAFile,
		"cert " + cert,
		"key " + key,
		"remote-cert-tls server",
		"connect-retry 1",
		"verb 3",
	}
	if s.opts.Proto == "udp" {
		conf = append(conf, "explicit-exit-notify 1")
	}
	if o.Username != "" {
		pass := filepath.Join(s.Dir, name+".pass")
		if err := writeFile(pass, o.Username+"\n"+o.Password+"\n", 0o600); err != nil {
			t.Fatalf("openvpntest: %v", err)
		}
		conf = append(conf, "auth-user-pass "+pass)
	}
	conf = append(conf, o.ExtraConfig...)
	path := filepath.Join(s.Dir, name+".conf")
	if err := writeFile(path, strings.Join(conf, "\n")+"\n", 0o644); err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	proc, err := startProcess(s.ClientNS, openvpn, "--config", path)
	if err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	c := &Client{CN: cn, t: t, server: s, proc: proc}
	t.Cleanup(func() { c.stop(syscall.SIGTERM) })
	ln, i, err := proc.log.waitFor(0, connectTimeout, InitDone, "AUTH_FAILED", "Exiting due to fatal error")
	if err == nil && i != 0 {
		err = fmt.Errorf("client failed: %s", ln.Text)
	}
	if err != nil {
		t.Fatalf("openvpntest: connect %s: %v\nclient log:\n%s\nserver log:\n%s", cn, err, tail(c.Log(), 6000), tail(s.Log(), 6000))
	}
	c.ReadyAt = ln.At
	for _, l := range proc.log.Lines() {
		if m := tunOpened.FindStringSubmatch(l.Text); m != nil {
			c.Device = m[1]
		}
		if m := addrAdded.FindStringSubmatch(l.Text); m != nil {
			c.VirtualAddr = m[1]
		}
	}
	if c.Device == "" || net.ParseIP(c.VirtualAddr) == nil {
		t.Fatalf("openvpntest: connect %s: no tun device or address in the client log:\n%s", cn, tail(c.Log(), 6000))
	}
	return c
}

// Log returns what the client printed so far.
func (c *Client) Log() string { return c.proc.log.String() }

// Ping sends count pings through the tunnel to the server's VPN address
// and fails the test unless all are answered.
func (c *Client) Ping(t testing.TB, count int) {
	t.Helper()
	out, err := c.server.ClientNS.Command("ping", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2", "-I", c.Device, c.server.ServerVPNAddr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), fmt.Sprintf(" %d received", count)) {
		t.Fatalf("openvpntest: ping %s through %s: %v: %s", c.server.ServerVPNAddr, c.Device, err, out)
	}
}

// Stop sends SIGTERM, so that the client tells the server it leaves
// (explicit-exit-notify over UDP, the TCP connection's close over TCP),
// and waits at most 10 s for it to exit (then kills it). It returns
// whether it exited by itself.
func (c *Client) Stop() bool { return c.stop(syscall.SIGTERM) }

// Kill sends SIGKILL: the server learns of it only by its keepalive
// timeout (UDP) or the connection's reset (TCP).
func (c *Client) Kill() { c.stop(syscall.SIGKILL) }

func (c *Client) stop(sig syscall.Signal) bool {
	if testproc.IsClosed(c.proc.done) {
		return true
	}
	c.StoppedAt = time.Now()
	return c.proc.stop(c.t, sig, stopTimeout)
}

// Exited is closed when the client process has exited and been reaped.
func (c *Client) Exited() <-chan struct{} { return c.proc.done }
