package wireguard_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"

	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/source/wireguard"
	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/wgtest"
)

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
	wgtest.Require(t)
	a, b := netnstest.New(t), netnstest.New(t)
	aAddr, bAddr := a.Link(t, b)
	srv := wgtest.Server(t, a)
	const clientIP = wgtest.TunnelNet + "2"
	cli := wgtest.Client(t, b, srv, aAddr, 51821, clientIP)

	const timeout = 3 * time.Second
	src, err := wireguard.Open(wireguard.Config{
		Interfaces:       []string{srv.Iface},
		Names:            map[string]string{cli.Pub(): "alice"},
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

	wgtest.Ping(t, b, wgtest.ServerIP)
	snap := pollOK(t, src)
	if len(snap.Sessions) != 1 || !snap.Complete {
		t.Fatalf("after the handshake: sessions %+v warnings %+v", snap.Sessions, snap.Warnings)
	}
	got := snap.Sessions[0]
	t.Logf("session %s user=%s from %s:%d bytes in/out %d/%d", got.ID, got.User, got.RemoteAddr, got.RemotePort, got.VPN.BytesIn, got.VPN.BytesOut)
	if got.User != "alice" || got.RemoteAddr != bAddr || got.RemotePort != 51821 || got.LocalPort != wgtest.ServerPort ||
		got.VPN.Server != srv.Iface || got.VPN.PublicKey != cli.Pub() || got.VPN.VirtualAddr != clientIP ||
		got.VPN.BytesIn == 0 || got.VPN.BytesOut == 0 || got.Kind != session.KindWireGuard {
		t.Fatalf("session %+v vpn %+v: want alice from %s:51821 to port %d with traffic", got, got.VPN, bAddr, wgtest.ServerPort)
	}
	if age := time.Since(got.StartedAt); age < 0 || age > 5*time.Second {
		t.Fatalf("started %v, %v ago", got.StartedAt, age)
	}
	if allSnap := pollOK(t, all); len(through(allSnap.Sessions, srv.Iface)) != 1 {
		t.Fatalf("every-device source: %+v", allSnap.Sessions)
	}

	// More traffic: activity and bytes move, the session stays.
	time.Sleep(20 * time.Millisecond)
	wgtest.Ping(t, b, wgtest.ServerIP)
	snap = pollOK(t, src)
	if len(snap.Sessions) != 1 || snap.Sessions[0].ID != got.ID || snap.Sessions[0].VPN.BytesIn <= got.VPN.BytesIn ||
		!snap.Sessions[0].LastActivityAt.After(*got.LastActivityAt) {
		t.Fatalf("after more traffic: %+v (was %+v)", snap.Sessions, got)
	}

	// Roaming: the client moves to another port; same session.
	b.Run(t, "wg", "set", cli.Iface, "listen-port", "51899")
	wgtest.Ping(t, b, wgtest.ServerIP)
	snap = pollOK(t, src)
	if len(snap.Sessions) != 1 || snap.Sessions[0].ID != got.ID || snap.Sessions[0].RemotePort != 51899 {
		t.Fatalf("after roaming: %+v", snap.Sessions)
	}

	// The client dies without a word. The session lasts until its
	// handshake is older than the timeout, then ends exactly once.
	cli.Stop(t, syscall.SIGKILL)
	killed := time.Now()
	if _, err := os.Stat(cli.Sock); err != nil {
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
	srv.Stop(t, syscall.SIGTERM)
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
	wgtest.Require(t)
	a, b := netnstest.New(t), netnstest.New(t)
	aAddr, _ := a.Link(t, b)
	srv := wgtest.Server(t, a)

	const (
		conns    = 10
		interval = 150 * time.Millisecond
		timeout  = 2 * time.Second
	)
	src, err := wireguard.Open(wireguard.Config{Interfaces: []string{srv.Iface}, HandshakeTimeout: timeout})
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
		c := wgtest.Client(t, b, srv, aAddr, 52000+i, wgtest.TunnelNet+strconv.Itoa(10+i))
		pinged := wgtest.Ping(t, b, wgtest.ServerIP)
		run = append(run, conn{key: c.Pub(), pinged: pinged})
		// Connected for about one poll interval, then gone.
		time.Sleep(interval)
		c.Stop(t, syscall.SIGTERM)
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
	// A snapshot's Time is taken before the devices are read, so a
	// handshake made during the read is seen in that poll, "before" it
	// happened by up to the read's duration (a few milliseconds).
	const readSlack = 100 * time.Millisecond
	for _, d := range fromHS {
		if d < -readSlack || d > interval+time.Second {
			t.Errorf("detection delay %v from the handshake: want within a poll interval (%v) plus slack", d, interval)
		}
	}
}
