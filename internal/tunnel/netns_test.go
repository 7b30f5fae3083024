package tunnel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

// TestTunnelSurvivesBlackhole runs a LocalForward through a real sshd in
// a network namespace of its own, reached over a veth pair, and cuts the
// link silently (an nftables drop rule inside the namespace: no RST, no
// ICMP) while the tunnel is up, with ssh_config's defaults otherwise (no
// ConnectTimeout). It measures how long keepalives take to notice, and
// how long data takes to flow again once the rule is gone: after a short
// cut, after one long enough for a single connect() to sit in SYN
// retransmissions (1 + 2 + 4 s), and with Retry standing in for a
// network-change signal while an attempt is in flight. Data must flow
// within recoverBound of the link's return each time: staggered
// attempts see the link come back within half a second or so, the rest
// is room for a loaded CI machine.
func TestTunnelSurvivesBlackhole(t *testing.T) {
	const (
		interval     = time.Second
		countMax     = 2
		recoverBound = 3 * time.Second
	)
	ns, tun, local := netnsTunnel(t, interval, countMax, Options{})
	up := func() bool { return tun.Status().State == StateUp }

	// cut blackholes the link, waits for the tunnel to notice, keeps it
	// cut for hold more, restores it (when ready says so, polled) and
	// checks that a connection opened on restore gets its echo within
	// recoverBound.
	cut := func(name string, hold time.Duration, ready func() bool, onRestore func()) {
		t.Helper()
		ns.blackhole(t)
		detect := within(t, 3*time.Duration(countMax)*interval, name+": dead link detected", func() bool { return !up() })
		time.Sleep(hold)
		if ready != nil {
			within(t, 10*time.Second, name+": ready to restore", ready)
		}
		st := tun.Status()
		ns.restore(t)
		restored := time.Now()
		if onRestore != nil {
			onRestore()
		}
		if err := roundTripWithin(local, name+" after restore", recoverBound); err != nil {
			t.Fatalf("%s: no echo within %s of the link's return: %v\nstatus %+v", name, recoverBound, err, tun.Status())
		}
		toData := time.Since(restored)
		t.Logf("%s: detected after %s (%d × %s keepalives); restored in state %s (since %s); data after %s; last error %q",
			name, detect.Round(time.Millisecond), countMax, interval, st.State, time.Since(st.Since).Round(time.Millisecond),
			toData.Round(time.Millisecond), st.LastError)
		if lim := time.Duration(countMax+2) * interval; detect >= lim {
			t.Errorf("%s: dead link detected after %s, want < %s", name, detect, lim)
		}
		within(t, 5*time.Second, name+": up", up)
	}

	cut("short", 2*time.Second, nil, nil)
	cut("long", 8*time.Second, nil, nil)
	// Retry on the network's return while a dial is in flight (its SYN
	// dropped): the attempt is abandoned for a fresh one at once.
	dialing := func() bool {
		st := tun.Status()
		return st.State == StateConnecting && time.Since(st.Since) > 200*time.Millisecond
	}
	cut("retry-dial", 0, dialing, tun.Retry)
	st := tun.Status()
	t.Logf("final status: state %s, reconnects %d, forward conns %d", st.State, st.Reconnects, st.Forwards[0].Conns)
	if st.Reconnects != 3 {
		t.Errorf("reconnects = %d, want 3", st.Reconnects)
	}
}

// TestStandbyTakesOverDroppedFlow drops only the tunnel's own TCP flow
// (an nftables rule on its client port, both ways, inside the server's
// namespace: what a NAT or stateful firewall that lost the flow does)
// while new connections still get through, against a real sshd. New
// forwarded connections must flow again through a standby connection
// well before the keepalives would have run out, with the tunnel up
// throughout.
func TestStandbyTakesOverDroppedFlow(t *testing.T) {
	const (
		interval = 2 * time.Second
		countMax = 3
		standby  = 500 * time.Millisecond
	)
	ns, tun, local := netnsTunnel(t, interval, countMax, Options{StandbyAfter: standby})
	tun.mu.Lock()
	_, cport, _ := net.SplitHostPort(tun.cur.conn.LocalAddr().String())
	tun.mu.Unlock()
	since := tun.Status().Since

	ns.dropFlow(t, cport)
	t.Cleanup(func() { ns.restore(t) })
	dropped := time.Now()
	if err := roundTripWithin(local, "after the drop", 3*interval); err != nil {
		t.Fatalf("no echo through a new connection after the flow was dropped: %v\nstatus %+v", err, tun.Status())
	}
	d := time.Since(dropped)
	st := tun.Status()
	t.Logf("flow dropped: new connections flow again after %s (keepalive every %s, standby after %s; keepalives alone would take %d × %s and a reconnect); status %+v",
		d.Round(time.Millisecond), interval, standby, countMax, interval, st)
	if lim := interval + standby + 1500*time.Millisecond; d > lim {
		t.Errorf("took %s, want within %s", d, lim)
	}
	if st.State != StateUp || !st.Since.Equal(since) || st.Handovers != 1 || st.Reconnects != 0 {
		t.Errorf("status %+v: want up since %s throughout, 1 handover, 0 reconnects", st, since)
	}
}

// netnsTunnel runs a Tunnel with one LocalForward through a real sshd in
// a network namespace of its own, reached over a veth pair (keepalives
// every interval, countMax of them; opt adds to the test's logger and
// agent socket), and returns once data went through it.
func netnsTunnel(t *testing.T, interval time.Duration, countMax int, opt Options) (*netns, *Tunnel, string) {
	t.Helper()
	sshdtest.RequireRoot(t)
	for _, b := range []string{"ip", "nft", "/usr/sbin/sshd", "ssh-keygen"} {
		sshdtest.RequireBinary(t, b)
	}
	ns := newNetns(t)
	ns.startSSHD(t)
	echo := ns.echoServer(t)
	eh, ep, _ := net.SplitHostPort(echo)
	epn, _ := strconv.Atoi(ep)
	lport := freeLocalPort(t)
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(lport))
	opt.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	opt.AgentSocket = "/nonexistent"
	tun := New(Spec{
		Host: "netns", HostName: ns.Addr, Port: 22, User: "root",
		IdentityFiles: []string{ns.clientKey}, IdentitiesOnly: true,
		UserKnownHostsFiles:   []string{ns.knownHosts},
		StrictHostKeyChecking: HostKeyStrict,
		ServerAliveInterval:   interval, ServerAliveCountMax: countMax,
		Forwards: []Forward{{Kind: Local, BindHost: "127.0.0.1", BindPort: lport, DestHost: eh, DestPort: epn}},
	}, opt)
	runTunnel(t, tun)
	within(t, 10*time.Second, "tunnel up", func() bool { return tun.Status().State == StateUp })
	if err := roundTrip(local, "before the cut"); err != nil {
		t.Fatalf("round trip before the cut: %v\nstatus %+v\nsshd log:\n%s", err, tun.Status(), ns.sshdLog())
	}
	return ns, tun, local
}

// roundTripWithin is roundTrip with a deadline of d for the whole
// exchange, for a connection that waits for the link to come back.
func roundTripWithin(addr, msg string, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return errors.New("echo mismatch: " + got)
	}
	return nil
}

// netns is a network namespace made for one test (see netnstest) with
// an sshd in it.
type netns struct {
	*netnstest.NS
	dir        string
	clientKey  string // authorised for root by the namespace's sshd
	knownHosts string // holds the sshd's host key for Addr
}

const nftTable = "cwtun"

// newNetns creates the namespace and registers its removal (and that of
// every process left inside).
func newNetns(t *testing.T) *netns {
	t.Helper()
	return &netns{NS: netnstest.New(t), dir: t.TempDir()}
}

// orphans returns the zombie children of this process whose command is
// sshd: those left by the namespace's sshd.
func (n *netns) orphans() []int {
	me := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 || !strings.Contains(s[:i], "(sshd") {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == strconv.Itoa(me) {
			out = append(out, p)
		}
	}
	return out
}

// startSSHD starts sshd -D inside the namespace on Addr:22, with its
// own host key and a client key authorised for root, and waits (at most
// 10 s) until it answers.
func (n *netns) startSSHD(t *testing.T) {
	t.Helper()
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	hostKey := filepath.Join(n.dir, "host_ed25519")
	n.clientKey = filepath.Join(n.dir, "client_ed25519")
	for _, k := range []string{hostKey, n.clientKey} {
		netnstest.Run(t, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cwtun-netns", "-f", k)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	ak := filepath.Join(n.dir, "authorized_keys")
	if err := os.Mkdir(ak, 0o755); err != nil {
		t.Fatal(err)
	}
	pub, err := os.ReadFile(n.clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ak, "root"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	n.knownHosts = filepath.Join(n.dir, "known_hosts")
	if err := os.WriteFile(n.knownHosts, []byte(n.Addr+" "+strings.TrimSpace(string(hostPub))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(n.dir, "sshd_config")
	cfg := strings.Join([]string{
		"# written by TestTunnelSurvivesBlackhole",
		"ListenAddress " + n.Addr,
		"Port 22",
		"HostKey " + hostKey,
		"PidFile " + filepath.Join(n.dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(ak, "%u"),
		"StrictModes no",
		"UsePAM yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PermitRootLogin prohibit-password",
		"AllowTcpForwarding yes",
		"LogLevel VERBOSE",
		"",
	}, "\n")
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	netnstest.Run(t, "", "/usr/sbin/sshd", "-t", "-f", config)
	out, err := os.Create(filepath.Join(n.dir, "sshd.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := n.Command("/usr/sbin/sshd", "-D", "-f", config, "-E", filepath.Join(n.dir, "sshd.log"))
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd in %s: %v", n.Name, err)
	}
	// Once every process in the namespace is killed: wait for sshd, and
	// reap its per-connection children, re-parented to this process (a
	// child subreaper, above), nothing else.
	n.AfterKill(func() {
		_ = cmd.Wait()
		for _, p := range n.orphans() {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(p, &ws, unix.WNOHANG, nil)
		}
	})
	addr := net.JoinHostPort(n.Addr, "22")
	start := time.Now()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("sshd in %s not answering on %s after 10 s: %v\nlog:\n%s", n.Name, addr, err, n.sshdLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *netns) sshdLog() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "sshd.log"))
	o, _ := os.ReadFile(filepath.Join(n.dir, "sshd.out"))
	return string(b) + string(o)
}

// echoServer listens on Addr inside the namespace and echoes what it
// reads. The socket is made on a thread moved into the namespace (a
// socket stays in the namespace it was made in); that thread is thrown
// away afterwards, and the socket is served from ordinary goroutines.
func (n *netns) echoServer(t *testing.T) string {
	t.Helper()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Unlocked only once back in the original namespace; a thread
		// left locked ends with the goroutine (or, if it is the main
		// thread, is wedged: still in the test namespace, which
		// netnstest reports at removal).
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		f, err := os.Open(filepath.Join("/run/netns", n.Name))
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("setns %s: %w", n.Name, err)}
			return
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(n.Addr, "0"))
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("echo server in %s: %v", n.Name, r.err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	t.Cleanup(func() {
		r.ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, c); c.Close() })
		}
	})
	return r.ln.Addr().String()
}

// blackhole drops everything arriving on the namespace's veth end,
// silently.
func (n *netns) blackhole(t *testing.T) {
	t.Helper()
	rules := fmt.Sprintf("table inet %[1]s {\n chain in {\n  type filter hook input priority -300; policy accept;\n  iifname %[2]q drop\n }\n}\n", nftTable, n.If)
	netnstest.Run(t, rules, "ip", "netns", "exec", n.Name, "nft", "-f", "-")
}

// dropFlow drops, silently and both ways, the packets of the flows from
// client port cport (as a NAT or firewall that lost their state would)
// inside the namespace; restore undoes it.
func (n *netns) dropFlow(t *testing.T, cport string) {
	t.Helper()
	rules := fmt.Sprintf("table inet %[1]s {\n chain in {\n  type filter hook input priority -300; policy accept;\n  tcp sport %[2]s drop\n }\n chain out {\n  type filter hook output priority -300; policy accept;\n  tcp dport %[2]s drop\n }\n}\n", nftTable, cport)
	netnstest.Run(t, rules, "ip", "netns", "exec", n.Name, "nft", "-f", "-")
}

// restore removes the blackhole or the dropped flow.
func (n *netns) restore(t *testing.T) {
	t.Helper()
	n.Run(t, "nft", "delete", "table", "inet", nftTable)
}
