// Package sshdtest runs a real OpenSSH sshd on a loopback port for
// integration tests, and real ssh, sftp and password-parked clients
// against it, so that tests of other packages can see the processes,
// sockets and log lines a real server makes:
//
//	s := sshdtest.Start(t, sshdtest.Options{})
//	held := s.SSH(t, nil)                // "sshd: cwtest@notty" until Stop
//	park := s.ParkAtPassword(t, s.User) // "sshd: cwtest [priv]" + "[net]"
//	port := held.WaitLocalPort(t, 10*time.Second)
//	s.WaitLog(t, fmt.Sprintf("port %d", port), 5*time.Second)
//
// Everything here needs root (sshd privilege separation, a test login
// user) and the OpenSSH binaries. When something is missing a test is
// skipped with the reason, or failed when CI=true, so CI cannot go green
// by skipping.
//
// Cleanup kills the listener and every process below it (per-connection
// monitors, their privilege-separated children, user sessions and the
// commands they run), and also the session commands that outlived their
// connection: sshd does not kill the command of a session without a pty
// when the client goes away, and such a command leaves the listener's
// tree. To reap what it kills, the test process makes itself a child
// subreaper (PR_SET_CHILD_SUBREAPER) on the first Start, so orphans of
// sshd are re-parented to it rather than to a PID 1 that may not reap;
// zombies it cannot prove are adopted (session leaders orphaned by
// connections that closed by themselves) are left, as are zombies PID 1
// already has. The listener and clients get SIGKILL if the thread that
// started them exits (Pdeathsig), so a test binary that dies without
// cleanup does not leave them running.
//
// Only 127.0.0.1, or the address of a network namespace the test made
// (Options.Netns), is ever contacted. Every wait is bounded.
package sshdtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

const (
	// DefaultUser is the login user when Options.User is empty.
	DefaultUser = "cwtest"
	// DefaultLogLevel is the sshd LogLevel when Options.LogLevel is empty.
	DefaultLogLevel = "VERBOSE"

	sshdPath       = "/usr/sbin/sshd" // sshd re-executes itself: absolute path
	sftpServerPath = "/usr/lib/openssh/sftp-server"
	privsepDir     = "/run/sshd"

	startTimeout = 10 * time.Second
	stopTimeout  = 10 * time.Second
	pollEvery    = 10 * time.Millisecond
)

// ErrTimeout is wrapped by the errors of bounded waits that ran out.
var ErrTimeout = errors.New("timed out")

// Require skips the test with a clear reason when ok is false, or fails it
// when the environment variable CI is "true".
func Require(t testing.TB, what string, ok bool) {
	t.Helper()
	testproc.Require(t, "sshdtest", what, ok)
}

// RequireRoot requires an effective uid of 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, "root (sshd privilege separation and a test login user)", os.Geteuid() == 0)
}

// RequireBinary requires an executable by name (looked up in PATH) or by
// path, and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	return testproc.RequireBinary(t, "sshdtest", name)
}

// Options configure Start.
type Options struct {
	// User is the login user, default DefaultUser. Start creates it with
	// useradd -m -s /bin/bash when it does not exist.
	User string
	// ExtraConfig are sshd_config lines. A global keyword set here wins
	// over the harness default for it (sshd keeps the first value it
	// reads, so these are written before the defaults); lines from the
	// first Match on are written last. ListenAddress, Port, HostKey and
	// PidFile belong to the harness.
	ExtraConfig []string
	// LogLevel is the sshd LogLevel, default DefaultLogLevel.
	LogLevel string
	// Netns is the name of a network namespace (see netnstest) to run
	// sshd in, through `ip netns exec`; empty, the test's own namespace.
	Netns string
	// ListenAddress is the address sshd listens on, default 127.0.0.1
	// (in Netns, give the namespace's address, netnstest.NS.Addr).
	ListenAddress string
	// ClientKey is a private key (with KEY.pub beside it) to authorise
	// for User instead of a new one, so clients can be set up before the
	// server starts.
	ClientKey string
	// Port is the port sshd listens on; 0 picks a free port on
	// 127.0.0.1 (22 in a Netns of its own, where no other sshd runs).
	Port int
}

// Server is a running sshd.
type Server struct {
	Addr      string // "127.0.0.1"
	Port      int
	Dir       string // holds host key, config, client key, askpass script, log
	User      string
	ClientKey string // ed25519 private key without passphrase, authorised for User
	LogFile   string // sshd -E file
	PID       int    // listener pid

	t        testing.TB
	netns    string
	netNS    string // sshd's network namespace (/proc/PID/ns/net), "" if unknown
	config   string
	askpass  string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the listener has been reaped
	stopOnce sync.Once

	mu   sync.Mutex
	seen map[procStat]bool // processes of the tree seen before they could be orphaned
}

// Start starts sshd -D -f CONFIG -E LOG on a free 127.0.0.1 port and
// waits (at most 10 s) until the listener holds a listening socket on it.
// Readiness is read from /proc rather than by connecting, so the log holds
// only the test's own connections; a port taken meanwhile is retried. The
// config is checked with sshd -t first. Besides the settings the package
// promises (UsePAM yes, PasswordAuthentication yes, MaxStartups 100, ...)
// it sets LoginGraceTime 0, so parked connections stay until Stop rather
// than 120 s. t.Cleanup stops it (see Stop).
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	RequireRoot(t)
	sshd := RequireBinary(t, sshdPath)
	keygen := RequireBinary(t, "ssh-keygen")
	if o.User == "" {
		o.User = DefaultUser
	}
	if o.LogLevel == "" {
		o.LogLevel = DefaultLogLevel
	}
	ensureUser(t, o.User)
	if err := os.MkdirAll(privsepDir, 0o755); err != nil {
		t.Fatalf("create privilege separation dir: %v", err)
	}
	becomeSubreaper()

	dir := t.TempDir()
	// The user side of sshd (authorized keys are read with the user's
	// uid) must be able to reach into dir: t.TempDir makes 0700 dirs.
	if err := openUpTo(dir, os.TempDir()); err != nil {
		t.Fatalf("open up %s: %v", dir, err)
	}
	if o.ListenAddress == "" {
		o.ListenAddress = "127.0.0.1"
	}
	if o.Port == 0 && o.Netns != "" {
		o.Port = 22
	}
	s := &Server{
		Addr:      o.ListenAddress,
		netns:     o.Netns,
		Dir:       dir,
		User:      o.User,
		ClientKey: filepath.Join(dir, "client_ed25519"),
		LogFile:   filepath.Join(dir, "sshd.log"),
		t:         t,
		config:    filepath.Join(dir, "sshd_config"),
		askpass:   filepath.Join(dir, "askpass.sh"),
	}
	hostKey := filepath.Join(dir, "host_ed25519")
	keys := []struct{ path, comment string }{{hostKey, "sshdtest-host"}, {s.ClientKey, "sshdtest-client"}}
	if o.ClientKey != "" {
		s.ClientKey, keys = o.ClientKey, keys[:1]
	}
	for _, k := range keys {
		out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", k.comment, "-f", k.path).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen %s: %v: %s", k.path, err, out)
		}
	}
	pub, err := os.ReadFile(s.ClientKey + ".pub")
	if err != nil {
		t.Fatalf("read client public key: %v", err)
	}
	akDir := filepath.Join(dir, "authorized_keys")
	if err := os.Mkdir(akDir, 0o755); err != nil {
		t.Fatalf("create authorized keys dir: %v", err)
	}
	if err := writeFile(filepath.Join(akDir, s.User), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(s.askpass, []byte(askpassScript), 0o755); err != nil {
		t.Fatal(err)
	}

	p := configParams{dir: dir, addr: o.ListenAddress, hostKey: hostKey, logLevel: o.LogLevel, extra: o.ExtraConfig}
	attempts := 5
	if o.Port != 0 {
		attempts = 1 // a port asked for is not traded for another
	}
	for attempt := 1; ; attempt++ {
		p.port = o.Port
		if p.port == 0 {
			p.port, err = freePort()
			if err != nil {
				t.Fatalf("find a free port: %v", err)
			}
		}
		if err := writeFile(s.config, []byte(buildConfig(p)), 0o644); err != nil {
			t.Fatal(err)
		}
		if attempt == 1 {
			if out, err := exec.Command(sshd, "-t", "-f", s.config).CombinedOutput(); err != nil {
				t.Fatalf("sshd -t: %v: %s\nconfig:\n%s", err, out, buildConfig(p))
			}
		}
		err := s.launch(sshd, p.port)
		if err == nil {
			break
		}
		if !errors.Is(err, errPortTaken) || attempt == attempts {
			t.Fatalf("start sshd: %v\nlog:\n%s", err, s.Log())
		}
		t.Logf("sshdtest: port %d was taken, retrying with another", p.port)
		_ = os.Remove(s.LogFile)
	}
	t.Cleanup(s.Stop)
	return s
}

var errPortTaken = errors.New("port taken")

// askpassScript is a password prompt that never answers. It first leaves
// a mark, parked.<ssh pid>, next to itself, telling ParkAtPassword that
// ssh is now waiting for the password.
const askpassScript = `#!/bin/sh
# sshdtest: a password prompt that never answers
: > "${0%/*}/parked.$PPID"
exec sleep 300
`

// launch starts sshd on port and waits until it listens.
func (s *Server) launch(sshd string, port int) error {
	out, err := os.OpenFile(filepath.Join(s.Dir, "sshd.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open sshd output: %w", err)
	}
	defer out.Close()
	cmd := exec.Command(sshd, "-D", "-f", s.config, "-E", s.LogFile)
	if s.netns != "" {
		// ip netns exec execs sshd itself: cmd's pid is the listener's.
		cmd = exec.Command("ip", "netns", "exec", s.netns, sshd, "-D", "-f", s.config, "-E", s.LogFile)
	}
	cmd.Stdout, cmd.Stderr = out, out // files: no copying goroutines
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", sshd, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.PID, s.Port = cmd, exited, cmd.Process.Pid, port
	s.netNS, _ = os.Readlink(filepath.Join("/proc", strconv.Itoa(s.PID), "ns", "net"))

	listening := func() bool {
		rows, err := tcpOf(s.PID, []int{s.PID})
		if err != nil {
			return false
		}
		for _, r := range rows {
			if r.state == tcpListen && r.local.port == port {
				return true
			}
		}
		return false
	}
	ready := poll(startTimeout, func() bool { return testproc.IsClosed(exited) || listening() })
	switch {
	case testproc.IsClosed(exited) && strings.Contains(s.Log(), "Address already in use"):
		return fmt.Errorf("sshd on port %d: %w", port, errPortTaken)
	case testproc.IsClosed(exited):
		return fmt.Errorf("sshd exited at start: %s", cmd.ProcessState)
	case !ready:
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("wait %v for sshd to listen on port %d: %w", startTimeout, port, ErrTimeout)
	}
	return nil
}

// Stop kills every process below the listener (first freezing the tree
// with SIGSTOP so nothing forks away meanwhile), then the listener
// (SIGTERM, SIGKILL after 3 s), and reaps what it can. It is idempotent
// and registered with t.Cleanup by Start.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.t.Helper()
		if s.t.Failed() {
			s.t.Logf("sshdtest: sshd log %s:\n%s", s.LogFile, tail(s.Log(), 8000))
		}
		var procs []procStat
		select {
		case <-s.exited:
			s.t.Logf("sshdtest: sshd %d had already exited (%s)", s.PID, s.cmd.ProcessState)
		default:
			procs = freezeTree(s.PID)
		}
		procs = append(procs, s.forget()...)
		procs = append(procs, sessionLeftovers(s.Addr, s.Port, s.netNS)...)
		for _, p := range procs {
			if _, ok := same(p); ok {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
			}
		}
		// os.Process signals through a pidfd: never a reused pid.
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		if !testproc.WaitClosed(s.exited, 3*time.Second) {
			_ = s.cmd.Process.Kill()
			if !testproc.WaitClosed(s.exited, 5*time.Second) {
				s.t.Errorf("sshdtest: sshd listener %d survived SIGKILL", s.PID)
			}
		}
		if stuck := killAndReap(procs, stopTimeout); len(stuck) > 0 {
			s.t.Errorf("sshdtest: sshd processes alive %v after stop: %s", stopTimeout, strings.Join(stuck, "; "))
		}
		reapAdopted()
	})
}

// remember records the processes below the listener now, so that Stop
// also kills and reaps those that a closing connection orphans (sshd's
// per-connection monitor may exit before its children, and the commands
// of sessions without a pty outlive the connection).
func (s *Server) remember() {
	if testproc.IsClosed(s.exited) {
		return // the pid may name another process now
	}
	stats, err := allStats()
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[procStat]bool{}
	}
	for _, st := range descendants(stats, s.PID) {
		s.seen[procStat{pid: st.pid, start: st.start}] = true
	}
}

// forget returns and clears what remember recorded.
func (s *Server) forget() []procStat {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]procStat, 0, len(s.seen))
	for st := range s.seen {
		out = append(out, st)
	}
	s.seen = nil
	return out
}

// poll calls cond at once and then every pollEvery until it returns true
// or timeout has passed, and tells whether it returned true.
func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
	return true
}

// Procs returns the listener and its descendants, parents first,
// zombies included (State "Z").
func (s *Server) Procs() ([]Proc, error) {
	if testproc.IsClosed(s.exited) {
		return nil, nil // the pid may name another process now
	}
	stats, err := allStats()
	if err != nil {
		return nil, err
	}
	root, ok := stats[s.PID]
	if !ok {
		return nil, nil
	}
	var out []Proc
	for _, st := range append([]procStat{root}, descendants(stats, s.PID)...) {
		out = append(out, Proc{PID: st.pid, PPID: st.ppid, State: st.state, Title: readTitle(st.pid), start: st.start})
	}
	return out, nil
}

// WaitProcs polls Procs until ok accepts them, at most timeout, and
// returns them; what names the condition in the failure message.
func (s *Server) WaitProcs(t testing.TB, what string, timeout time.Duration, ok func([]Proc) bool) []Proc {
	t.Helper()
	var procs []Proc
	var err error
	if !poll(timeout, func() bool {
		procs, err = s.Procs()
		return err == nil && ok(procs)
	}) {
		var b strings.Builder
		for _, p := range procs {
			fmt.Fprintf(&b, "\n  %d %d %s %s", p.PID, p.PPID, p.State, p.Title)
		}
		t.Fatalf("sshdtest: wait %v for %s: %v; processes:%s", timeout, what, err, b.String())
	}
	return procs
}

// SSHArgs returns the ssh arguments for a key login as User, extra
// options going before the destination.
func (s *Server) SSHArgs(extra ...string) []string {
	args := append(s.keyOptions(), "-p", strconv.Itoa(s.Port))
	args = append(args, extra...)
	return append(args, s.User+"@"+s.Addr)
}

// clientOptions are the options of every client: no user or system
// config, no host key checks, quiet.
func clientOptions() []string {
	return []string{
		"-F", "/dev/null",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR",
	}
}

// keyOptions are the options of ssh and sftp logging in with ClientKey
// only, never prompting.
func (s *Server) keyOptions() []string {
	return append(clientOptions(),
		"-o", "BatchMode=yes",
		"-i", s.ClientKey,
		"-o", "IdentitiesOnly=yes",
	)
}

// Log returns the sshd log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogFile)
	return string(b)
}

// WaitLog polls the sshd log until it contains substr, at most timeout.
func (s *Server) WaitLog(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	var log string
	if !poll(timeout, func() bool {
		log = s.Log()
		return strings.Contains(log, substr)
	}) {
		t.Fatalf("sshdtest: wait %v for %q in sshd log; log:\n%s", timeout, substr, tail(log, 4000))
	}
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// configParams are the inputs of buildConfig.
type configParams struct {
	port     int
	addr     string
	dir      string
	hostKey  string
	logLevel string
	extra    []string
}

// buildConfig writes sshd_config: the lines the harness owns, the global
// part of the extra lines, the defaults the extra lines do not set, then
// the extra lines from the first Match on.
func buildConfig(p configParams) string {
	var b strings.Builder
	line := func(s string) { b.WriteString(s + "\n") }
	line("# written by sshdtest")
	line("ListenAddress " + p.addr)
	line("Port " + strconv.Itoa(p.port))
	line("HostKey " + p.hostKey)
	line("PidFile " + filepath.Join(p.dir, "sshd.pid"))

	global, match := p.extra, []string(nil)
	for i, l := range p.extra {
		if configKey(l) == "match" {
			global, match = p.extra[:i], p.extra[i:]
			break
		}
	}
	set := map[string]bool{}
	for _, l := range global {
		set[configKey(l)] = true
		line(l)
	}
	for _, l := range []string{
		"AuthorizedKeysFile " + filepath.Join(p.dir, "authorized_keys", "%u"),
		"StrictModes no",
		"UsePAM yes",
		"PasswordAuthentication yes",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"Subsystem sftp " + sftpServerPath,
		"LogLevel " + p.logLevel,
		"MaxStartups 100",
		// Connections parked at the password prompt stay until the test
		// ends, not 120 s.
		"LoginGraceTime 0",
	} {
		if !set[configKey(l)] {
			line(l)
		}
	}
	for _, l := range match {
		line(l)
	}
	return b.String()
}

// configKey returns the lower-cased keyword of an sshd_config line ("" for
// blank lines and comments); for Subsystem it includes the subsystem name,
// which sshd may not see twice.
func configKey(l string) string {
	f := strings.FieldsFunc(strings.TrimSpace(l), func(r rune) bool { return r == ' ' || r == '\t' || r == '=' })
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return ""
	}
	k := strings.ToLower(f[0])
	if k == "subsystem" && len(f) > 1 {
		k += " " + f[1]
	}
	return k
}

// freePort returns a 127.0.0.1 TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on 127.0.0.1:0: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// openUpTo adds search permission for others to dir and each parent below
// top (t.TempDir's directories are 0700).
func openUpTo(dir, top string) error {
	top = filepath.Clean(top)
	for d := filepath.Clean(dir); d != top && d != "/" && d != "."; d = filepath.Dir(d) {
		if !strings.HasPrefix(d, top+string(filepath.Separator)) {
			break
		}
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("stat %s: %w", d, err)
		}
		if err := os.Chmod(d, fi.Mode().Perm()|0o055); err != nil {
			return fmt.Errorf("chmod %s: %w", d, err)
		}
	}
	return nil
}

// writeFile writes a file with exactly mode perm (umask notwithstanding).
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(path, perm); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

// Impostors is a real sshd with one real tty session, and beside it a
// hostile local user's fake sshd tree: a listener whose command line
// names a log file the user owns, a root monitor and its root tty child
// (testproc.User.Impostor). Detection must count the real session and
// none of the fakes.
type Impostors struct {
	Server *Server
	// RealPort is the client port of the real session.
	RealPort int
	User     testproc.User
	Fake     *testproc.Impostor
}

// StartImpostors starts the real sshd and session and the fake tree.
func StartImpostors(t testing.TB) Impostors {
	t.Helper()
	RequireRoot(t)
	RequireBinary(t, "sshd")
	RequireBinary(t, "ssh")
	srv := Start(t, Options{})
	real := srv.SSH(t, []string{"-tt"}, "sleep", "120")
	port := real.WaitLocalPort(t, 10*time.Second)
	u := testproc.HostileUser(t)
	fake := u.Impostor(t,
		"sshd: /usr/sbin/sshd -D -E "+u.Home+"/fake.log [listener] 0 of 10-100 startups",
		"sshd: root [priv]",
		"sshd: root@pts/9")
	return Impostors{Server: srv, RealPort: port, User: u, Fake: fake}
}
