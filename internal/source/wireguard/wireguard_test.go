package wireguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClient serves devices from memory, failing as wgctrl does: Devices
// fails as a whole when one device cannot be read.
type fakeClient struct {
	order      []string
	devs       map[string]*wgtypes.Device
	errs       map[string]error
	devicesErr error
	calls      int
}

func newFake() *fakeClient {
	return &fakeClient{devs: map[string]*wgtypes.Device{}, errs: map[string]error{}}
}

func (f *fakeClient) Devices() ([]*wgtypes.Device, error) {
	f.calls++
	if f.devicesErr != nil {
		return nil, f.devicesErr
	}
	var out []*wgtypes.Device
	for _, name := range f.order {
		if err := f.errs[name]; err != nil {
			return nil, err
		}
		if d, ok := f.devs[name]; ok {
			out = append(out, d)
		}
	}
	return out, nil
}

func (f *fakeClient) Device(name string) (*wgtypes.Device, error) {
	f.calls++
	if err := f.errs[name]; err != nil {
		return nil, err
	}
	d, ok := f.devs[name]
	if !ok {
		return nil, os.ErrNotExist
	}
	return d, nil
}

// add adds (or replaces) a device.
func (f *fakeClient) add(name string, port int, peers ...wgtypes.Peer) *wgtypes.Device {
	if _, ok := f.devs[name]; !ok {
		f.order = append(f.order, name)
	}
	d := &wgtypes.Device{Name: name, Type: wgtypes.Userspace, ListenPort: port, Peers: peers}
	f.devs[name] = d
	return d
}

func (f *fakeClient) remove(name string) { delete(f.devs, name) }

// listingFake is a fakeClient that can also name its devices.
type listingFake struct {
	*fakeClient
	listErr error
}

func (l listingFake) DeviceNames() ([]string, error) {
	if l.listErr != nil {
		return nil, l.listErr
	}
	var names []string
	for _, n := range l.order {
		if _, ok := l.devs[n]; ok || l.errs[n] != nil {
			names = append(names, n)
		}
	}
	return names, nil
}

// pub returns a deterministic public key.
func pub(i byte) wgtypes.Key {
	var k wgtypes.Key
	for j := range k {
		k[j] = i + byte(j)
	}
	return k
}

func mkPeer(k wgtypes.Key, hs time.Time, rx, tx int64, ep string, allowed ...string) wgtypes.Peer {
	p := wgtypes.Peer{PublicKey: k, LastHandshakeTime: hs, ReceiveBytes: rx, TransmitBytes: tx}
	if ep != "" {
		p.Endpoint = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ep))
	}
	for _, a := range allowed {
		_, n, err := net.ParseCIDR(a)
		if err != nil {
			panic(err)
		}
		p.AllowedIPs = append(p.AllowedIPs, *n)
	}
	return p
}

func newSource(t *testing.T, c Client, cfg Config) (*Source, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(t0)
	cfg.Clock = clk
	s, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func mustPoll(t *testing.T, s *Source) session.Snapshot {
	t.Helper()
	snap, err := s.Poll(context.Background())
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return snap
}

func ptr[T any](v T) *T { return &v }

func ids(ss []session.Session) []string {
	out := []string{}
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}

func TestConnect(t *testing.T) {
	f := newFake()
	alice, bob, never, old := pub(1), pub(2), pub(3), pub(4)
	hs := t0.Add(-10 * time.Second)
	f.add("wg0", 51820,
		mkPeer(alice, hs, 1000, 2000, "192.0.2.7:40001", "10.8.0.2/32", "10.9.0.0/24"),
		mkPeer(bob, t0.Add(-time.Second), 10, 20, "[2001:db8::1]:5000", "10.8.0.0/24"),
		mkPeer(never, time.Time{}, 0, 0, ""),
		mkPeer(old, t0.Add(-181*time.Second), 5, 5, "192.0.2.9:1"),
	)
	s, _ := newSource(t, f, Config{Names: map[string]string{alice.String(): "alice"}})
	snap := mustPoll(t, s)
	if !snap.Complete || len(snap.Warnings) != 0 || len(snap.Ended) != 0 || !snap.Time.Equal(t0) {
		t.Fatalf("snapshot: complete=%v warnings=%v ended=%v time=%v", snap.Complete, snap.Warnings, snap.Ended, snap.Time)
	}
	want := []session.Session{{
		ID:             "wg-wg0-" + fileSafe.Replace(alice.String()[:8]) + fmt.Sprintf("-%d", hs.UnixNano()),
		Kind:           session.KindWireGuard,
		User:           "alice",
		RemoteAddr:     "192.0.2.7",
		RemotePort:     40001,
		LocalPort:      51820,
		StartedAt:      hs,
		LastActivityAt: ptr(hs),
		VPN: &session.VPN{Server: "wg0", PublicKey: alice.String(), VirtualAddr: "10.8.0.2",
			BytesIn: 1000, BytesOut: 2000, LastHandshakeAt: ptr(hs)},
	}, {
		ID:             "wg-wg0-" + fileSafe.Replace(bob.String()[:8]) + fmt.Sprintf("-%d", t0.Add(-time.Second).UnixNano()),
		Kind:           session.KindWireGuard,
		User:           bob.String(),
		RemoteAddr:     "2001:db8::1",
		RemotePort:     5000,
		LocalPort:      51820,
		StartedAt:      t0.Add(-time.Second),
		LastActivityAt: ptr(t0.Add(-time.Second)),
		VPN: &session.VPN{Server: "wg0", PublicKey: bob.String(), VirtualAddr: "10.8.0.0/24",
			BytesIn: 10, BytesOut: 20, LastHandshakeAt: ptr(t0.Add(-time.Second))},
	}}
	if d := cmp.Diff(want, snap.Sessions); d != "" {
		t.Fatalf("sessions (-want +got):\n%s", d)
	}
	for _, id := range ids(snap.Sessions) {
		if strings.ContainsAny(id, "/+= ") {
			t.Errorf("id %q is not filename-safe", id)
		}
	}
}

func TestDefaultTimeoutIsRejectAfterTime(t *testing.T) {
	f := newFake()
	f.add("wg0", 1, mkPeer(pub(1), t0.Add(-180*time.Second), 1, 1, ""), mkPeer(pub(2), t0.Add(-180*time.Second-time.Nanosecond), 1, 1, ""))
	s, _ := newSource(t, f, Config{})
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 1 || snap.Sessions[0].VPN.PublicKey != pub(1).String() {
		t.Fatalf("want only the peer with a handshake exactly 180s old, got %v", ids(snap.Sessions))
	}
}

func TestActivityRekeyAndTimeoutEnd(t *testing.T) {
	f := newFake()
	k := pub(1)
	hs := t0.Add(-5 * time.Second)
	d := f.add("wg0", 51820, mkPeer(k, hs, 100, 100, "192.0.2.7:40001"))
	s, clk := newSource(t, f, Config{HandshakeTimeout: time.Minute})
	first := mustPoll(t, s).Sessions
	if len(first) != 1 {
		t.Fatalf("sessions: %v", ids(first))
	}
	id := first[0].ID

	// No new bytes: activity stays at the handshake.
	clk.Advance(10 * time.Second)
	d.Peers[0].TransmitBytes = 500
	snap := mustPoll(t, s)
	if got := *snap.Sessions[0].LastActivityAt; !got.Equal(hs) {
		t.Errorf("activity after sending only = %v, want the handshake %v", got, hs)
	}
	if snap.Sessions[0].VPN.BytesOut != 500 {
		t.Errorf("bytes out %d, want 500", snap.Sessions[0].VPN.BytesOut)
	}

	// A keepalive's worth of bytes received: not activity.
	clk.Advance(10 * time.Second)
	d.Peers[0].ReceiveBytes = 100 + 32
	snap = mustPoll(t, s)
	if got := *snap.Sessions[0].LastActivityAt; !got.Equal(hs) {
		t.Errorf("activity after a keepalive = %v, want still the handshake %v", got, hs)
	}

	// Bytes received: activity is now.
	clk.Advance(10 * time.Second)
	d.Peers[0].ReceiveBytes = 1180
	snap = mustPoll(t, s)
	actAt := clk.Now()
	if got := *snap.Sessions[0].LastActivityAt; !got.Equal(actAt) {
		t.Errorf("activity after receiving = %v, want %v", got, actAt)
	}

	// A rekey keeps the session; it is not activity (keepalives cause
	// rekeys too), nor are its bytes with a keepalive's.
	clk.Advance(40 * time.Second)
	rekey := clk.Now().Add(-time.Second)
	d.Peers[0].LastHandshakeTime = rekey
	d.Peers[0].ReceiveBytes += 148 + 32
	snap = mustPoll(t, s)
	if len(snap.Sessions) != 1 || snap.Sessions[0].ID != id || !snap.Sessions[0].StartedAt.Equal(hs) {
		t.Fatalf("after rekey: %+v, want same session %s started %v", snap.Sessions, id, hs)
	}
	if got := *snap.Sessions[0].LastActivityAt; !got.Equal(actAt) {
		t.Errorf("activity after rekey = %v, want still %v", got, actAt)
	}
	if got := *snap.Sessions[0].VPN.LastHandshakeAt; !got.Equal(rekey) {
		t.Errorf("last handshake %v, want %v", got, rekey)
	}

	// Handshakes stop: it ends once, when the latest became too old.
	clk.Advance(time.Minute + time.Second)
	snap = mustPoll(t, s)
	if len(snap.Sessions) != 0 || len(snap.Ended) != 1 {
		t.Fatalf("after timeout: sessions %v ended %v", ids(snap.Sessions), ids(snap.Ended))
	}
	e := snap.Ended[0]
	if e.ID != id || e.EndedAt == nil || !e.EndedAt.Equal(rekey.Add(time.Minute)) || e.VPN.BytesIn != 1360 {
		t.Fatalf("ended %+v at %v, want %s at %v with 1360 bytes in", e, e.EndedAt, id, rekey.Add(time.Minute))
	}
	clk.Advance(time.Second)
	if snap := mustPoll(t, s); len(snap.Ended) != 0 || len(snap.Sessions) != 0 {
		t.Fatalf("ended twice: %v %v", ids(snap.Ended), ids(snap.Sessions))
	}
}

// TestEndedAtIsWhenTheHandshakeExpired: a session is connected while its
// latest handshake is at most the timeout old, so it ends then, whatever
// its last activity (which LastActivityAt keeps).
func TestEndedAtIsWhenTheHandshakeExpired(t *testing.T) {
	f := newFake()
	d := f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""))
	s, clk := newSource(t, f, Config{HandshakeTimeout: time.Minute})
	mustPoll(t, s)
	clk.Advance(30 * time.Second)
	d.Peers[0].ReceiveBytes = 2000
	mustPoll(t, s)
	active := clk.Now()
	clk.Advance(31 * time.Second)
	snap := mustPoll(t, s)
	if len(snap.Ended) != 1 || !snap.Ended[0].EndedAt.Equal(t0.Add(time.Minute)) || !snap.Ended[0].LastActivityAt.Equal(active) {
		t.Fatalf("ended %+v, want one at the keys' expiry %v, last active %v", snap.Ended, t0.Add(time.Minute), active)
	}
	// Bytes that arrived after the last poll but before the keys expired.
	f.add("wg1", 1, mkPeer(pub(2), clk.Now(), 100, 0, ""))
	mustPoll(t, s)
	hs := clk.Now()
	clk.Advance(5 * time.Minute)
	f.devs["wg1"].Peers[0].ReceiveBytes = 300
	snap = mustPoll(t, s)
	if len(snap.Ended) != 1 || !snap.Ended[0].EndedAt.Equal(hs.Add(time.Minute)) {
		t.Fatalf("ended %+v, want one at the keys' expiry %v", snap.Ended, hs.Add(time.Minute))
	}
}

func TestReconnectIsNewSession(t *testing.T) {
	f := newFake()
	d := f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, "192.0.2.1:1"))
	s, clk := newSource(t, f, Config{HandshakeTimeout: time.Minute})
	first := mustPoll(t, s).Sessions[0]
	clk.Advance(2 * time.Minute)
	if snap := mustPoll(t, s); len(snap.Ended) != 1 {
		t.Fatalf("no end: %+v", snap)
	}
	clk.Advance(time.Minute)
	d.Peers[0].LastHandshakeTime = clk.Now()
	d.Peers[0].ReceiveBytes = 400
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 1 || len(snap.Ended) != 0 {
		t.Fatalf("after reconnect: %v %v", ids(snap.Sessions), ids(snap.Ended))
	}
	got := snap.Sessions[0]
	if got.ID == first.ID || !got.StartedAt.Equal(clk.Now()) || !got.LastActivityAt.Equal(clk.Now()) {
		t.Fatalf("reconnect %s started %v, want a new ID (old %s) started %v", got.ID, got.StartedAt, first.ID, clk.Now())
	}
}

func TestConnectionBetweenPolls(t *testing.T) {
	f := newFake()
	d := f.add("wg0", 1, mkPeer(pub(1), time.Time{}, 0, 0, ""))
	s, clk := newSource(t, f, Config{HandshakeTimeout: time.Minute})
	mustPoll(t, s)
	hs := clk.Now().Add(time.Second)
	clk.Advance(5 * time.Minute)
	d.Peers[0].LastHandshakeTime = hs
	d.Peers[0].ReceiveBytes = 92
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 0 || len(snap.Ended) != 1 {
		t.Fatalf("sessions %v ended %v, want one ended", ids(snap.Sessions), ids(snap.Ended))
	}
	if e := snap.Ended[0]; !e.StartedAt.Equal(hs) || !e.EndedAt.Equal(hs.Add(time.Minute)) {
		t.Fatalf("ended %v..%v, want %v..%v", e.StartedAt, e.EndedAt, hs, hs.Add(time.Minute))
	}
	clk.Advance(time.Second)
	if snap := mustPoll(t, s); len(snap.Ended) != 0 {
		t.Fatalf("listed twice: %v", ids(snap.Ended))
	}
}

func TestRoaming(t *testing.T) {
	f := newFake()
	d := f.add("wg0", 51820, mkPeer(pub(1), t0, 100, 0, "192.0.2.1:1000", "10.8.0.2/32"))
	s, clk := newSource(t, f, Config{})
	first := mustPoll(t, s).Sessions[0]
	clk.Advance(10 * time.Second)
	d.Peers[0].Endpoint = net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.4:2000"))
	d.Peers[0].ReceiveBytes = 200
	got := mustPoll(t, s).Sessions[0]
	if got.ID != first.ID || got.RemoteAddr != "198.51.100.4" || got.RemotePort != 2000 || got.VPN.VirtualAddr != "10.8.0.2" {
		t.Fatalf("after roaming: %+v, want %s from 198.51.100.4:2000", got, first.ID)
	}
	if first.RemoteAddr != "192.0.2.1" {
		t.Fatalf("the first snapshot changed under its reader: %+v", first)
	}
}

func TestPeerRemoved(t *testing.T) {
	f := newFake()
	d := f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""), mkPeer(pub(2), t0, 100, 0, ""))
	s, clk := newSource(t, f, Config{})
	mustPoll(t, s)
	clk.Advance(10 * time.Second)
	d.Peers = d.Peers[1:]
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 1 || len(snap.Ended) != 1 || snap.Ended[0].VPN.PublicKey != pub(1).String() {
		t.Fatalf("sessions %v ended %v", ids(snap.Sessions), ids(snap.Ended))
	}
	if !snap.Ended[0].EndedAt.Equal(clk.Now()) {
		t.Errorf("ended at %v, want when its removal was seen %v", snap.Ended[0].EndedAt, clk.Now())
	}
	if n := len(s.devices["wg0"].peers); n != 1 {
		t.Errorf("remembers %d peers, want 1", n)
	}
}

func TestDeviceGone(t *testing.T) {
	f := newFake()
	f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""))
	f.add("wg1", 2, mkPeer(pub(2), t0, 100, 0, ""))
	s, clk := newSource(t, f, Config{})
	if n := len(mustPoll(t, s).Sessions); n != 2 {
		t.Fatalf("%d sessions", n)
	}
	clk.Advance(time.Second)
	f.remove("wg1")
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 1 || len(snap.Ended) != 1 || snap.Ended[0].VPN.Server != "wg1" {
		t.Fatalf("sessions %v ended %v", ids(snap.Sessions), ids(snap.Ended))
	}
	if !snap.Complete || len(snap.Warnings) != 0 {
		t.Errorf("a device gone in discovery mode is no warning: %v", snap.Warnings)
	}
	if _, ok := s.devices["wg1"]; ok {
		t.Error("still remembers wg1")
	}
}

func TestConfiguredInterfaceMissing(t *testing.T) {
	f := newFake()
	f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""))
	f.add("wg1", 2, mkPeer(pub(2), t0, 100, 0, ""))
	f.add("other", 3, mkPeer(pub(3), t0, 100, 0, ""))
	s, clk := newSource(t, f, Config{Interfaces: []string{"wg0", "wg1", "wg9"}})
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 2 {
		t.Fatalf("sessions %v: want wg0 and wg1 only", ids(snap.Sessions))
	}
	if snap.Complete || len(snap.Warnings) != 1 || snap.BlindFor(session.KindWireGuard) {
		t.Fatalf("warnings %+v: want one non-blind", snap.Warnings)
	}
	w := snap.Warnings[0]
	if w.Code != WarnDeviceMissing || w.Source != Name || w.Kind != session.KindWireGuard || !strings.Contains(w.Message, "wg9") {
		t.Errorf("warning %+v", w)
	}

	// wg1 goes; its daemon left a stale socket behind for wg0.
	clk.Advance(time.Second)
	f.remove("wg1")
	f.errs["wg0"] = &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	snap = mustPoll(t, s)
	if len(snap.Sessions) != 0 || len(snap.Ended) != 2 || snap.BlindFor(session.KindWireGuard) || len(snap.Warnings) != 3 {
		t.Fatalf("sessions %v ended %v warnings %+v", ids(snap.Sessions), ids(snap.Ended), snap.Warnings)
	}
}

func TestOneDeviceFailing(t *testing.T) {
	for _, mode := range []string{"configured", "discovered"} {
		t.Run(mode, func(t *testing.T) {
			f := newFake()
			d0 := f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""))
			d1 := f.add("wg1", 2, mkPeer(pub(2), t0, 100, 0, ""), mkPeer(pub(3), t0, 100, 0, ""))
			cfg := Config{HandshakeTimeout: time.Minute}
			if mode == "configured" {
				cfg.Interfaces = []string{"wg0", "wg1"}
			}
			s, clk := newSource(t, listingFake{fakeClient: f}, cfg)
			before := mustPoll(t, s)
			if len(before.Sessions) != 3 {
				t.Fatalf("sessions %v", ids(before.Sessions))
			}

			clk.Advance(10 * time.Second)
			f.errs["wg1"] = fmt.Errorf("read: %w", syscall.ECONNRESET)
			d0.Peers[0].ReceiveBytes = 200
			snap := mustPoll(t, s)
			if !snap.BlindFor(session.KindWireGuard) || snap.Complete || len(snap.Warnings) != 1 {
				t.Fatalf("want one blind warning, got %+v", snap.Warnings)
			}
			w := snap.Warnings[0]
			if w.Code != WarnDeviceUnreadable || w.Kind != session.KindWireGuard || w.Source != Name || !strings.Contains(w.Message, "wg1") {
				t.Errorf("warning %+v", w)
			}
			if d := cmp.Diff(ids(before.Sessions), ids(snap.Sessions)); d != "" || len(snap.Ended) != 0 {
				t.Fatalf("the failing device's sessions must be kept, not ended: %s ended %v", d, ids(snap.Ended))
			}
			if snap.Sessions[0].VPN.BytesIn != 200 {
				t.Errorf("the working device was not read: %+v", snap.Sessions[0].VPN)
			}

			// It recovers with one peer gone.
			clk.Advance(10 * time.Second)
			delete(f.errs, "wg1")
			d1.Peers = d1.Peers[:1]
			snap = mustPoll(t, s)
			if len(snap.Sessions) != 2 || len(snap.Ended) != 1 || snap.Ended[0].VPN.PublicKey != pub(3).String() || !snap.Complete {
				t.Fatalf("after recovery: sessions %v ended %v warnings %v", ids(snap.Sessions), ids(snap.Ended), snap.Warnings)
			}
		})
	}
}

func TestClientFailing(t *testing.T) {
	perm := fmt.Errorf("dial unix: %w", os.ErrPermission)
	cases := []struct {
		name string
		cfg  Config
		set  func(f *fakeClient) Client
		is   error
	}{
		{"devices fail, no lister", Config{}, func(f *fakeClient) Client { f.devicesErr = perm; return f }, os.ErrPermission},
		{"devices and lister fail", Config{}, func(f *fakeClient) Client {
			f.devicesErr = perm
			return listingFake{fakeClient: f, listErr: errors.New("netlink: operation not permitted")}
		}, os.ErrPermission},
		{"every listed device fails", Config{}, func(f *fakeClient) Client {
			f.errs["wg0"], f.errs["wg1"] = perm, perm
			return listingFake{fakeClient: f}
		}, os.ErrPermission},
		{"every configured device fails", Config{Interfaces: []string{"wg0", "wg1"}}, func(f *fakeClient) Client {
			f.errs["wg0"], f.errs["wg1"] = perm, syscall.EIO
			return f
		}, os.ErrPermission},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake()
			d := f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""))
			f.add("wg1", 1, mkPeer(pub(2), t0, 100, 0, ""))
			tc.cfg.HandshakeTimeout = time.Minute
			s, clk := newSource(t, listingFake{fakeClient: f}, tc.cfg)
			if n := len(mustPoll(t, s).Sessions); n != 2 {
				t.Fatalf("%d sessions", n)
			}
			s.client = tc.set(f)
			s.lister, _ = s.client.(DeviceLister)
			clk.Advance(2 * time.Minute)
			_, err := s.Poll(context.Background())
			if !errors.Is(err, ErrUnavailable) || !errors.Is(err, tc.is) {
				t.Fatalf("poll error %v, want ErrUnavailable and %v", err, tc.is)
			}
			// Memory survives: the next good poll ends what ended.
			f.devicesErr = nil
			clear(f.errs)
			s.client, s.lister = f, nil
			d.Peers = nil
			snap := mustPoll(t, s)
			if len(snap.Ended) != 2 {
				t.Fatalf("after the failure: ended %v", ids(snap.Ended))
			}
		})
	}
}

func TestStaleSocketInDiscovery(t *testing.T) {
	f := newFake()
	f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""))
	f.order = append(f.order, "dead")
	f.errs["dead"] = &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	s, _ := newSource(t, listingFake{fakeClient: f}, Config{})
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 1 || !snap.Complete {
		t.Fatalf("a stale socket must not blind the source: sessions %v warnings %v", ids(snap.Sessions), snap.Warnings)
	}
}

func TestSameHandshakeAfterDeviceBlipGetsNewID(t *testing.T) {
	f := newFake()
	f.add("wg0", 1, mkPeer(pub(1), t0, 100, 0, ""))
	s, clk := newSource(t, f, Config{Interfaces: []string{"wg0"}})
	first := mustPoll(t, s).Sessions[0]
	clk.Advance(time.Second)
	dev := f.devs["wg0"]
	f.remove("wg0")
	if snap := mustPoll(t, s); len(snap.Ended) != 1 || snap.Ended[0].ID != first.ID {
		t.Fatalf("ended %v", ids(snap.Ended))
	}
	clk.Advance(time.Second)
	f.devs["wg0"] = dev
	snap := mustPoll(t, s)
	if len(snap.Sessions) != 1 || snap.Sessions[0].ID == first.ID {
		t.Fatalf("sessions %v: want a new ID, not %s again", ids(snap.Sessions), first.ID)
	}
	clk.Advance(DefaultHandshakeTimeout)
	mustPoll(t, s)
	if len(s.recent) != 0 {
		t.Errorf("recent IDs not pruned: %v", s.recent)
	}
}

func TestMemoryBounded(t *testing.T) {
	f := newFake()
	s, clk := newSource(t, f, Config{HandshakeTimeout: time.Minute})
	for round := range 20 {
		var peers []wgtypes.Peer
		for i := range 50 {
			peers = append(peers, mkPeer(pub(byte(round*50+i)), clk.Now(), 1, 1, ""))
		}
		name := fmt.Sprintf("wg%d", round%3)
		f.order = nil
		f.devs = map[string]*wgtypes.Device{}
		f.add(name, 1, peers...)
		mustPoll(t, s)
		clk.Advance(30 * time.Second)
	}
	f.devs = map[string]*wgtypes.Device{}
	mustPoll(t, s)
	clk.Advance(2 * time.Minute)
	mustPoll(t, s)
	if len(s.devices) != 0 || len(s.recent) != 0 {
		t.Fatalf("remembers %d devices, %d recent IDs after everything went", len(s.devices), len(s.recent))
	}
}

func TestNamesAndValidation(t *testing.T) {
	good := pub(7).String()
	cases := []struct {
		name string
		cfg  Config
		want string // in the error; empty: no error
	}{
		{"ok", Config{Names: map[string]string{good: "alice"}, Interfaces: []string{"wg0"}}, ""},
		{"zero timeout means default", Config{HandshakeTimeout: 0}, ""},
		{"not base64", Config{Names: map[string]string{"not a key!": "bob"}}, `"not a key!"`},
		{"short key", Config{Names: map[string]string{"AAAA": "bob"}}, `"AAAA"`},
		{"empty name", Config{Names: map[string]string{good: ""}}, good},
		{"negative timeout", Config{HandshakeTimeout: -time.Second}, "handshake timeout -1s"},
		{"empty interface", Config{Interfaces: []string{""}}, "interfaces[0]"},
		{"interface with slash", Config{Interfaces: []string{"wg0", "a/b"}}, `interfaces[1] "a/b"`},
		{"interface twice", Config{Interfaces: []string{"wg0", "wg0"}}, "listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(newFake(), tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatal("no error")
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not name %q", err, tc.want)
			case tc.want == "" && tc.cfg.HandshakeTimeout == 0 && s.timeout != DefaultHandshakeTimeout:
				t.Fatalf("timeout %v", s.timeout)
			}
		})
	}
	if _, err := New(nil, Config{}); err == nil {
		t.Error("nil client accepted")
	}

	f := newFake()
	f.add("wg0", 1, mkPeer(pub(7), t0, 1, 1, ""), mkPeer(pub(8), t0, 1, 1, ""))
	s, _ := newSource(t, f, Config{Names: map[string]string{good: "alice"}})
	snap := mustPoll(t, s)
	if snap.Sessions[0].User != "alice" || snap.Sessions[1].User != pub(8).String() {
		t.Fatalf("users %q %q", snap.Sessions[0].User, snap.Sessions[1].User)
	}
	if s.Name() != "wireguard" || s.Kind() != session.KindWireGuard || s.Close() != nil {
		t.Error("name, kind or close")
	}
}

func TestCanceledContext(t *testing.T) {
	f := newFake()
	s, _ := newSource(t, f, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Poll(ctx); !errors.Is(err, context.Canceled) || f.calls != 0 {
		t.Fatalf("err %v after %d client calls", err, f.calls)
	}
}

func TestDeviceNames(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"wg7.sock", "wg8.sock"} {
		l, err := net.Listen("unix", filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.sock"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	links := func() ([]netlink.Link, error) {
		return []netlink.Link{
			&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "wg0"}},
			&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "dummy0"}},
			&netlink.Wireguard{LinkAttrs: netlink.LinkAttrs{Name: "wg7"}},
		}, nil
	}
	got, err := deviceNames(links, dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"wg0", "wg7", "wg8"}, got); d != "" {
		t.Fatalf("names (-want +got):\n%s", d)
	}
	if got, err := deviceNames(links, filepath.Join(dir, "none")); err != nil || len(got) != 2 {
		t.Fatalf("without a socket directory: %v %v", got, err)
	}
	if _, err := deviceNames(func() ([]netlink.Link, error) { return nil, syscall.EPERM }, dir); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("link error: %v", err)
	}
}

// TestKeyRefreshIsNotActivity: a laptop left connected with persistent
// keepalives: a keepalive every 25 s and, every 2 minutes, a key refresh
// of 212 bytes (148-byte initiation, its keepalive, the regular one) as
// wireguard-go sends them, polled every 5 s. It stays connected and goes
// idle; real traffic still counts.
func TestKeyRefreshIsNotActivity(t *testing.T) {
	f := newFake()
	k := pub(7)
	d := f.add("wg0", 51820, mkPeer(k, t0, 100, 100, "192.0.2.7:40001"))
	s, clk := newSource(t, f, Config{})
	mustPoll(t, s)
	for i := 1; i <= 60; i++ { // 5 minutes
		clk.Advance(5 * time.Second)
		switch {
		case i%24 == 0: // every 2 minutes
			d.Peers[0].ReceiveBytes += 212
			d.Peers[0].LastHandshakeTime = clk.Now().Add(-time.Second)
		case i%5 == 0: // every 25 s
			d.Peers[0].ReceiveBytes += 32
		}
		snap := mustPoll(t, s)
		if len(snap.Sessions) != 1 {
			t.Fatalf("poll %d: sessions %v, want the peer connected", i, ids(snap.Sessions))
		}
		if got := *snap.Sessions[0].LastActivityAt; !got.Equal(t0) {
			t.Fatalf("poll %d: activity %v, want still the first handshake %v (keepalives are not use)", i, got, t0)
		}
	}
	clk.Advance(5 * time.Second)
	d.Peers[0].ReceiveBytes += 1500 // one full-size packet
	if got := *mustPoll(t, s).Sessions[0].LastActivityAt; !got.Equal(clk.Now()) {
		t.Errorf("activity after real traffic %v, want %v", got, clk.Now())
	}
}
