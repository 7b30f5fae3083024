// Package wireguard finds the peers of WireGuard devices that are
// connected now. WireGuard has no connections, only handshakes: a peer
// counts as connected while its latest handshake is recent enough
// (WireGuard's own REJECT_AFTER_TIME, 180 s, by default), and its
// session lasts from the handshake that made it connected until its
// handshakes stop, it is removed from the device, or the device goes.
//
// Devices are read through wgctrl: kernel devices over netlink,
// userspace ones (wireguard-go, boringtun) over their UAPI sockets in
// /var/run/wireguard.
package wireguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
)

// Name is the source's name in warnings, logs and metrics.
const Name = "wireguard"

// DefaultHandshakeTimeout is WireGuard's REJECT_AFTER_TIME: a peer whose
// latest handshake is older has no usable keys left, so it can no longer
// send anything.
const DefaultHandshakeTimeout = 180 * time.Second

// What a connected but unused peer sends: persistent keepalives (32-byte
// messages; clients behind NAT send one every 25 s or so) and, every 2
// minutes, the key refresh they cause (a 148-byte initiation and a
// confirming keepalive: 212 bytes with the regular keepalive, as measured
// against wireguard-go). Received bytes that grow by no more than
// KeepaliveAllowance between two readings of a peer are not activity: a
// laptop left connected goes idle.
const (
	keepaliveBytes = 32
	handshakeBytes = 148
)

// KeepaliveAllowance is how many received bytes in elapsed time are
// taken for keepalives and key refreshes, not use: one keepalive per
// 10 s, three more, and one handshake initiation (244 bytes for a 5 s
// poll).
func KeepaliveAllowance(elapsed time.Duration) int64 {
	return keepaliveBytes*(3+int64(elapsed/(10*time.Second))) + handshakeBytes
}

// Warning codes of this source.
const (
	// WarnDeviceMissing: a configured interface does not exist (or its
	// UAPI socket is stale); nobody is connected through it.
	WarnDeviceMissing = "wireguard_device_missing"
	// WarnDeviceUnreadable: a device could not be read; its peers may be
	// missing from the snapshot.
	WarnDeviceUnreadable = "wireguard_device_unreadable"
)

// ErrUnavailable is returned by Poll when no device could be read at all
// (permission denied, no netlink, the client failing as a whole).
var ErrUnavailable = errors.New("wireguard devices unavailable")

// Client reads WireGuard devices. *wgctrl.Client satisfies it.
type Client interface {
	Devices() ([]*wgtypes.Device, error)
	Device(name string) (*wgtypes.Device, error)
}

// DeviceLister is implemented by clients that can name their devices
// without reading them. wgctrl's Devices fails as a whole when one
// device cannot be read (a stale UAPI socket left by a killed
// wireguard-go is enough); with a DeviceLister the Source then reads the
// devices one by one, so one bad device costs a warning, not the poll.
// The client Open makes is one.
type DeviceLister interface {
	DeviceNames() ([]string, error)
}

// Config configures a Source.
type Config struct {
	// Interfaces are the devices to watch; empty: every device the
	// client finds.
	Interfaces []string
	// Names maps a peer's base64 public key to the name it is reported
	// under (its User); peers not named are reported by their key.
	Names map[string]string
	// HandshakeTimeout: a peer is connected while its latest handshake
	// is at most this old. Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Clock tells the time. Default: the system clock.
	Clock clock.Clock
}

// Source polls WireGuard devices for connected peers.
type Source struct {
	client  Client
	lister  DeviceLister
	closer  io.Closer
	ifaces  []string
	names   map[wgtypes.Key]string
	timeout time.Duration
	clock   clock.Clock

	mu      sync.Mutex
	gen     uint64
	devices map[string]*device
	// recent holds the IDs of sessions that ended while their start
	// handshake could still make a peer connected, so that a peer seen
	// again with the same handshake (its device was briefly missing)
	// gets a fresh ID. Entries older than the timeout are pruned.
	recent map[string]time.Time
}

// device is what the Source remembers of one device: its peers, seen or
// not, as long as the device has them.
type device struct {
	gen        uint64
	listenPort int
	peers      map[wgtypes.Key]*peer
}

// peer is what the Source remembers of one peer of a device.
type peer struct {
	gen  uint64
	key  string // base64
	user string
	rx   int64
	// readAt is when rx was read: the allowance for keepalives grows
	// with the time since (a device unreadable for a while).
	readAt time.Time
	tx     int64
	hs     time.Time // latest handshake seen, zero for none

	ep      netip.AddrPort
	addr    string // ep's address as a string
	allowed net.IPNet
	virtual string

	// The session, while live.
	live     bool
	id       string
	started  time.Time
	activity time.Time
}

// New returns a Source reading devices through c. It does not take
// ownership of c: Close leaves it open.
func New(c Client, cfg Config) (*Source, error) {
	if c == nil {
		return nil, errors.New("wireguard: new source: nil client")
	}
	if cfg.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("wireguard: handshake timeout %v: must not be negative", cfg.HandshakeTimeout)
	}
	s := &Source{
		client:  c,
		timeout: cfg.HandshakeTimeout,
		clock:   cfg.Clock,
		names:   make(map[wgtypes.Key]string, len(cfg.Names)),
		devices: map[string]*device{},
		recent:  map[string]time.Time{},
	}
	if s.timeout == 0 {
		s.timeout = DefaultHandshakeTimeout
	}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if l, ok := c.(DeviceLister); ok {
		s.lister = l
	}
	seen := map[string]bool{}
	for i, name := range cfg.Interfaces {
		if name == "" || strings.ContainsAny(name, "/ \t\n") || len(name) > 15 {
			return nil, fmt.Errorf("wireguard: interfaces[%d] %q: not an interface name", i, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("wireguard: interfaces[%d] %q: listed twice", i, name)
		}
		seen[name] = true
		s.ifaces = append(s.ifaces, name)
	}
	for k, name := range cfg.Names {
		key, err := wgtypes.ParseKey(k)
		if err != nil {
			return nil, fmt.Errorf("wireguard: names: key %q: not a WireGuard public key: %w", k, err)
		}
		if name == "" {
			return nil, fmt.Errorf("wireguard: names: key %q: empty name", k)
		}
		if other, ok := s.names[key]; ok {
			return nil, fmt.Errorf("wireguard: names: key %q: named twice (%q and %q)", k, other, name)
		}
		s.names[key] = name
	}
	return s, nil
}

// Open returns a Source reading the machine's devices through wgctrl.
// Close releases the client.
func Open(cfg Config) (*Source, error) {
	c, err := wgctrl.New()
	if err != nil {
		return nil, fmt.Errorf("wireguard: open wgctrl client: %w", err)
	}
	s, err := New(systemClient{c}, cfg)
	if err != nil {
		_ = c.Close()
		return nil, err
	}
	s.closer = c
	return s, nil
}

// Close releases the client Open made; it does nothing for a Source made
// by New.
func (s *Source) Close() error {
	if s.closer == nil {
		return nil
	}
	if err := s.closer.Close(); err != nil {
		return fmt.Errorf("wireguard: close wgctrl client: %w", err)
	}
	return nil
}

// Name returns the source's name.
func (s *Source) Name() string { return Name }

// Kind returns session.KindWireGuard.
func (s *Source) Kind() session.Kind { return session.KindWireGuard }

// result is one device's reading.
type result struct {
	name    string
	dev     *wgtypes.Device
	err     error
	missing bool
}

// gone reports whether err means the device does not exist: no such
// interface, or a UAPI socket nobody listens on any more.
func gone(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}

// read reads the devices to look at. It fails only when nothing at all
// could be read.
func (s *Source) read() ([]result, error) {
	var res []result
	if len(s.ifaces) > 0 {
		res = make([]result, 0, len(s.ifaces))
		for _, name := range s.ifaces {
			d, err := s.client.Device(name)
			switch {
			case err == nil:
				res = append(res, result{name: name, dev: d})
			case gone(err):
				res = append(res, result{name: name, err: err, missing: true})
			default:
				res = append(res, result{name: name, err: err})
			}
		}
	} else {
		devs, err := s.client.Devices()
		if err == nil {
			res = make([]result, 0, len(devs))
			for _, d := range devs {
				res = append(res, result{name: d.Name, dev: d})
			}
			return res, nil
		}
		if s.lister == nil {
			return nil, fmt.Errorf("read devices: %w", err)
		}
		names, lerr := s.lister.DeviceNames()
		if lerr != nil {
			return nil, fmt.Errorf("read devices: %w; list device names: %w", err, lerr)
		}
		for _, name := range names {
			d, err := s.client.Device(name)
			switch {
			case err == nil:
				res = append(res, result{name: name, dev: d})
			case gone(err):
				// Vanished since listed, or a stale socket: not a device.
			default:
				res = append(res, result{name: name, err: err})
			}
		}
	}
	var failed []string
	var first error
	for _, r := range res {
		if r.dev != nil || r.missing {
			return res, nil
		}
		if first == nil {
			first = r.err
		}
		failed = append(failed, r.name)
	}
	if first != nil {
		return nil, fmt.Errorf("read devices %s: %w", strings.Join(failed, ", "), first)
	}
	return res, nil
}

// Poll reads the devices and returns the peers connected now, and the
// sessions that ended since the previous poll. It returns an error only
// when no device could be read; the Source's memory survives it.
func (s *Source) Poll(ctx context.Context) (session.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	snap := session.Snapshot{Time: now, Complete: true, Sessions: []session.Session{}, PendingAuth: []session.PendingAuth{}, Warnings: []session.Warning{}}
	if err := ctx.Err(); err != nil {
		return snap, err
	}
	res, err := s.read()
	if err != nil {
		return snap, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	s.gen++
	p := poll{now: now, snap: &snap}
	for _, r := range res {
		switch {
		case r.dev != nil:
			s.apply(&p, r.name, r.dev)
		case r.missing:
			snap.Warn(session.Warning{Code: WarnDeviceMissing, Source: Name, Kind: session.KindWireGuard,
				Message: fmt.Sprintf("wireguard interface %s does not exist (%v): nobody is connected through it", r.name, r.err)})
		default:
			snap.Warn(session.Warning{Code: WarnDeviceUnreadable, Source: Name, Kind: session.KindWireGuard, Blind: true,
				Message: fmt.Sprintf("read wireguard interface %s: %v: its peers may be missing", r.name, r.err)})
			s.carry(&p, r.name)
		}
	}
	for name, d := range s.devices {
		if d.gen != s.gen {
			// The device is gone: every session through it ended.
			for _, pr := range d.peers {
				if pr.live {
					s.end(&p, name, d, pr)
				}
			}
			delete(s.devices, name)
		}
	}
	for id, started := range s.recent {
		if now.Sub(started) > s.timeout {
			delete(s.recent, id)
		}
	}
	slices.SortFunc(snap.Ended, func(a, b session.Session) int { return strings.Compare(a.ID, b.ID) })
	return snap, nil
}

// poll is the state of one Poll.
type poll struct {
	now  time.Time
	snap *session.Snapshot
}

// apply takes one device's reading.
func (s *Source) apply(p *poll, name string, dev *wgtypes.Device) {
	d := s.devices[name]
	if d == nil {
		d = &device{peers: make(map[wgtypes.Key]*peer, len(dev.Peers))}
		s.devices[name] = d
	}
	d.gen = s.gen
	d.listenPort = dev.ListenPort
	for i := range dev.Peers {
		wp := &dev.Peers[i]
		pr := d.peers[wp.PublicKey]
		known := pr != nil
		if !known {
			pr = &peer{key: wp.PublicKey.String()}
			pr.user = pr.key
			if n, ok := s.names[wp.PublicKey]; ok {
				pr.user = n
			}
			d.peers[wp.PublicKey] = pr
		}
		pr.gen = s.gen
		hs := wp.LastHandshakeTime
		connected := !hs.IsZero() && p.now.Sub(hs) <= s.timeout
		// A counter that went down was reset (the peer was removed and
		// added again): any bytes since are new.
		rxUp := wp.ReceiveBytes > pr.rx || (wp.ReceiveBytes < pr.rx && wp.ReceiveBytes > 0)
		// Used: more than keepalives and handshakes would send.
		used := (wp.ReceiveBytes < pr.rx && wp.ReceiveBytes > 0) ||
			wp.ReceiveBytes-pr.rx > KeepaliveAllowance(p.now.Sub(pr.readAt))
		newHS := !hs.IsZero() && hs.After(pr.hs)
		pr.rx, pr.tx, pr.readAt = wp.ReceiveBytes, wp.TransmitBytes, p.now
		if !hs.IsZero() || !pr.live {
			pr.hs = hs
		}
		pr.setEndpoint(wp.Endpoint)
		pr.setAllowed(wp.AllowedIPs)

		switch {
		case pr.live && connected:
			// Handshakes are not activity: keepalives cause them too.
			if used {
				pr.activity = p.now
			}
		case pr.live:
			// Its handshakes stopped (or were reset): the session ended.
			// Data received since the previous poll came before the
			// keys of the latest handshake expired.
			if at := minTime(p.now, pr.hs.Add(s.timeout)); rxUp && !pr.hs.IsZero() && at.After(pr.activity) {
				pr.activity = at
			}
			if newHS && hs.After(pr.activity) {
				pr.activity = hs
			}
			s.end(p, name, d, pr)
		case connected:
			pr.live = true
			pr.started = hs
			pr.activity = hs
			pr.id = s.newID(name, pr.key, hs)
		case known && newHS:
			// A handshake since the previous poll that is already too
			// old: a connection began and ended between two polls.
			pr.started, pr.activity = hs, hs
			pr.id = s.newID(name, pr.key, hs)
			s.end(p, name, d, pr)
		}
		if pr.live {
			p.snap.Sessions = append(p.snap.Sessions, pr.session(name, d.listenPort))
		}
	}
	if len(d.peers) == len(dev.Peers) {
		return
	}
	for k, pr := range d.peers {
		if pr.gen != s.gen {
			// Removed from the device.
			if pr.live {
				s.end(p, name, d, pr)
			}
			delete(d.peers, k)
		}
	}
}

// carry keeps the sessions of a device that could not be read, as last
// seen: nothing proves they ended.
func (s *Source) carry(p *poll, name string) {
	d := s.devices[name]
	if d == nil {
		return
	}
	d.gen = s.gen
	from := len(p.snap.Sessions)
	for _, pr := range d.peers {
		if pr.live {
			p.snap.Sessions = append(p.snap.Sessions, pr.session(name, d.listenPort))
		}
	}
	slices.SortFunc(p.snap.Sessions[from:], func(a, b session.Session) int {
		if c := a.StartedAt.Compare(b.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
}

// end lists pr's session in Ended and forgets it.
func (s *Source) end(p *poll, name string, d *device, pr *peer) {
	sess := pr.session(name, d.listenPort)
	// Connected means a handshake at most timeout old: the session ended
	// when the latest one became too old (or now, for a peer or device
	// that went away before that).
	at := minTime(p.now, pr.hs.Add(s.timeout))
	if pr.activity.After(at) {
		at = pr.activity
	}
	if at.After(p.now) {
		at = p.now
	}
	if at.Before(sess.StartedAt) {
		at = sess.StartedAt
	}
	sess.EndedAt = &at
	p.snap.Ended = append(p.snap.Ended, sess)
	s.recent[pr.id] = pr.started
	pr.live = false
	pr.id = ""
}

// fileSafe maps base64's two non-filename characters to URL-safe ones.
var fileSafe = strings.NewReplacer("+", "-", "/", "_")

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// newID returns the ID of a session of the peer with the key through
// iface starting at the handshake hs: stable, and unique on this boot.
func (s *Source) newID(iface, key string, hs time.Time) string {
	short := key
	if len(short) > 8 {
		short = short[:8]
	}
	short = fileSafe.Replace(short)
	id := "wg-" + iface + "-" + short + "-" + strconv.FormatInt(hs.UnixNano(), 10)
	if _, ok := s.recent[id]; !ok {
		return id
	}
	for n := 2; ; n++ {
		alt := id + "." + strconv.Itoa(n)
		if _, ok := s.recent[alt]; !ok {
			return alt
		}
	}
}

// setEndpoint records the peer's endpoint, which roaming changes.
func (pr *peer) setEndpoint(ep *net.UDPAddr) {
	if ep == nil {
		pr.ep, pr.addr = netip.AddrPort{}, ""
		return
	}
	ap := ep.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ap != pr.ep {
		pr.ep, pr.addr = ap, ap.Addr().String()
	}
}

// setAllowed records the peer's first allowed IP: a bare address for a
// single host (10.8.0.2), else the prefix (10.8.0.0/24).
func (pr *peer) setAllowed(ips []net.IPNet) {
	if len(ips) == 0 {
		pr.allowed, pr.virtual = net.IPNet{}, ""
		return
	}
	n := ips[0]
	if n.IP.Equal(pr.allowed.IP) && slices.Equal(n.Mask, pr.allowed.Mask) && pr.virtual != "" {
		return
	}
	pr.allowed = net.IPNet{IP: slices.Clone(n.IP), Mask: slices.Clone(n.Mask)}
	if ones, bits := n.Mask.Size(); ones == bits && bits > 0 {
		pr.virtual = n.IP.String()
	} else {
		pr.virtual = n.String()
	}
}

// session returns pr's live session through iface.
func (pr *peer) session(iface string, listenPort int) session.Session {
	activity := pr.activity
	vpn := &session.VPN{
		Server:      iface,
		PublicKey:   pr.key,
		VirtualAddr: pr.virtual,
		BytesIn:     uint64(max(pr.rx, 0)),
		BytesOut:    uint64(max(pr.tx, 0)),
	}
	if !pr.hs.IsZero() {
		hs := pr.hs
		vpn.LastHandshakeAt = &hs
	}
	return session.Session{
		ID:             pr.id,
		Kind:           session.KindWireGuard,
		User:           pr.user,
		RemoteAddr:     pr.addr,
		RemotePort:     int(pr.ep.Port()),
		LocalPort:      listenPort,
		StartedAt:      pr.started,
		LastActivityAt: &activity,
		VPN:            vpn,
	}
}
