package wireguard_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/connwatch/connwatch/internal/netnstest"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/source/wireguard"
)

const (
	serverPort = 51820
	// tunnelNet is the tunnel's /24, inside the test's namespaces only.
	tunnelNet = "10.232.0."
	serverIP  = tunnelNet + "1"
)

// lockedBuffer collects a daemon's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// daemon is a wireguard-go process running one device in a namespace.
type daemon struct {
	ns    *netnstest.NS
	iface string
	sock  string
	key   wgtypes.Key
	out   *lockedBuffer
	proc  *os.Process
	done  chan struct{}
}

func requireWireGuard(t *testing.T) {
	t.Helper()
	netnstest.Require(t, "root", os.Geteuid() == 0)
	netnstest.RequireBinary(t, "wireguard-go")
	netnstest.RequireBinary(t, "wg")
	netnstest.RequireBinary(t, "ping")
	_, err := os.Stat("/dev/net/tun")
	netnstest.Require(t, fmt.Sprintf("/dev/net/tun (%v)", err), err == nil)
}

// startDaemon runs wireguard-go for a new device with a unique name (the
// UAPI socket directory is shared by every namespace) and waits for its
// socket.
func startDaemon(t *testing.T, ns *netnstest.NS) *daemon {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	iface := "cwwg" + hex.EncodeToString(b[:])
	d := &daemon{ns: ns, iface: iface, sock: filepath.Join("/var/run/wireguard", iface+".sock"), out: &lockedBuffer{}, done: make(chan struct{})}
	key, err := wgtypes.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	d.key = key
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
		if err := os.Remove(d.sock); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("remove stale socket: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(d.sock); err == nil {
			break
		}
		select {
		case <-d.done:
			t.Fatalf("wireguard-go %s exited before making its socket: %s", iface, d.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no socket %s after 5s: %s", d.sock, d.out)
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

// up gives the device its tunnel address and brings it up.
func (d *daemon) up(t *testing.T, addr string) {
	t.Helper()
	netnstest.Run(t, "", "ip", "-n", d.ns.Name, "addr", "add", addr+"/24", "dev", d.iface)
	netnstest.Run(t, "", "ip", "-n", d.ns.Name, "link", "set", d.iface, "up")
}

func (d *daemon) pub() string { return d.key.PublicKey().String() }

// stop sends sig and waits for the daemon to exit.
func (d *daemon) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := d.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal wireguard-go %s: %v", d.iface, err)
	}
	select {
	case <-d.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("wireguard-go %s did not exit on %v", d.iface, sig)
	}
}

// server starts the server device in ns.
func server(t *testing.T, ns *netnstest.NS) *daemon {
	t.Helper()
	d := startDaemon(t, ns)
	ns.Run(t, "wg", "set", d.iface, "listen-port", strconv.Itoa(serverPort))
	d.up(t, serverIP)
	return d
}

// client starts a client device in ns, listening on port, with the
// tunnel address addr, and configures it on srv as a peer.
func client(t *testing.T, ns *netnstest.NS, srv *daemon, srvLinkAddr string, port int, addr string) *daemon {
	t.Helper()
	c := startDaemon(t, ns)
	ns.Run(t, "wg", "set", c.iface, "listen-port", strconv.Itoa(port),
		"peer", srv.pub(), "endpoint", fmt.Sprintf("%s:%d", srvLinkAddr, serverPort), "allowed-ips", serverIP+"/32")
	c.up(t, addr)
	srv.ns.Run(t, "wg", "set", srv.iface, "peer", c.pub(), "allowed-ips", addr+"/32")
	return c
}

// ping sends one ping through the tunnel from ns (which makes the
// handshake) and returns when it was answered.
func ping(t *testing.T, ns *netnstest.NS, to string) time.Time {
	t.Helper()
	out := ns.Run(t, "ping", "-c", "1", "-W", "3", to)
	if !strings.Contains(out, "1 received") {
		t.Fatalf("ping %s: %s", to, out)
	}
	return time.Now()
}

func pollOK(t *testing.T, s *wireguard.Source) session.Snapshot {
	t.Helper()
	snap, err := s.Poll(context.Background())
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return snap
}

// through keeps the sessions through one device.
func through(ss []session.Session, iface string) []session.Session {
	var out []session.Session
	for _, s := range ss {
		if s.VPN != nil && s.VPN.Server == iface {
			out = append(out, s)
		}
	}
	return out
}

// TestRealWireGuard runs a userspace WireGuard server and client in two
// namespaces, makes real handshakes and reads the server through wgctrl
// from the root namespace: the connection, its traffic, roaming, and
// its end once the client is killed and the handshake times out.
func TestRealWireGuard(t *testing.T) {
	requireWireGuard(t)
	a, b := netnstest.New(t), netnstest.New(t)
	aAddr, bAddr := a.Link(t, b)
	srv := server(t, a)
	const clientIP = tunnelNet + "2"
	cli := client(t, b, srv, aAddr, 51821, clientIP)

	const timeout = 3 * time.Second
	src, err := wireguard.Open(wireguard.Config{
		Interfaces:       []string{srv.iface},
		Names:            map[string]string{cli.pub(): "alice"},
		HandshakeTimeout: timeout,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	all, err := wireguard.Open(wireguard.Config{HandshakeTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()

	if snap := pollOK(t, src); len(snap.Sessions) != 0 || !snap.Complete {
		t.Fatalf("before any handshake: %+v", snap)
	}

	ping(t, b, serverIP)
	snap := pollOK(t, src)
	if len(snap.Sessions) != 1 || !snap.Complete {
		t.Fatalf("after the handshake: sessions %+v warnings %+v", snap.Sessions, snap.Warnings)
	}
	got := snap.Sessions[0]
	t.Logf("session %s user=%s from %s:%d bytes in/out %d/%d", got.ID, got.User, got.RemoteAddr, got.RemotePort, got.VPN.BytesIn, got.VPN.BytesOut)
	if got.User != "alice" || got.RemoteAddr != bAddr || got.RemotePort != 51821 || got.LocalPort != serverPort ||
		got.VPN.Server != srv.iface || got.VPN.PublicKey != cli.pub() || got.VPN.VirtualAddr != clientIP ||
		got.VPN.BytesIn == 0 || got.VPN.BytesOut == 0 || got.Kind != session.KindWireGuard {
		t.Fatalf("session %+v vpn %+v: want alice from %s:51821 to port %d with traffic", got, got.VPN, bAddr, serverPort)
	}
	if age := time.Since(got.StartedAt); age < 0 || age > 5*time.Second {
		t.Fatalf("started %v, %v ago", got.StartedAt, age)
	}
	if allSnap := pollOK(t, all); len(through(allSnap.Sessions, srv.iface)) != 1 {
		t.Fatalf("every-device source: %+v", allSnap.Sessions)
	}

	// More traffic: activity and bytes move, the session stays.
	time.Sleep(20 * time.Millisecond)
	ping(t, b, serverIP)
	snap = pollOK(t, src)
	if len(snap.Sessions) != 1 || snap.Sessions[0].ID != got.ID || snap.Sessions[0].VPN.BytesIn <= got.VPN.BytesIn ||
		!snap.Sessions[0].LastActivityAt.After(*got.LastActivityAt) {
		t.Fatalf("after more traffic: %+v (was %+v)", snap.Sessions, got)
	}

	// Roaming: the client moves to another port; same session.
	b.Run(t, "wg", "set", cli.iface, "listen-port", "51899")
	ping(t, b, serverIP)
	snap = pollOK(t, src)
	if len(snap.Sessions) != 1 || snap.Sessions[0].ID != got.ID || snap.Sessions[0].RemotePort != 51899 {
		t.Fatalf("after roaming: %+v", snap.Sessions)
	}

	// The client dies without a word. The session lasts until its
	// handshake is older than the timeout, then ends exactly once.
	cli.stop(t, syscall.SIGKILL)
	killed := time.Now()
	if _, err := os.Stat(cli.sock); err != nil {
		t.Fatalf("want the killed client's stale socket for the every-device source: %v", err)
	}
	wc, err := wgctrl.New()
	if err != nil {
		t.Fatal(err)
	}
	defer wc.Close()
	if _, err := wc.Devices(); err == nil {
		t.Log("wgctrl's Devices does not fail on a stale socket here")
	} else {
		t.Logf("wgctrl's Devices fails on the stale socket: %v", err)
	}
	var ends []session.Session
	var endedAt time.Time
	deadline := time.Now().Add(timeout + 5*time.Second)
	for time.Now().Before(deadline) && (endedAt.IsZero() || time.Since(endedAt) < time.Second) {
		snap := pollOK(t, src)
		ends = append(ends, snap.Ended...)
		if len(snap.Ended) > 0 {
			endedAt = snap.Time
		}
		if len(snap.Sessions) == 0 && len(ends) == 0 {
			t.Fatalf("the session vanished without an end at %v", snap.Time)
		}
		allSnap := pollOK(t, all)
		if !allSnap.Complete {
			t.Fatalf("every-device source blinded by the stale socket: %+v", allSnap.Warnings)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(ends) != 1 || ends[0].ID != got.ID || ends[0].EndedAt == nil {
		t.Fatalf("ended %+v, want %s once", ends, got.ID)
	}
	e := ends[0]
	hs := *e.VPN.LastHandshakeAt
	if endedAt.Sub(hs) <= timeout || e.EndedAt.After(endedAt) || e.EndedAt.Before(e.StartedAt) {
		t.Fatalf("ended at %v (reported by the poll at %v), last handshake %v, timeout %v", e.EndedAt, endedAt, hs, timeout)
	}
	t.Logf("killed at %v; end reported %v after the kill, %v after the last handshake; EndedAt %v", killed.Format(time.TimeOnly), endedAt.Sub(killed).Round(time.Millisecond), endedAt.Sub(hs).Round(time.Millisecond), e.EndedAt.Format(time.StampMicro))

	// A configured device that goes is a non-blind warning.
	srv.stop(t, syscall.SIGTERM)
	snap = pollOK(t, src)
	if snap.Complete || snap.BlindFor(session.KindWireGuard) || len(snap.Warnings) != 1 || snap.Warnings[0].Code != wireguard.WarnDeviceMissing {
		t.Fatalf("after the server went: %+v", snap.Warnings)
	}
}

// TestShortConnections makes a run of short client connections, each a
// fresh client device and key, handshaking with one ping and then
// killed, while a poller reads the server every 150 ms. It counts the
// connections never reported and measures how long each took to be.
func TestShortConnections(t *testing.T) {
	requireWireGuard(t)
	a, b := netnstest.New(t), netnstest.New(t)
	aAddr, _ := a.Link(t, b)
	srv := server(t, a)

	const (
		conns    = 10
		interval = 150 * time.Millisecond
		timeout  = 2 * time.Second
	)
	src, err := wireguard.Open(wireguard.Config{Interfaces: []string{srv.iface}, HandshakeTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	type seen struct {
		first   time.Time // the first poll that reported it
		started time.Time // its handshake
		ids     map[string]bool
		ends    int
	}
	var (
		mu      sync.Mutex
		byKey   = map[string]*seen{}
		polls   int
		pollErr error
	)
	stop := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for range 1000 {
			snap, err := src.Poll(context.Background())
			mu.Lock()
			polls++
			if err != nil && pollErr == nil {
				pollErr = err
			}
			for _, s := range snap.Sessions {
				k := byKey[s.VPN.PublicKey]
				if k == nil {
					k = &seen{first: snap.Time, started: s.StartedAt, ids: map[string]bool{}}
					byKey[s.VPN.PublicKey] = k
				}
				k.ids[s.ID] = true
			}
			for _, s := range snap.Ended {
				if k := byKey[s.VPN.PublicKey]; k != nil {
					k.ends++
				} else {
					byKey[s.VPN.PublicKey] = &seen{ends: 1, ids: map[string]bool{s.ID: true}}
				}
			}
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	defer func() {
		select {
		case <-stopped:
		default:
			close(stop)
			<-stopped
		}
	}()

	type conn struct {
		key    string
		pinged time.Time
	}
	var run []conn
	for i := range conns {
		c := client(t, b, srv, aAddr, 52000+i, tunnelNet+strconv.Itoa(10+i))
		pinged := ping(t, b, serverIP)
		run = append(run, conn{key: c.pub(), pinged: pinged})
		// Connected for about one poll interval, then gone.
		time.Sleep(interval)
		c.stop(t, syscall.SIGTERM)
	}
	// Wait, bounded, for every session to time out and end.
	deadline := time.Now().Add(timeout + 3*time.Second)
	for {
		mu.Lock()
		ended := 0
		for _, c := range run {
			if k := byKey[c.key]; k != nil && k.ends > 0 {
				ended++
			}
		}
		mu.Unlock()
		if ended == len(run) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(2 * interval) // any duplicate end would come now
	close(stop)
	<-stopped

	mu.Lock()
	defer mu.Unlock()
	if pollErr != nil {
		t.Fatalf("poll failed: %v", pollErr)
	}
	var misses, unended int
	var fromHS, fromPing []time.Duration
	for i, c := range run {
		k := byKey[c.key]
		switch {
		case k == nil || k.first.IsZero():
			misses++
			t.Errorf("connection %d (%s) never reported live", i, c.key)
			continue
		case k.ends != 1 || len(k.ids) != 1:
			unended++
			t.Errorf("connection %d: ended %d times, ids %v; want once, one id", i, k.ends, k.ids)
		}
		fromHS = append(fromHS, k.first.Sub(k.started))
		fromPing = append(fromPing, k.first.Sub(c.pinged))
	}
	if len(byKey) != len(run) {
		t.Errorf("%d peers reported, want %d", len(byKey), len(run))
	}
	stats := func(ds []time.Duration) string {
		if len(ds) == 0 {
			return "none"
		}
		s := slices.Clone(ds)
		slices.Sort(s)
		var sum time.Duration
		for _, d := range s {
			sum += d
		}
		return fmt.Sprintf("min %v median %v mean %v max %v", s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond),
			(sum / time.Duration(len(s))).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
	}
	t.Logf("%d short connections, polled every %v (%d polls): %d missed, %d not ended exactly once", len(run), interval, polls, misses, unended)
	t.Logf("detection delay from the peer's handshake: %s", stats(fromHS))
	t.Logf("detection delay from the ping's return (negative: seen before ping returned): %s", stats(fromPing))
	for _, d := range fromHS {
		if d < 0 || d > interval+time.Second {
			t.Errorf("detection delay %v from the handshake: want within a poll interval (%v) plus slack", d, interval)
		}
	}
}
