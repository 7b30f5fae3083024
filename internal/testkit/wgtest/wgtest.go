// Package wgtest runs real userspace WireGuard devices (wireguard-go,
// configured with wg) in network namespaces made by netnstest, for tests
// of code that reads WireGuard peers. The devices' UAPI sockets are in
// /var/run/wireguard, shared by every namespace, so device names are
// random.
package wgtest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// The server's port and tunnel address.
const (
	ServerPort = 51820
	// TunnelNet is the tunnel's /24, inside the test's namespaces only.
	TunnelNet = "10.232.0."
	ServerIP  = TunnelNet + "1"
)

// Daemon is a wireguard-go process running one device in a namespace.
type Daemon struct {
	NS    *netnstest.NS
	Iface string
	Sock  string
	Key   wgtypes.Key
	out   *testproc.Buffer
	proc  *os.Process
	done  chan struct{}
}

// Require skips (or fails under CI=true) without root, wireguard-go,
// wg, ping or /dev/net/tun.
func Require(t testing.TB) {
	t.Helper()
	netnstest.Require(t, "root", os.Geteuid() == 0)
	netnstest.RequireBinary(t, "wireguard-go")
	netnstest.RequireBinary(t, "wg")
	netnstest.RequireBinary(t, "ping")
	_, err := os.Stat("/dev/net/tun")
	netnstest.Require(t, fmt.Sprintf("/dev/net/tun (%v)", err), err == nil)
}

// Start runs wireguard-go for a new device with a unique name (the
// UAPI socket directory is shared by every namespace) and waits for its
// socket.
func Start(t testing.TB, ns *netnstest.NS) *Daemon {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	iface := "cwwg" + hex.EncodeToString(b[:])
	d := &Daemon{NS: ns, Iface: iface, Sock: filepath.Join("/var/run/wireguard", iface+".sock"), out: &testproc.Buffer{}, done: make(chan struct{})}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	d.Key = key
	cmd := ns.Command("wireguard-go", "-f", iface)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start wireguard-go: %v", err)
	}
	d.proc = cmd.Process
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	ns.AfterKill(func() {
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			t.Errorf("wireguard-go %s did not exit", iface)
		}
		// Killed with SIGKILL, it leaves its socket behind.
		if err := os.Remove(d.Sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove stale socket: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(d.Sock); err == nil {
			break
		}
		select {
		case <-d.done:
			t.Fatalf("wireguard-go %s exited before making its socket: %s", iface, d.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket %s after 5s: %s", d.Sock, d.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	keyFile := filepath.Join(t.TempDir(), iface+".key")
	if err := os.WriteFile(keyFile, []byte(key.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ns.Run(t, "wg", "set", iface, "private-key", keyFile)
	return d
}

// Up gives the device its tunnel address and brings it up.
func (d *Daemon) Up(t testing.TB, addr string) {
	t.Helper()
	netnstest.Run(t, "", "ip", "-n", d.NS.Name, "addr", "add", addr+"/24", "dev", d.Iface)
	netnstest.Run(t, "", "ip", "-n", d.NS.Name, "link", "set", d.Iface, "up")
}

// Pub is the device's public key.
func (d *Daemon) Pub() string { return d.Key.PublicKey().String() }

// Stop sends sig and waits for the Daemon to exit.
func (d *Daemon) Stop(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := d.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal wireguard-go %s: %v", d.Iface, err)
	}
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("wireguard-go %s did not exit on %v", d.Iface, sig)
	}
}

// Server starts the server device in ns.
func Server(t testing.TB, ns *netnstest.NS) *Daemon {
	t.Helper()
	d := Start(t, ns)
	ns.Run(t, "wg", "set", d.Iface, "listen-port", strconv.Itoa(ServerPort))
	d.Up(t, ServerIP)
	return d
}

// Client starts a client device in ns, listening on port, with the
// tunnel address addr, and configures it on srv as a peer.
func Client(t testing.TB, ns *netnstest.NS, srv *Daemon, srvLinkAddr string, port int, addr string) *Daemon {
	t.Helper()
	c := Start(t, ns)
	ns.Run(t, "wg", "set", c.Iface, "listen-port", strconv.Itoa(port),
		"peer", srv.Pub(), "endpoint", fmt.Sprintf("%s:%d", srvLinkAddr, ServerPort), "allowed-ips", ServerIP+"/32")
	c.Up(t, addr)
	srv.NS.Run(t, "wg", "set", srv.Iface, "peer", c.Pub(), "allowed-ips", addr+"/32")
	return c
}

// Ping sends one ping of 1,000 bytes (more than keepalives, so it counts
// as use) through the tunnel from ns, which makes the handshake, and
// returns when it was answered.
func Ping(t testing.TB, ns *netnstest.NS, to string) time.Time {
	t.Helper()
	out := ns.Run(t, "ping", "-c", "1", "-s", "1000", "-W", "3", to)
	if !strings.Contains(out, "1 received") {
		t.Fatalf("ping %s: %s", to, out)
	}
	return time.Now()
}
