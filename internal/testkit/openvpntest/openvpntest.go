// Package openvpntest runs a real OpenVPN server and real clients in
// network namespaces the test creates, so that tests can watch the status
// files and the management interface of a live server:
//
//	srv := openvpntest.Start(t, openvpntest.Options{StatusVersion: 2})
//	c := srv.Connect(t, "alice", openvpntest.ClientOptions{})
//	// srv.Management(), srv.StatusFile now show alice
//	c.Stop() // SIGTERM: the client tells the server it leaves
//
// Start makes a throwaway PKI with crypto/x509 (an ECDSA P-256 CA, a
// server certificate with the serverAuth extended key usage, one client
// certificate per common name with clientAuth; "dh none"), writes the
// configurations to t.TempDir() and runs openvpn in a server namespace
// linked to the root namespace (where the test process runs and reaches
// a TCP management interface) and to a client namespace (where every
// client of the server runs, each with its own tun device and UDP port).
// The server uses "dev tun", "topology subnet" and a /24 of 10.232.0.0/16,
// which exists only inside the two namespaces.
//
// Everything needs root, ip(8) and openvpn: when one is missing a test is
// skipped with the reason, or failed when CI=true. Every wait is bounded.
// Cleanup stops the clients and the server and removes the namespaces
// with every process left in them.
package openvpntest

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// Management says where the server's management interface listens.
// OpenVPN has a single management directive, so a server has at most one.
type Management int

// Management interfaces.
const (
	// ManagementUnix listens on a unix socket (Server.ManagementSocket).
	ManagementUnix Management = iota
	// ManagementTCP listens on TCP at the server namespace's address on
	// its link to the root namespace (Server.ManagementAddr).
	ManagementTCP
	// ManagementNone has no management interface.
	ManagementNone
)

const (
	// Port is the server's VPN port, UDP or TCP.
	Port = 1194
	// ManagementPort is the TCP management port.
	ManagementPort = 7505

	// InitDone is what openvpn prints when it is up.
	InitDone = "Initialization Sequence Completed"

	startTimeout   = 20 * time.Second
	connectTimeout = 20 * time.Second
	stopTimeout    = 10 * time.Second
)

// Options configure Start. The zero value is a UDP server with a unix
// management socket and no status file.
type Options struct {
	// Proto is "udp" (default, with explicit-exit-notify on both sides)
	// or "tcp".
	Proto string
	// IPv6 adds IPv6 addresses (fd00::/8) to the server–client link, runs
	// the server dual-stack (udp6 or tcp6) and makes clients connect over
	// IPv6.
	IPv6 bool
	// Management picks the management interface.
	Management Management
	// ManagementPassword, when set, is written to a password file given
	// to the management directive.
	ManagementPassword string
	// StatusVersion 1, 2 or 3 writes a status file of that version every
	// StatusInterval; 0 writes none.
	StatusVersion int
	// StatusInterval is the status file's refresh in seconds (OpenVPN's
	// unit), default 1.
	StatusInterval int
	// Users, when not empty, turns on username/password authentication:
	// auth-user-pass-verify with a script (via-file, script-security 2)
	// that accepts exactly these username → password pairs. A client
	// that sends no username still gets in on its certificate
	// (auth-user-pass-optional). Names and passwords must not contain a
	// single quote.
	Users map[string]string
	// Keepalive is the server's keepalive directive, default "1 3": a
	// client that vanishes without notice is dropped after 6 s.
	Keepalive string
	// ExtraConfig are server configuration lines added at the end.
	ExtraConfig []string
}

// Server is a running openvpn server.
type Server struct {
	// NS is the server's namespace, ClientNS the one its clients run in.
	NS, ClientNS *netnstest.NS
	// ServerAddr is the server's address on the link to ClientNS (what
	// clients connect to); ClientAddr the client namespace's, which is
	// the real address the server sees for every client.
	ServerAddr, ClientAddr string
	// Dir holds the PKI, the configurations and the status file.
	Dir string
	// Proto is "udp" or "tcp" (IPv6 or not).
	Proto string
	// Subnet is the VPN's /24 ("10.232.7.0"), ServerVPNAddr the server's
	// address in it.
	Subnet, ServerVPNAddr string
	// ManagementSocket or ManagementAddr ("10.231.x.y:7505") is set by
	// the management interface in use; ManagementPasswordFile when it has
	// a password.
	ManagementSocket       string
	ManagementAddr         string
	ManagementPasswordFile string
	// StatusFile is set when StatusVersion is.
	StatusFile    string
	StatusVersion int

	t       testing.TB
	opts    Options
	pki     *pki
	proc    *process
	mu      sync.Mutex
	clients int
}

// process is a started command whose output is collected.
type process struct {
	cmd  *exec.Cmd
	log  *processLog
	done chan struct{} // closed when reaped
}

// Start starts an OpenVPN server and waits (at most 20 s) until it is
// up. t.Cleanup stops it.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	openvpn := netnstest.RequireBinary(t, "openvpn")
	if o.Proto == "" {
		o.Proto = "udp"
	}
	if o.Proto != "udp" && o.Proto != "tcp" {
		t.Fatalf("openvpntest: Proto %q: want udp or tcp", o.Proto)
	}
	if o.StatusVersion < 0 || o.StatusVersion > 3 {
		t.Fatalf("openvpntest: StatusVersion %d: want 0 to 3", o.StatusVersion)
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = 1
	}
	if o.Keepalive == "" {
		o.Keepalive = "1 3"
	}
	for n, pw := range o.Users {
		if !safeValue.MatchString(n) || !safeValue.MatchString(pw) {
			t.Fatalf("openvpntest: Users: %q and its password must be non-empty without quotes or newlines", n)
		}
	}
	srvNS := netnstest.New(t)
	cliNS := netnstest.New(t)
	s := &Server{NS: srvNS, ClientNS: cliNS, Dir: t.TempDir(), Proto: o.Proto, StatusVersion: o.StatusVersion, t: t, opts: o}
	s.ServerAddr, s.ClientAddr = srvNS.Link(t, cliNS)
	if o.IPv6 {
		s.ServerAddr, s.ClientAddr = addIPv6(t, srvNS, cliNS, s.ServerAddr, s.ClientAddr)
	}
	x, err := rand.Int(rand.Reader, big.NewInt(256))
	if err != nil {
		t.Fatalf("openvpntest: pick a subnet: %v", err)
	}
	s.Subnet = fmt.Sprintf("10.232.%d.0", x.Int64())
	s.ServerVPNAddr = fmt.Sprintf("10.232.%d.1", x.Int64())

	if s.pki, err = newPKI(s.Dir); err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	cert, key, err := s.pki.issue("server", "server", x509.ExtKeyUsageServerAuth)
	if err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	conf := []string{
		"dev tun",
		"topology subnet",
		"server " + s.Subnet + " 255.255.255.0",
		"port " + strconv.Itoa(Port),
		"proto " + s.proto(),
		"ca " + s.pki.CAFile,
		"cert " + cert,
		"key " + key,
		"dh none",
		"keepalive " + o.Keepalive,
		"verb 3",
	}
	if o.Proto == "udp" {
		conf = append(conf, "explicit-exit-notify 1")
	}
	if err := s.managementConfig(&conf); err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	if o.StatusVersion > 0 {
		s.StatusFile = filepath.Join(s.Dir, "status.txt")
		conf = append(conf, fmt.Sprintf("status %s %d", s.StatusFile, o.StatusInterval), fmt.Sprintf("status-version %d", o.StatusVersion))
	}
	if len(o.Users) > 0 {
		script := filepath.Join(s.Dir, "verify.sh")
		if err := writeFile(script, verifyScript(o.Users), 0o755); err != nil {
			t.Fatalf("openvpntest: %v", err)
		}
		conf = append(conf, "script-security 2", "auth-user-pass-verify "+script+" via-file", "auth-user-pass-optional")
	}
	conf = append(conf, o.ExtraConfig...)
	path := filepath.Join(s.Dir, "server.conf")
	if err := writeFile(path, strings.Join(conf, "\n")+"\n", 0o644); err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	s.proc, err = startProcess(srvNS, openvpn, "--config", path)
	if err != nil {
		t.Fatalf("openvpntest: %v", err)
	}
	t.Cleanup(s.stop)
	if _, _, err := s.proc.log.waitFor(0, startTimeout, InitDone); err != nil {
		t.Fatalf("openvpntest: start server: %v\nconfig:\n%s\nlog:\n%s", err, strings.Join(conf, "\n"), tail(s.Log(), 8000))
	}
	return s
}

// proto is the server's proto directive.
func (s *Server) proto() string {
	p := s.opts.Proto
	if s.opts.IPv6 {
		p += "6"
	}
	if p == "tcp" || p == "tcp6" {
		p += "-server"
	}
	return p
}

// managementConfig adds the management directive.
func (s *Server) managementConfig(conf *[]string) error {
	pw := ""
	if s.opts.ManagementPassword != "" {
		s.ManagementPasswordFile = filepath.Join(s.Dir, "management.pw")
		if err := writeFile(s.ManagementPasswordFile, s.opts.ManagementPassword+"\n", 0o600); err != nil {
			return err
		}
		pw = " " + s.ManagementPasswordFile
	}
	switch s.opts.Management {
	case ManagementUnix:
		// A unix socket path holds at most 107 bytes: t.TempDir() can be
		// longer, so the socket gets a short directory of its own.
		dir, err := os.MkdirTemp("", "ovpn")
		if err != nil {
			return fmt.Errorf("create socket directory: %w", err)
		}
		s.t.Cleanup(func() { _ = os.RemoveAll(dir) })
		s.ManagementSocket = filepath.Join(dir, "mgmt.sock")
		*conf = append(*conf, "management "+s.ManagementSocket+" unix"+pw)
	case ManagementTCP:
		s.ManagementAddr = net.JoinHostPort(s.NS.Addr, strconv.Itoa(ManagementPort))
		*conf = append(*conf, fmt.Sprintf("management %s %d%s", s.NS.Addr, ManagementPort, pw))
	case ManagementNone:
	default:
		return fmt.Errorf("unknown Management %d", s.opts.Management)
	}
	return nil
}

// Management returns the management address in the form connwatch's
// configuration takes ("unix:/path" or "tcp:host:port"), or "" for none.
func (s *Server) Management() string {
	switch {
	case s.ManagementSocket != "":
		return "unix:" + s.ManagementSocket
	case s.ManagementAddr != "":
		return "tcp:" + s.ManagementAddr
	}
	return ""
}

// Log returns what the server printed so far.
func (s *Server) Log() string { return s.proc.log.String() }

// LogLines returns the server's output lines so far, with the time each
// was read.
func (s *Server) LogLines() []Line { return s.proc.log.Lines() }

// WaitLog waits at most timeout for a server log line containing sub
// and returns it.
func (s *Server) WaitLog(t testing.TB, sub string, timeout time.Duration) Line {
	t.Helper()
	ln, _, err := s.proc.log.waitFor(0, timeout, sub)
	if err != nil {
		t.Fatalf("openvpntest: server log: %v\nlog:\n%s", err, tail(s.Log(), 8000))
	}
	return ln
}

// stop sends SIGTERM, then SIGKILL after 5 s, and reaps the server.
func (s *Server) stop() {
	if s.t.Failed() {
		s.t.Logf("openvpntest: server log:\n%s", tail(s.Log(), 8000))
	}
	s.proc.stop(s.t, syscall.SIGTERM, 5*time.Second)
}

// startProcess starts name in ns with its output collected. The
// namespace's removal waits for it to be reaped.
func startProcess(ns *netnstest.NS, name string, args ...string) (*process, error) {
	cmd := ns.Command(name, args...)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("create pipe: %w", err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	// ip netns exec execs openvpn: the signal reaches openvpn itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("run %s in %s: %w", name, ns.Name, err)
	}
	_ = w.Close()
	p := &process{cmd: cmd, log: newProcessLog(), done: make(chan struct{})}
	go func() {
		p.log.consume(r)
		_ = r.Close()
	}()
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	ns.AfterKill(func() { testproc.WaitClosed(p.done, 5*time.Second) })
	return p, nil
}

// stop signals the process and waits at most grace for it to exit, then
// kills it. It returns whether it exited within grace.
func (p *process) stop(t testing.TB, sig syscall.Signal, grace time.Duration) bool {
	if testproc.IsClosed(p.done) {
		return true
	}
	_ = p.cmd.Process.Signal(sig)
	if testproc.WaitClosed(p.done, grace) {
		return true
	}
	_ = p.cmd.Process.Kill()
	if !testproc.WaitClosed(p.done, stopTimeout) {
		t.Errorf("openvpntest: process %d survived SIGKILL", p.cmd.Process.Pid)
	}
	return false
}

// addIPv6 puts fd00::/8 addresses on the link between a and b, whose
// IPv4 addresses are aAddr and bAddr, and returns them.
func addIPv6(t testing.TB, a, b *netnstest.NS, aAddr, bAddr string) (string, string) {
	t.Helper()
	x, err := rand.Int(rand.Reader, big.NewInt(1<<16))
	if err != nil {
		t.Fatalf("openvpntest: pick an IPv6 prefix: %v", err)
	}
	prefix := fmt.Sprintf("fd63:7732:%x::", x.Int64())
	a6, b6 := prefix+"1", prefix+"2"
	for _, e := range []struct {
		ns          *netnstest.NS
		addr, addr6 string
	}{{a, aAddr, a6}, {b, bAddr, b6}} {
		dev := deviceWith(t, e.ns, e.addr)
		netnstest.Run(t, "", "ip", "-n", e.ns.Name, "-6", "addr", "add", e.addr6+"/64", "dev", dev, "nodad")
	}
	return a6, b6
}

// deviceWith returns the interface in ns that has the IPv4 address addr.
func deviceWith(t testing.TB, ns *netnstest.NS, addr string) string {
	t.Helper()
	out := netnstest.Run(t, "", "ip", "-n", ns.Name, "-o", "-4", "addr", "show")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && strings.HasPrefix(f[3], addr+"/") {
			dev, _, _ := strings.Cut(f[1], "@")
			return dev
		}
	}
	t.Fatalf("openvpntest: no interface in %s has %s:\n%s", ns.Name, addr, out)
	return ""
}

// verifyScript is an auth-user-pass-verify script (via-file: its
// argument is a file holding the username and the password, one a line)
// accepting exactly the pairs in users, and an empty username.
func verifyScript(users map[string]string) string {
	names := make([]string, 0, len(users))
	for n := range users {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(`#!/bin/sh
# openvpntest: accept the configured username/password pairs, and
# clients that send none (auth-user-pass-optional)
{ read -r username; read -r password; } < "$1"
[ -z "$username" ] && exit 0
case "$username" in
`)
	for _, n := range names {
		fmt.Fprintf(&b, "'%s') [ \"$password\" = '%s' ] && exit 0 ;;\n", n, users[n])
	}
	b.WriteString("esac\nexit 1\n")
	return b.String()
}

var safeValue = regexp.MustCompile(`^[^'\n]+$`)

func writeFile(path, content string, mode os.FileMode) error {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
