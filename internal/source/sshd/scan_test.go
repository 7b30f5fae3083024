package sshd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/procfixture"
)

// generation describes the process titles of one OpenSSH generation
// (see shared/notes/facts.md).
type generation struct {
	name string
	// monitor is the monitor's program name, net the pre-auth child's.
	monitor, net string
	// authTag is the monitor's tag after authentication.
	authTag string
	// preUserNet is the pre-auth child's title before a user name.
	preUserNet string
}

var generations = []generation{
	{"<=9.7", "sshd", "sshd", "priv", "[net]"},
	{"9.8-9.9", "sshd-session", "sshd-session", "priv", "[net]"},
	{"10.0-10.4", "sshd-session", "sshd-auth", "priv", "[session-auth]"},
	{"10.5+", "sshd-session", "sshd-auth", "postauth", "[session-auth]"},
}

const bootTime = 1_700_000_000

// fixtureMachine builds a machine with, for generation g: four
// authenticated users in every mode, two sftp flavours, four connections
// at various authentication stages, zombies and a process that only
// pretends to be sshd.
func fixtureMachine(g generation) procfixture.Tree {
	t := procfixture.Tree{BootTime: bootTime}
	add := func(p procfixture.Proc) { t.Procs = append(t.Procs, p) }
	conn := func(n int) (uint64, map[int]uint64) {
		ino := uint64(10_000 + n)
		t.TCP = append(t.TCP, procfixture.TCP{
			Local: "10.0.0.5:22", Remote: fmt.Sprintf("203.0.113.%d:%d", n, 50_000+n), State: 1, Inode: ino,
		})
		// fd 4 is the connection; 7 and 8 are socketpairs to the child.
		return ino, map[int]uint64{4: ino, 7: uint64(90_000 + n), 8: uint64(91_000 + n)}
	}
	add(procfixture.Proc{PID: 100, PPID: 1, Comm: "sshd", Title: "sshd: /usr/local/sbin/sshd -D [listener] 4 of 10-100 startups", StartTicks: 100,
		Sockets: map[int]uint64{3: 9999}})
	t.TCP = append(t.TCP, procfixture.TCP{Local: "0.0.0.0:22", Remote: "0.0.0.0:0", State: 10, Inode: 9999})

	authed := func(n, pid int, user, child string, extra ...procfixture.Proc) {
		ino, fds := conn(n)
		add(procfixture.Proc{PID: pid, PPID: 100, Comm: g.monitor, Title: fmt.Sprintf("%s: %s [%s]", g.monitor, user, g.authTag), StartTicks: uint64(1000 + pid), Sockets: fds})
		add(procfixture.Proc{PID: pid + 1, PPID: pid, Comm: g.monitor, Title: g.monitor + ": " + child, StartTicks: uint64(2000 + pid), Sockets: map[int]uint64{4: ino}})
		for _, e := range extra {
			add(e)
		}
	}
	authed(1, 200, "alice", "alice@pts/0", procfixture.Proc{PID: 202, PPID: 201, Comm: "bash", Title: "-bash"})
	authed(2, 210, "alice", "alice@notty", procfixture.Proc{PID: 212, PPID: 211, Comm: "node", Title: "/home/alice/.vscode-server/bin/x/node"})
	authed(3, 220, "bob", "bob")
	authed(4, 230, "carol", "carol@notty", procfixture.Proc{PID: 232, PPID: 231, Comm: "sftp-server", Title: "/usr/lib/openssh/sftp-server"})
	authed(5, 240, "dave", "dave@notty", procfixture.Proc{PID: 242, PPID: 241, Comm: g.monitor, Title: g.monitor + ": dave@internal-sftp"})

	pending := func(n, pid int, monTitle, netTitle, netComm string) {
		_, fds := conn(n)
		add(procfixture.Proc{PID: pid, PPID: 100, Comm: g.monitor, Title: g.monitor + ": " + monTitle, StartTicks: uint64(1000 + pid), Sockets: fds})
		add(procfixture.Proc{PID: pid + 1, PPID: pid, Comm: netComm, Title: netComm + ": " + netTitle})
	}
	pending(6, 300, "root [priv]", "root [net]", g.net)
	pending(7, 310, "unknown [priv]", "unknown [net]", g.net)
	pending(8, 320, "[accepted]", g.preUserNet, g.net)
	pending(9, 330, "alice [priv]", "alice [pam]", g.monitor)

	// A monitor whose user child is a zombie: the session is over.
	_, fds := conn(10)
	add(procfixture.Proc{PID: 340, PPID: 100, Comm: g.monitor, Title: g.monitor + ": eve [priv]", StartTicks: 1340, Sockets: fds})
	add(procfixture.Proc{PID: 341, PPID: 340, Comm: g.monitor, State: 'Z'})
	// Zombies reparented to init (PID 1 does not reap here).
	add(procfixture.Proc{PID: 350, PPID: 1, Comm: g.monitor, State: 'Z'})
	add(procfixture.Proc{PID: 351, PPID: 350, Comm: g.monitor, State: 'Z'})
	// Something that only looks like sshd in ps.
	add(procfixture.Proc{PID: 360, PPID: 1, Comm: "python3", Title: "sshd: mallory@pts/9"})
	add(procfixture.Proc{PID: 1, PPID: 0, Comm: "init", Title: "/sbin/init"})
	return t
}

func writeTree(t testing.TB, tree procfixture.Tree) string {
	t.Helper()
	dir := t.TempDir()
	if err := tree.Write(dir); err != nil {
		t.Fatalf("write fixture: %v", err)
	}
	return dir
}

var fixtureNow = time.Unix(bootTime+3600, 0).UTC()

func ticks(n int) time.Time {
	return time.Unix(bootTime, 0).Add(time.Duration(n) * 10 * time.Millisecond).UTC()
}

func TestScanGenerations(t *testing.T) {
	for _, g := range generations {
		t.Run(g.name, func(t *testing.T) {
			root := writeTree(t, fixtureMachine(g))
			src := New(Options{ProcRoot: root, Clock: clock.NewFake(fixtureNow)})
			snap, err := src.Scan(context.Background())
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			sess := func(pid int, user string, n int, mode session.Mode, tty string) session.Session {
				return session.Session{
					ID: fmt.Sprintf("ssh-%d-%d", pid, 1000+pid), Kind: session.KindSSH, User: user,
					RemoteAddr: fmt.Sprintf("203.0.113.%d", n), RemotePort: 50_000 + n, LocalAddr: "10.0.0.5", LocalPort: 22,
					TTY: tty, Mode: mode, PID: pid, UserPID: pid + 1, StartedAt: ticks(2000 + pid),
				}
			}
			want := session.Snapshot{
				Time: fixtureNow,
				Sessions: []session.Session{
					sess(200, "alice", 1, session.ModeTTY, "pts/0"),
					sess(210, "alice", 2, session.ModeNoTTY, ""),
					sess(220, "bob", 3, session.ModeForward, ""),
					sess(230, "carol", 4, session.ModeSFTP, ""),
					sess(240, "dave", 5, session.ModeSFTP, ""),
				},
				PendingAuth: []session.PendingAuth{
					{Kind: session.KindSSH, User: "root", RemoteAddr: "203.0.113.6", RemotePort: 50006, LocalPort: 22, PID: 300, Since: ticks(1300)},
					{Kind: session.KindSSH, User: "unknown", RemoteAddr: "203.0.113.7", RemotePort: 50007, LocalPort: 22, PID: 310, Since: ticks(1310)},
					{Kind: session.KindSSH, User: "", RemoteAddr: "203.0.113.8", RemotePort: 50008, LocalPort: 22, PID: 320, Since: ticks(1320)},
					{Kind: session.KindSSH, User: "alice", RemoteAddr: "203.0.113.9", RemotePort: 50009, LocalPort: 22, PID: 330, Since: ticks(1330)},
					{Kind: session.KindSSH, User: "eve", RemoteAddr: "203.0.113.10", RemotePort: 50010, LocalPort: 22, PID: 340, Since: ticks(1340)},
				},
				Complete: true,
				Warnings: []session.Warning{},
			}
			if diff := cmp.Diff(want, snap); diff != "" {
				t.Errorf("snapshot mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestClassicRecipeMiscounts documents why connwatch exists: the classic
// `ps -A x | grep sshd | grep "\[priv\]" | wc -l` counts bots at the
// password prompt, and on 10.5+ counts only them.
func TestClassicRecipeMiscounts(t *testing.T) {
	for _, g := range generations {
		tree := fixtureMachine(g)
		classic := 0
		for _, p := range tree.Procs {
			if p.State != 'Z' && strings.Contains(p.Title, "sshd") && strings.Contains(p.Title, "[priv]") {
				classic++
			}
		}
		src := New(Options{ProcRoot: writeTree(t, tree), Clock: clock.NewFake(fixtureNow)})
		snap, err := src.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// 5 sessions + 4 monitors titled with a user name but no live user
		// child (root, unknown, alice at the PAM prompt, eve's ended one).
		wantClassic := 9
		if g.authTag == "postauth" {
			wantClassic = 4 // the 5 real sessions say [postauth]
		}
		if classic != wantClassic {
			t.Errorf("%s: classic count = %d, want %d", g.name, classic, wantClassic)
		}
		if len(snap.Sessions) != 5 {
			t.Errorf("%s: connwatch counts %d sessions, want 5", g.name, len(snap.Sessions))
		}
	}
}

type fakeActivity map[uint64]time.Duration

func (f fakeActivity) LastDataRecv() (map[uint64]time.Duration, error) { return f, nil }

type failingActivity struct{}

func (failingActivity) LastDataRecv() (map[uint64]time.Duration, error) {
	return nil, errors.New("netlink: operation not permitted")
}

func TestScanActivity(t *testing.T) {
	root := writeTree(t, fixtureMachine(generations[0]))
	dev := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dev, "pts"), 0o755); err != nil {
		t.Fatal(err)
	}
	pts0 := filepath.Join(dev, "pts", "0")
	if err := os.WriteFile(pts0, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	typed := fixtureNow.Add(-90 * time.Second)
	if err := os.Chtimes(pts0, typed, typed); err != nil {
		t.Fatal(err)
	}
	src := New(Options{
		ProcRoot: root, DevRoot: dev, Clock: clock.NewFake(fixtureNow),
		// alice's tty connection got data 30 s ago (keepalives), her notty
		// one 10 minutes ago; bob's has no tcp_info.
		Activity: fakeActivity{10_001: 30 * time.Second, 10_002: 10 * time.Minute},
	})
	snap, err := src.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]*time.Time{}
	for _, s := range snap.Sessions {
		got[s.PID] = s.LastActivityAt
	}
	check := func(pid int, want time.Time) {
		t.Helper()
		if got[pid] == nil || !got[pid].Equal(want) {
			t.Errorf("pid %d last activity = %v, want %v", pid, got[pid], want)
		}
	}
	check(200, fixtureNow.Add(-30*time.Second)) // newest of pts atime and TCP
	check(210, fixtureNow.Add(-10*time.Minute))
	if got[220] != nil {
		t.Errorf("bob's activity = %v, want unknown", got[220])
	}
	if idle, ok := snap.Sessions[1].Idle(fixtureNow); !ok || idle != 10*time.Minute {
		t.Errorf("Idle = %v %v, want 10m", idle, ok)
	}

	src = New(Options{ProcRoot: root, DevRoot: "-", Clock: clock.NewFake(fixtureNow), Activity: failingActivity{}})
	snap, err = src.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if snap.Complete || len(snap.Warnings) != 1 || snap.Warnings[0].Code != session.WarnActivityUnknown || snap.Blind() {
		t.Errorf("want one non-blind activity warning, got complete=%v %+v", snap.Complete, snap.Warnings)
	}
}

func TestScanWarnings(t *testing.T) {
	t.Run("hidepid hides other users", func(t *testing.T) {
		tree := fixtureMachine(generations[0])
		root := writeTree(t, tree)
		tree.MountInfo = fmt.Sprintf("22 27 0:21 / %s rw,relatime - proc proc rw,hidepid=2\n", root)
		if err := tree.Write(t.TempDir()); err != nil { // exercise MountInfo writing
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "self", "mountinfo"), []byte(tree.MountInfo), 0o644); err != nil {
			t.Fatal(err)
		}
		uid := 1000
		snap, err := New(Options{ProcRoot: root, EUID: &uid}).Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if snap.Complete || !snap.Blind() || snap.Warnings[0].Code != session.WarnProcHidden {
			t.Errorf("want blind hidepid warning, got %+v", snap.Warnings)
		}
		root0 := 0
		snap, err = New(Options{ProcRoot: root, EUID: &root0}).Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !snap.Complete {
			t.Errorf("root is not hidden by hidepid, got %+v", snap.Warnings)
		}
	})
	t.Run("socket not found", func(t *testing.T) {
		tree := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
			{PID: 10, PPID: 1, Comm: "sshd", Title: "sshd: alice [priv]"},
			{PID: 11, PPID: 10, Comm: "sshd", Title: "sshd: alice@notty"},
		}}
		snap, err := New(Options{ProcRoot: writeTree(t, tree)}).Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(snap.Sessions) != 1 || snap.Sessions[0].RemoteAddr != "" {
			t.Fatalf("want one session with unknown address, got %+v", snap.Sessions)
		}
		if snap.Complete || snap.Blind() || len(snap.Warnings) != 1 || snap.Warnings[0].Code != session.WarnSocketUnreadable {
			t.Errorf("want one non-blind socket warning, got %+v", snap.Warnings)
		}
	})
	t.Run("no proc", func(t *testing.T) {
		_, err := New(Options{ProcRoot: filepath.Join(t.TempDir(), "missing")}).Scan(context.Background())
		if !errors.Is(err, ErrProcUnavailable) {
			t.Errorf("err = %v, want ErrProcUnavailable", err)
		}
	})
}

func TestScanIPv6AndNamespaces(t *testing.T) {
	tree := procfixture.Tree{BootTime: bootTime,
		Procs: []procfixture.Proc{
			{PID: 10, PPID: 1, Comm: "sshd", Title: "sshd: alice [priv]", Sockets: map[int]uint64{3: 7}},
			{PID: 11, PPID: 10, Comm: "sshd", Title: "sshd: alice"},
		},
		TCP: []procfixture.TCP{{Local: "[2001:db8::1]:2222", Remote: "[2001:db8::99]:40000", State: 1, Inode: 7}},
	}
	snap, err := New(Options{ProcRoot: writeTree(t, tree)}).Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Sessions) != 1 {
		t.Fatalf("sessions = %+v", snap.Sessions)
	}
	s := snap.Sessions[0]
	if s.RemoteAddr != "2001:db8::99" || s.RemotePort != 40000 || s.LocalPort != 2222 || s.Mode != session.ModeForward {
		t.Errorf("session = %+v", s)
	}
}

// TestScanRemembersSafely checks the walker's memory of uninteresting
// processes: a PID reused by a new sshd is seen at once, a young process
// that execs sshd is seen on the next scan, an old one within fullEvery.
func TestScanRemembersSafely(t *testing.T) {
	clk := clock.NewFake(time.Unix(bootTime+600, 0))
	tree := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
		{PID: 1, Comm: "init", Title: "/sbin/init"},
		{PID: 10, PPID: 1, Comm: "inetd", Title: "inetd", StartTicks: 100},                // old
		{PID: 20, PPID: 1, Comm: "worker", Title: "worker", StartTicks: 600*userHZ - 100}, // 1 s old
		{PID: 30, PPID: 1, Comm: "bash", Title: "bash", StartTicks: 100},
	}}
	root := writeTree(t, tree)
	src := New(Options{ProcRoot: root, Clock: clk})
	count := func() int {
		t.Helper()
		snap, err := src.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return len(snap.Sessions)
	}
	if n := count(); n != 0 {
		t.Fatalf("sessions = %d, want 0", n)
	}
	become := func(pid int, title string) {
		t.Helper()
		// exec: same /proc/PID directory, new name and title.
		p := procfixture.Proc{PID: pid, PPID: 1, Comm: "sshd", Title: title, StartTicks: 100}
		stat := filepath.Join(root, fmt.Sprint(pid), "stat")
		if err := os.WriteFile(stat, []byte(fmt.Sprintf("%d (sshd) S 1 %d %d 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 %d 0 0\n", pid, pid, pid, p.StartTicks)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, fmt.Sprint(pid), "cmdline"), []byte(title+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
		exe := filepath.Join(root, fmt.Sprint(pid), "exe")
		os.Remove(exe)
		if err := os.Symlink("/usr/sbin/sshd", exe); err != nil {
			t.Fatal(err)
		}
	}
	addChild := func(pid, ppid int, title string) {
		t.Helper()
		extra := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{{PID: pid, PPID: ppid, Comm: "sshd", Title: title, StartTicks: 600*userHZ + 1}}}
		if err := extra.Write(root); err != nil {
			t.Fatal(err)
		}
	}

	// A young process execs sshd -i: seen on the next scan.
	become(20, "sshd: alice [priv]")
	addChild(21, 20, "sshd: alice@notty")
	if n := count(); n != 1 {
		t.Fatalf("after young exec: sessions = %d, want 1", n)
	}

	// An old process execs sshd: remembered as uninteresting until the
	// next full pass, at most fullEvery later.
	become(10, "sshd: bob [priv]")
	addChild(11, 10, "sshd: bob")
	if n := count(); n != 1 {
		t.Fatalf("old exec before full pass: sessions = %d, want 1 (remembered)", n)
	}
	clk.Advance(fullEvery)
	if n := count(); n != 2 {
		t.Fatalf("old exec after full pass: sessions = %d, want 2", n)
	}

	// A PID reused by a new process has a new /proc directory: seen at once.
	// (Write the new directory before removing the old one: ext4, unlike
	// procfs, would hand the freed inode number straight back.)
	staging := t.TempDir()
	reused := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{{PID: 30, PPID: 1, Comm: "sshd", Title: "sshd: carol [priv]", StartTicks: 100}}}
	if err := reused.Write(staging); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "30")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(staging, "30"), filepath.Join(root, "30")); err != nil {
		t.Fatal(err)
	}
	addChild(31, 30, "sshd: carol@pts/1")
	clk.Advance(time.Second)
	if n := count(); n != 3 {
		t.Fatalf("after PID reuse: sessions = %d, want 3", n)
	}
}

func TestWatches(t *testing.T) {
	src := New(Options{ProcRoot: writeTree(t, fixtureMachine(generations[0])), Clock: clock.NewFake(fixtureNow)})
	if src.Watches(100) {
		t.Error("watches before any scan")
	}
	if _, err := src.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l := src.Listeners(); len(l) != 1 || !strings.Contains(l[0], "/usr/local/sbin/sshd -D [listener]") {
		t.Errorf("listeners %q", l)
	}
	for pid, want := range map[int]bool{100: true, 200: true, 201: true, 232: true, 202: false, 350: false, 360: false} {
		if got := src.Watches(pid); got != want {
			t.Errorf("Watches(%d) = %v, want %v", pid, got, want)
		}
	}
}

// TestScanRemembersSSHDSafely checks the title-only reads of remembered
// sshd processes: an exec into sftp-server is noticed, and a child whose
// monitor died is not given to a new monitor that reuses the PID.
func TestScanRemembersSSHDSafely(t *testing.T) {
	clk := clock.NewFake(time.Unix(bootTime+600, 0))
	tree := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
		{PID: 1, Comm: "init", Title: "/sbin/init"},
		{PID: 10, PPID: 1, Comm: "sshd", Title: "sshd: alice [priv]", StartTicks: 100},
		{PID: 11, PPID: 10, Comm: "sshd", Title: "sshd: alice@notty", StartTicks: 101},
		{PID: 12, PPID: 11, Comm: "sshd", Title: "sshd: alice@notty", StartTicks: 102}, // forked, not yet exec'd
		{PID: 20, PPID: 1, Comm: "sshd", Title: "sshd: bob [priv]", StartTicks: 200},
		{PID: 21, PPID: 20, Comm: "sshd", Title: "sshd: bob", StartTicks: 201},
	}}
	root := writeTree(t, tree)
	src := New(Options{ProcRoot: root, Clock: clk})
	scan := func() map[string]session.Session {
		t.Helper()
		clk.Advance(time.Second)
		snap, err := src.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]session.Session{}
		for _, s := range snap.Sessions {
			out[s.User] = s
		}
		return out
	}
	if got := scan(); got["alice"].Mode != session.ModeNoTTY || got["bob"].Mode != session.ModeForward {
		t.Fatalf("first scan %+v", got)
	}
	// 12 execs sftp-server: same /proc directory, new comm and cmdline.
	mustWrite(t, filepath.Join(root, "12", "stat"), []byte("12 (sftp-server) S 11 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 102 0 0\n"))
	mustWrite(t, filepath.Join(root, "12", "cmdline"), []byte("/usr/lib/openssh/sftp-server\x00"))
	if got := scan(); got["alice"].Mode != session.ModeSFTP {
		t.Errorf("after exec: alice mode %v, want sftp", got["alice"].Mode)
	}
	// Bob's monitor dies; its child is reparented to init and lingers;
	// a new monitor (carol, still at the password prompt) gets PID 20.
	staging := t.TempDir()
	carol := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{{PID: 20, PPID: 1, Comm: "sshd", Title: "sshd: carol [priv]", StartTicks: 300}}}
	if err := carol.Write(staging); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "20")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(staging, "20"), filepath.Join(root, "20")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(root, "21", "stat"), []byte("21 (sshd) S 1 21 21 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 201 0 0\n"))
	got := scan()
	if _, ok := got["carol"]; ok {
		t.Errorf("carol at the password prompt counted as a session through bob's orphaned child: %+v", got["carol"])
	}
	if _, ok := got["bob"]; ok {
		t.Errorf("bob still counted after his monitor died")
	}
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWatchFollowsForks checks the watch set between scans: children
// forked by verified sshd processes are watched at once, a child that
// execs something other than sshd is dropped, exits are remembered for
// WasSSHD, and an impostor's forks are nobody's business.
func TestWatchFollowsForks(t *testing.T) {
	clk := clock.NewFake(fixtureNow)
	root := writeTree(t, fixtureMachine(generations[1]))
	src := New(Options{ProcRoot: root, Clock: clk})
	if _, err := src.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	select { // the first scan changed the set
	case <-src.WatchChanged():
	default:
		t.Error("no change after the first scan")
	}
	check := func(pid int, watched, was bool) {
		t.Helper()
		if got := src.Watches(pid); got != watched {
			t.Errorf("Watches(%d) = %v, want %v", pid, got, watched)
		}
		if got := src.WasSSHD(pid); got != was {
			t.Errorf("WasSSHD(%d) = %v, want %v", pid, got, was)
		}
	}
	if !src.Forked(100, 9000) { // the listener forks a connection
		t.Error("fork by the listener not reported")
	}
	check(9000, true, true)
	if !slices.Contains(src.WatchedPIDs(), 9000) {
		t.Errorf("WatchedPIDs %v lacks 9000", src.WatchedPIDs())
	}
	if src.Forked(360, 9100) || src.Forked(202, 9101) { // the impostor; alice's shell
		t.Error("fork by an unwatched process reported")
	}
	check(9100, false, false)

	// 9000 execs sshd-session (9.8+): still watched.
	extra := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
		{PID: 9000, PPID: 100, Comm: "sshd-session", Title: "sshd-session: [accepted]"},
		{PID: 9002, PPID: 9000, Comm: "bash", Title: "-bash", Exe: "/usr/bin/bash"},
	}}
	if err := extra.Write(root); err != nil {
		t.Fatal(err)
	}
	if !src.Execed(9000) {
		t.Error("exec of a watched child not reported")
	}
	check(9000, true, true)
	// Its child execs a shell: dropped, remembered.
	src.Forked(9000, 9002)
	if !src.Execed(9002) {
		t.Error("exec of a watched child not reported")
	}
	check(9002, false, true)
	if src.Forked(9002, 9003) {
		t.Error("the shell's fork reported")
	}

	if !src.Exited(9000, 100) {
		t.Error("exit of a watched child not reported")
	}
	check(9000, false, true)
	if !src.Exited(9500, 100) {
		t.Error("exit of an unknown child of the listener not reported")
	}
	if src.Exited(9501, 1) {
		t.Error("exit of an unrelated process reported")
	}

	// A forked child no scan confirms is dropped after forkedFor; what is
	// gone is forgotten after recentFor.
	src.Forked(100, 9004)
	clk.Advance(forkedFor)
	if _, err := src.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(9004, false, true)
	clk.Advance(recentFor)
	if _, err := src.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	check(9004, false, false)
	check(9002, false, false)
	check(100, true, true)
}

func TestTrim(t *testing.T) {
	m := map[int]time.Time{}
	for i := range 11 {
		m[i] = fixtureNow.Add(time.Duration(i) * time.Second)
	}
	trim(m, 10)
	if len(m) != 6 || m[5].IsZero() || !m[4].IsZero() {
		t.Errorf("trim kept %v", m)
	}
}
