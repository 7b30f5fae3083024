// Package sshd finds OpenSSH connections by reading /proc: every
// authenticated connection as a session, every connection still at the
// authentication stage as pending. It understands the process titles of
// every OpenSSH generation (sshd: up to 9.7, sshd-session: from 9.8,
// sshd-auth: from 10.0, [postauth] from 10.5) and counts a connection only
// once sshd has created its post-authentication user child, so password
// guessing bots never count as users. A title is believed only from a
// process that runs root's sshd (verify.go): any user can title a process
// "sshd: root [priv]".
package sshd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/host"
	"github.com/connwatch/connwatch/internal/session"
)

// Name is the source's name in warnings, logs and metrics.
const Name = "sshd"

// userHZ is the unit of process start times in /proc/PID/stat.
const userHZ = 100

// Options configure a Source. The zero value reads the live system.
type Options struct {
	// ProcRoot is a procfs mount or a procfs-shaped fixture tree.
	// Default "/proc".
	ProcRoot string
	// DevRoot holds pts devices, whose access time tells when a terminal
	// last received input. Empty: "/dev" when ProcRoot is "/proc", else
	// terminal activity is not read. "-" disables it.
	DevRoot string
	// Activity reports TCP receive activity. Nil: sock_diag when ProcRoot
	// is "/proc", else none.
	Activity TCPActivity
	// Clock tells the time of the snapshot. Default: the system clock.
	Clock clock.Clock
	// Ports keeps only connections to these local ports (all when
	// empty), for an agent that watches one sshd of several.
	Ports []int
	// EUID decides whether hidepid hides anything from us. Default: the
	// process's effective uid.
	EUID *int
}

// Source scans for sshd sessions.
type Source struct {
	procRoot string
	devRoot  string
	activity TCPActivity
	clock    clock.Clock
	ports    []int
	euid     int

	// live is true for the machine's own /proc.
	live bool

	mu       sync.Mutex
	walker   *procWalker
	bootTime time.Time
	// lastWalk is when the last scan walked the whole of /proc.
	lastWalk time.Time
	// events is set while process events come (SetEvents); walkNext asks
	// the next scan to walk (WalkNext).
	events   atomic.Bool
	walkNext atomic.Bool
	// walks and rescans count the scans of each kind, for tests.
	walks, rescans int
	// sockets remembers each connection's socket: it never changes.
	sockets map[connKey]mappedSocket
	// watch holds the verified sshd processes (watch.go).
	watch *watchSet
	// listeners holds the listener titles of the last scan.
	listeners atomic.Pointer[[]string]
}

// connKey identifies a connection by its monitor process.
type connKey struct {
	pid   int
	start uint64
}

type mappedSocket struct {
	conn  tcpConn
	inode uint64
}

// New returns a Source.
func New(o Options) *Source {
	s := &Source{procRoot: o.ProcRoot, devRoot: o.DevRoot, activity: o.Activity, clock: o.Clock, ports: slices.Clone(o.Ports)}
	if s.procRoot == "" {
		s.procRoot = "/proc"
	}
	s.procRoot = filepath.Clean(s.procRoot)
	live := s.procRoot == "/proc"
	s.live = live
	if live {
		s.walker = newProcWalker(liveInspector{root: s.procRoot})
	} else {
		s.walker = newProcWalker(&fixtureInspector{root: s.procRoot})
	}
	// Exec events are checked on the event's goroutine, with an inspector
	// of their own (a fixture's loads its file lazily).
	var (
		execMu   sync.Mutex
		execInsp inspector = liveInspector{root: s.procRoot}
	)
	if !live {
		execInsp = &fixtureInspector{root: s.procRoot}
	}
	s.watch = newWatchSet(func(pid int) bool {
		execMu.Lock()
		defer execMu.Unlock()
		return exeVerdict(execInsp, pid, childPrograms, map[string]bool{}).ok
	})
	switch {
	case s.devRoot == "-":
		s.devRoot = ""
	case s.devRoot == "" && live:
		s.devRoot = "/dev"
	}
	if s.activity == nil && live {
		s.activity = SockDiag{}
	}
	if s.clock == nil {
		s.clock = clock.Real{}
	}
	if o.EUID != nil {
		s.euid = *o.EUID
	} else {
		s.euid = os.Geteuid()
	}
	return s
}

// Name returns the source's name.
func (s *Source) Name() string { return Name }

// ErrProcUnavailable is returned when the process table cannot be read at
// all: nothing can be said about who is connected.
var ErrProcUnavailable = errors.New("process table unavailable")

// Scan takes one snapshot. It returns an error only when it could not
// look at all; partial blindness is reported as warnings in the snapshot.
// With Options.Ports, only connections to those local ports are in it.
func (s *Source) Scan(ctx context.Context) (session.Snapshot, error) {
	snap, err := s.scan(ctx)
	if err == nil {
		filterPorts(&snap, s.ports)
	}
	return snap, err
}

// filterPorts keeps the sessions and pending connections to ports (all
// when there are none). A session whose port could not be read might be
// on a watched port: it counts.
func filterPorts(snap *session.Snapshot, ports []int) {
	if len(ports) == 0 {
		return
	}
	sess := snap.Sessions[:0]
	for _, s := range snap.Sessions {
		if s.LocalPort == 0 || slices.Contains(ports, s.LocalPort) {
			sess = append(sess, s)
		}
	}
	snap.Sessions = sess
	pending := snap.PendingAuth[:0]
	for _, p := range snap.PendingAuth {
		if slices.Contains(ports, p.LocalPort) {
			pending = append(pending, p)
		}
	}
	snap.PendingAuth = pending
}

func (s *Source) scan(ctx context.Context) (session.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := session.Snapshot{Complete: true, Sessions: []session.Session{}, PendingAuth: []session.PendingAuth{}, Warnings: []session.Warning{}}
	if err := ctx.Err(); err != nil {
		return snap, err
	}
	boot, err := s.boot()
	if err != nil {
		return snap, fmt.Errorf("%w: %w", ErrProcUnavailable, err)
	}
	snap.Time = s.clock.Now()
	uptime := snap.Time.Sub(boot)
	if s.live {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err == nil {
			uptime = time.Duration(ts.Nano())
		}
	}
	tab, err := s.look(snap.Time, uptime)
	if err != nil {
		return snap, fmt.Errorf("%w: %w", ErrProcUnavailable, err)
	}

	if opt := s.hidepid(); opt != "" {
		snap.Warn(session.Warning{Code: session.WarnProcHidden, Source: Name, Blind: true,
			Message: fmt.Sprintf("%s is mounted with hidepid=%s: other users' sshd processes are invisible; run as root", s.procRoot, opt)})
	}
	if tab.unreadable > 0 {
		snap.Warn(session.Warning{Code: session.WarnProcUnreadable, Source: Name, Blind: true,
			Message: fmt.Sprintf("%d processes under %s could not be read (permission denied); run as root", tab.unreadable, s.procRoot)})
	}

	var listeners []string
	var refused []proc
	unchecked := false
	for _, p := range tab.procs {
		if p.zombie {
			continue
		}
		if _, ok := tab.trusted[p.pid]; ok {
			unchecked = unchecked || p.v.unchecked
			if p.titled && p.title.Role == RoleListener {
				listeners = append(listeners, p.rawTitle)
			}
		} else if p.needs() == rootChecked && !p.v.gone {
			refused = append(refused, p)
		}
	}
	s.listeners.Store(&listeners)
	if len(refused) > 0 {
		slices.SortFunc(refused, func(a, b proc) int { return a.pid - b.pid })
		snap.Warn(session.Warning{Code: session.WarnUnverifiedSSHD, Source: Name, Message: refusedMessage(refused)})
	}
	if unchecked {
		snap.Warn(session.Warning{Code: session.WarnUnverifiedSSHD, Source: Name,
			Message: "the executables of root's sshd processes cannot be read without root: sshd titles of processes running as root are believed unchecked"})
	}

	conns := assemble(tab.procs, tab.trusted)
	s.watch.scan(tab.trusted, snap.Time) // the set is the watch's from here on
	if len(conns) == 0 {
		return snap, nil
	}

	var (
		tcp    tcpTable
		tcpErr error
		loaded bool
	)
	sockets := make(map[connKey]mappedSocket, len(conns))
	var activity map[uint64]time.Duration
	var actErr error
	if s.activity != nil {
		activity, actErr = s.activity.LastDataRecv()
	}
	var unmapped []string
	for _, c := range conns {
		key := connKey{c.monitor.pid, c.monitor.start}
		ms, ok := s.sockets[key]
		if !ok {
			if !loaded {
				tcp, tcpErr = readTCPTable(s.procRoot)
				loaded = true
			}
			var err error
			ms.conn, ms.inode, err = s.socketOf(c, tcp)
			ok = err == nil
			if !ok {
				unmapped = append(unmapped, strconv.Itoa(c.monitor.pid))
			}
		}
		if ok {
			sockets[key] = ms
		}
		conn, inode := ms.conn, ms.inode
		if c.user == nil {
			snap.PendingAuth = append(snap.PendingAuth, session.PendingAuth{
				Kind:       session.KindSSH,
				User:       c.monitor.title.User,
				RemoteAddr: ipString(conn.remoteAddr),
				RemotePort: conn.remotePort,
				LocalPort:  conn.localPort,
				PID:        c.monitor.pid,
				Since:      ticksToTime(boot, c.monitor.start),
			})
			continue
		}
		sess := session.Session{
			ID:         fmt.Sprintf("ssh-%d-%d", c.monitor.pid, c.monitor.start),
			Kind:       session.KindSSH,
			User:       c.user.title.User,
			RemoteAddr: ipString(conn.remoteAddr),
			RemotePort: conn.remotePort,
			LocalAddr:  ipString(conn.localAddr),
			LocalPort:  conn.localPort,
			Mode:       c.mode(),
			PID:        c.monitor.pid,
			UserPID:    c.user.pid,
			StartedAt:  ticksToTime(boot, c.user.start),
		}
		ttys := c.ttys()
		if len(ttys) > 0 {
			sess.TTY = ttys[0]
		}
		var last time.Time
		if ago, ok := activity[inode]; ok && inode != 0 {
			last = snap.Time.Add(-ago)
		}
		for _, t := range ttys {
			if at, ok := s.ttyAtime(t); ok && at.After(last) {
				last = at
			}
		}
		if !last.IsZero() {
			// Activity is known to the millisecond; a connection cannot
			// have been active before it started.
			l := last.Truncate(time.Millisecond)
			if l.Before(sess.StartedAt) {
				l = sess.StartedAt
			}
			sess.LastActivityAt = &l
		}
		snap.Sessions = append(snap.Sessions, sess)
	}
	s.sockets = sockets
	if tcpErr != nil {
		snap.Warn(session.Warning{Code: session.WarnSocketUnreadable, Source: Name,
			Message: fmt.Sprintf("remote addresses unknown: %v", tcpErr)})
	} else if len(unmapped) > 0 {
		snap.Warn(session.Warning{Code: session.WarnSocketUnreadable, Source: Name,
			Message: fmt.Sprintf("could not map the TCP sockets of sshd pid %s (fds unreadable without root?): remote addresses unknown", strings.Join(unmapped, ", "))})
	}
	if actErr != nil {
		snap.Warn(session.Warning{Code: session.WarnActivityUnknown, Source: Name,
			Message: fmt.Sprintf("TCP activity unknown: %v", actErr)})
	}
	snap.Sort()
	return snap, nil
}

// While process events come, a scan reads only the sshd process trees
// (procWalker.rescan), and the whole of /proc is walked every
// EventWalkEvery, as a backstop for what no verified sshd process forks
// (a listener started since, an inetd or socket-activated "sshd -i"),
// with every process read again every EventRereadEvery (an old process
// that exec'd sshd). Without events every scan walks, and every process
// is read again every fullEvery.
const (
	EventWalkEvery   = 30 * time.Second
	EventRereadEvery = 5 * time.Minute
)

// SetEvents tells the source whether process events reach the agent, so
// that a fork, exec or exit of a verified sshd process starts scans (see
// Watches): while they do, scans between walks read only the sshd
// process trees. The next scan walks either way.
func (s *Source) SetEvents(on bool) {
	s.events.Store(on)
	s.walkNext.Store(true)
}

// WalkNext makes the next scan walk the whole of /proc: process events
// were lost, or a log reported a login whose sshd may be in no tree the
// source knows (an inetd or socket-activated "sshd -i").
func (s *Source) WalkNext() { s.walkNext.Store(true) }

// look walks /proc or rescans the sshd trees (see EventWalkEvery).
func (s *Source) look(now time.Time, uptime time.Duration) (procTable, error) {
	next := s.walkNext.Swap(false)
	if s.events.Load() && !next && !s.lastWalk.IsZero() && now.Sub(s.lastWalk) < EventWalkEvery && !now.Before(s.lastWalk) {
		tab, err := s.walker.rescan(s.procRoot)
		if !errors.Is(err, errNoChildren) {
			s.rescans++
			return tab, err
		}
	}
	every := fullEvery
	if s.events.Load() {
		every = EventRereadEvery
	}
	tab, err := s.walker.walk(s.procRoot, now, uptime, every)
	if err == nil {
		s.lastWalk = now
		s.walks++
	}
	return tab, err
}

// maxListed bounds the processes a warning names, so that a user who
// starts thousands of impostors costs one short warning.
const maxListed = 5

// refusedMessage tells which processes were titled as an sshd monitor or
// listener but are not root's sshd.
func refusedMessage(ps []proc) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d process(es) titled as sshd are not root's sshd, not counted:", len(ps))
	for i, p := range ps {
		if i == maxListed {
			fmt.Fprintf(&b, "; and %d more", len(ps)-maxListed)
			break
		}
		if i > 0 {
			b.WriteByte(';')
		}
		uid := "uid unknown"
		if p.v.uid >= 0 {
			uid = "uid " + strconv.Itoa(p.v.uid)
		}
		fmt.Fprintf(&b, " pid %d (%s, %q): %s", p.pid, uid, p.title.Prog+" "+p.title.Role.String(), p.v.why)
	}
	return b.String()
}

// Listeners returns the process titles of the verified sshd listeners
// (root's sshd) seen in the last scan ("sshd: /usr/sbin/sshd -D -E /var/log/sshd.log [listener] …").
func (s *Source) Listeners() []string {
	l := s.listeners.Load()
	if l == nil {
		return nil
	}
	return append([]string(nil), (*l)...)
}

// socketOf finds the TCP connection of c: through the monitor's fds, else
// the user child's (readable when we run as that user).
func (s *Source) socketOf(c connection, tcp tcpTable) (tcpConn, uint64, error) {
	var lastErr error
	for _, p := range []*proc{c.monitor, c.user} {
		if p == nil {
			continue
		}
		inodes, err := socketInodes(s.procRoot, p.pid)
		if err != nil {
			lastErr = err
			continue
		}
		if conn, ino, ok := tcp.connFor(inodes); ok {
			return conn, ino, nil
		}
		// The connection may live in another network namespace.
		if nsTab, err := readTCPTable(s.procRoot + "/" + strconv.Itoa(p.pid)); err == nil {
			if conn, ino, ok := nsTab.connFor(inodes); ok {
				return conn, ino, nil
			}
		}
		lastErr = errors.New("no TCP socket")
	}
	if lastErr == nil {
		lastErr = errors.New("no process")
	}
	return tcpConn{}, 0, lastErr
}

func (s *Source) ttyAtime(tty string) (time.Time, bool) {
	if s.devRoot == "" || !strings.HasPrefix(tty, "pts/") {
		return time.Time{}, false
	}
	var st unix.Stat_t
	if err := unix.Stat(s.devRoot+"/"+tty, &st); err != nil {
		return time.Time{}, false
	}
	return time.Unix(st.Atim.Unix()), true
}

// boot returns the boot time: for the live /proc computed every scan (so
// start times follow a wall-clock step), else read once.
func (s *Source) boot() (time.Time, error) {
	if !s.bootTime.IsZero() && !s.live {
		return s.bootTime, nil
	}
	bt, err := host.BootTime(s.procRoot)
	if err != nil {
		return time.Time{}, err
	}
	s.bootTime = bt
	return bt, nil
}

// hidepid returns the hidepid option of ProcRoot's mount when it hides
// other users' processes from us, else "".
func (s *Source) hidepid() string {
	if s.euid == 0 {
		return ""
	}
	b, err := os.ReadFile(s.procRoot + "/self/mountinfo")
	if err != nil {
		return ""
	}
	return hidepidOption(string(b), s.procRoot)
}

// hidepidOption finds the mount at mountPoint in a mountinfo text and
// returns its hidepid value when processes are hidden ("1", "2",
// "noaccess", "invisible", "ptraceable").
func hidepidOption(mountinfo, mountPoint string) string {
	for _, line := range strings.Split(mountinfo, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 || fields[4] != mountPoint {
			continue
		}
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(after) {
			for _, opt := range strings.Split(f, ",") {
				if v, ok := strings.CutPrefix(opt, "hidepid="); ok && v != "0" && v != "off" {
					return v
				}
			}
		}
	}
	return ""
}

func ticksToTime(boot time.Time, ticks uint64) time.Time {
	return boot.Add(time.Duration(ticks) * (time.Second / userHZ)).UTC()
}

func ipString(ip net.IP) string {
	if len(ip) == 0 {
		return ""
	}
	return ip.String()
}
