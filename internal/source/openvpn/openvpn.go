// Package openvpn finds the clients of an OpenVPN server, either by
// asking its management interface ("status 3", one short connection per
// poll) or by reading its status file (--status, any --status-version),
// and reports each as a session of kind openvpn.
//
// The management client only ever sends "status 3" and "quit": it never
// enables --management-client-auth, holds, kills or otherwise changes the
// server. OpenVPN serves one management client at a time, so the source
// connects for each poll and disconnects right after.
//
// A session lives from the client's "Connected Since" until it leaves
// the server's client list. Connections still in their TLS handshake
// (common name UNDEF and no virtual address) are not sessions. What
// OpenVPN 2.6 does that shows in the numbers:
//
//   - a UDP client that leaves with explicit-exit-notify stays in the
//     list for 5 more seconds ("Delayed exit in 5 seconds"), one that
//     vanishes until its keepalive timeout; a TCP client leaves at once;
//   - the status file is rewritten every --status interval only while the
//     server has clients: an idle server rewrites it when its event loop
//     wakes up, about every 10 s, so StaleAfter must exceed both that and
//     the interval; the file is empty for a moment after OpenVPN starts;
//   - real addresses are "a.b.c.d:port" for IPv4 but bare IPv6 addresses,
//     without the port (RemotePort is then 0);
//   - version 1 has no Username, Client ID or virtual address columns: the
//     user is the common name, the ID uses the common name and real
//     address, the virtual address comes from the routing table.
package openvpn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
)

// DefaultName is the server name when Config.Name is empty.
const DefaultName = "openvpn"

// DefaultStaleAfter is Config.StaleAfter's default.
const DefaultStaleAfter = 3 * time.Minute

// WarnStatusStale is the code of the blind warning for a status file
// that OpenVPN has not rewritten for longer than StaleAfter.
const WarnStatusStale = "openvpn_status_stale"

// ErrConfig is wrapped by the errors of an invalid Config.
var ErrConfig = errors.New("invalid openvpn source config")

// statusReadAttempts bounds the reads of a status file that changed while
// it was read or did not parse.
const statusReadAttempts = 3

// Config configures a Source. Exactly one of Management and StatusFile is
// set.
type Config struct {
	// Name is the server's name, default "openvpn". It is VPN.Server of
	// the sessions, part of their IDs and of the source's name.
	Name string
	// Management is the management interface: "unix:/path", "tcp:host:port"
	// or "host:port".
	Management string
	// PasswordFile holds the management password on its first line (the
	// file given to OpenVPN's management directive will do). It is read
	// at every poll.
	PasswordFile string
	// StatusFile is the path of OpenVPN's --status file, of any
	// --status-version.
	StatusFile string
	// StaleAfter is how old the status file may be before the snapshot is
	// marked blind; default DefaultStaleAfter. Make it a few times
	// OpenVPN's status refresh interval (--status FILE SECONDS, 60 s by
	// default).
	StaleAfter time.Duration
	// Clock tells the time of the snapshots. Default: the system clock.
	Clock clock.Clock
}

// Validate checks the config; errors wrap ErrConfig and name the field.
func (c Config) Validate() error {
	switch {
	case c.Management == "" && c.StatusFile == "":
		return fmt.Errorf("%w: Management or StatusFile: set one", ErrConfig)
	case c.Management != "" && c.StatusFile != "":
		return fmt.Errorf("%w: Management and StatusFile: set only one", ErrConfig)
	case c.PasswordFile != "" && c.Management == "":
		return fmt.Errorf("%w: PasswordFile: only with Management", ErrConfig)
	case c.StaleAfter < 0:
		return fmt.Errorf("%w: StaleAfter %v: negative", ErrConfig, c.StaleAfter)
	case strings.ContainsAny(c.Name, "/ \t\n"):
		return fmt.Errorf("%w: Name %q: no slashes or spaces", ErrConfig, c.Name)
	}
	if c.Management != "" {
		if _, _, err := ParseAddr(c.Management); err != nil {
			return fmt.Errorf("%w: Management: %w", ErrConfig, err)
		}
	}
	return nil
}

// Source polls one OpenVPN server.
type Source struct {
	cfg    Config
	server string
	name   string
	clock  clock.Clock

	mu sync.Mutex
	// live are the sessions of the last good poll, by ID.
	live map[string]session.Session
	// updated is the status time of the last good poll.
	updated time.Time
}

// New returns a Source for a valid config.
func New(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.StaleAfter == 0 {
		cfg.StaleAfter = DefaultStaleAfter
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	s := &Source{cfg: cfg, server: cfg.Name, name: DefaultName, clock: cfg.Clock, live: map[string]session.Session{}}
	if s.server == "" {
		s.server = DefaultName
	}
	if s.server != DefaultName {
		s.name = DefaultName + "/" + s.server
	}
	return s, nil
}

// Name returns "openvpn" for the server named openvpn (the default), else
// "openvpn/NAME".
func (s *Source) Name() string { return s.name }

// Kind returns session.KindOpenVPN.
func (s *Source) Kind() session.Kind { return session.KindOpenVPN }

// Poll takes one snapshot. It fails, keeping what it knew, when the
// management interface cannot be asked or the status file cannot be read
// or parsed; a status file older than StaleAfter gives a blind warning.
func (s *Source) Poll(ctx context.Context) (session.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	snap := session.Snapshot{Time: now, Complete: true, Sessions: []session.Session{}, PendingAuth: []session.PendingAuth{}, Warnings: []session.Warning{}}
	st, err := s.fetch(ctx)
	if err != nil {
		return snap, err
	}
	if s.cfg.StatusFile != "" {
		if age := now.Sub(st.Updated); age > s.cfg.StaleAfter {
			snap.Warn(session.Warning{Code: WarnStatusStale, Source: s.name, Kind: session.KindOpenVPN, Blind: true,
				Message: fmt.Sprintf("status file %s was written %s ago (%s), more than %s: is openvpn running?",
					s.cfg.StatusFile, age.Round(time.Second), st.Updated.Format(time.RFC3339), s.cfg.StaleAfter)})
		}
	}
	snap.Sessions = s.sessions(st)
	endedAt := now
	if u := st.Updated; !u.IsZero() && u.Before(now) && u.After(s.updated) {
		endedAt = u // the first status without the client
	}
	live := make(map[string]session.Session, len(snap.Sessions))
	for _, ss := range snap.Sessions {
		live[ss.ID] = ss
	}
	for id, old := range s.live {
		if _, ok := live[id]; ok {
			continue
		}
		at := endedAt
		if at.Before(old.StartedAt) {
			at = old.StartedAt
		}
		old.EndedAt = &at
		snap.Ended = append(snap.Ended, old)
	}
	s.live, s.updated = live, st.Updated
	snap.Sort()
	sort.Slice(snap.Ended, func(i, j int) bool { return snap.Ended[i].ID < snap.Ended[j].ID })
	return snap, nil
}

// fetch gets the status from the management interface or the file.
func (s *Source) fetch(ctx context.Context) (*Status, error) {
	if s.cfg.Management != "" {
		pw, err := s.password()
		if err != nil {
			return nil, err
		}
		return Query(ctx, s.cfg.Management, pw)
	}
	return readStatusFile(s.cfg.StatusFile)
}

// password reads the first line of the password file.
func (s *Source) password() (string, error) {
	if s.cfg.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(s.cfg.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("read management password file: %w", err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	first = strings.TrimSuffix(first, "\r")
	if first == "" {
		return "", fmt.Errorf("read management password file %s: first line is empty", s.cfg.PasswordFile)
	}
	return first, nil
}

// readStatusFile reads and parses a status file, again when it changed
// while it was read or did not parse (OpenVPN rewrites it in place, line
// by line), at most statusReadAttempts times.
func readStatusFile(path string) (*Status, error) {
	var lastErr error
	for range statusReadAttempts {
		st, changed, err := readStatusOnce(path)
		if err == nil && !changed {
			return st, nil
		}
		if err == nil {
			lastErr = fmt.Errorf("read status file %s: it changed while read", path)
			continue
		}
		lastErr = err
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, err // missing or unreadable: reading again will not help
		}
	}
	return nil, lastErr
}

func readStatusOnce(path string) (*Status, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, fmt.Errorf("read status file: %w", err)
	}
	defer f.Close()
	before, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("read status file: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStatusBytes))
	if err != nil {
		return nil, false, fmt.Errorf("read status file: %w", err)
	}
	after, err := f.Stat()
	if err != nil {
		return nil, false, fmt.Errorf("read status file: %w", err)
	}
	changed := !after.ModTime().Equal(before.ModTime()) || after.Size() != before.Size() || int64(len(b)) != after.Size()
	st, err := ParseStatus(bytes.NewReader(b))
	if err != nil {
		return nil, changed, fmt.Errorf("parse status file %s: %w", path, err)
	}
	if st.Updated.IsZero() {
		st.Updated = after.ModTime()
	}
	return st, changed, nil
}

// sessions turns the client list into sessions.
func (s *Source) sessions(st *Status) []session.Session {
	out := make([]session.Session, 0, len(st.Clients))
	seen := make(map[string]int, len(st.Clients))
	refs := lastRefs(st.Routes)
	for _, c := range st.Clients {
		if c.CommonName == UndefName && c.VirtualAddr == "" && c.VirtualIPv6 == "" {
			continue // still in its TLS handshake
		}
		id := s.sessionID(c)
		if n := seen[id]; n > 0 {
			seen[id]++
			id += "#" + strconv.Itoa(n+1)
		} else {
			seen[id] = 1
		}
		user := c.Username
		if user == "" {
			user = c.CommonName
		}
		host, port := SplitRealAddr(c.RealAddr)
		virtual := c.VirtualAddr
		if virtual == "" {
			virtual = c.VirtualIPv6
		}
		vpn := &session.VPN{
			Server:      s.server,
			CommonName:  c.CommonName,
			Username:    c.Username,
			VirtualAddr: virtual,
			BytesIn:     c.BytesIn,
			BytesOut:    c.BytesOut,
		}
		if c.ClientID >= 0 {
			vpn.ConnectionID = strconv.FormatInt(c.ClientID, 10)
		}
		ss := session.Session{
			ID:         id,
			Kind:       session.KindOpenVPN,
			User:       user,
			RemoteAddr: host,
			RemotePort: port,
			StartedAt:  c.ConnectedSince,
			VPN:        vpn,
		}
		if t, ok := refs[routeKey{c.CommonName, c.RealAddr}]; ok && !t.IsZero() {
			ss.LastActivityAt = &t
		}
		out = append(out, ss)
	}
	return out
}

// sessionID is "ovpn-SERVER-CLIENTID-SINCE", or without a client id
// (version 1) "ovpn-SERVER-CN-REALADDR-SINCE", SINCE in Unix seconds.
func (s *Source) sessionID(c Client) string {
	since := strconv.FormatInt(c.ConnectedSince.Unix(), 10)
	if c.ClientID >= 0 {
		return "ovpn-" + s.server + "-" + strconv.FormatInt(c.ClientID, 10) + "-" + since
	}
	return "ovpn-" + s.server + "-" + c.CommonName + "-" + c.RealAddr + "-" + since
}

// routeKey is the client a route belongs to.
type routeKey struct{ cn, real string }

// lastRefs returns the newest LastRef of each client's routes.
func lastRefs(routes []Route) map[routeKey]time.Time {
	m := make(map[routeKey]time.Time, len(routes))
	for _, r := range routes {
		k := routeKey{r.CommonName, r.RealAddr}
		if t, ok := m[k]; !ok || r.LastRef.After(t) {
			m[k] = r.LastRef
		}
	}
	return m
}

// SplitRealAddr splits a real address as OpenVPN prints it into host and
// port. OpenVPN 2.6 prints IPv4 addresses with their port
// ("198.51.100.7:51234", also for IPv4 clients of a dual-stack socket)
// and IPv6 addresses without ("2001:db8::7", UDP and TCP alike): the port
// is then 0. "[AF_INET6]" prefixes and bracketed "[host]:port" are also
// understood.
func SplitRealAddr(a string) (string, int) {
	a = strings.TrimPrefix(strings.TrimPrefix(a, "[AF_INET]"), "[AF_INET6]")
	if ip := net.ParseIP(a); ip != nil {
		return a, 0
	}
	if host, port, err := net.SplitHostPort(a); err == nil {
		if p, err := strconv.Atoi(port); err == nil && net.ParseIP(host) != nil {
			return host, p
		}
	}
	if i := strings.LastIndexByte(a, ':'); i > 0 {
		if p, err := strconv.Atoi(a[i+1:]); err == nil && p >= 0 && p < 65536 && net.ParseIP(a[:i]) != nil {
			return a[:i], p
		}
	}
	return a, 0
}
