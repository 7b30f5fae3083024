package sshd

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/procfixture"
)

// scanCounted scans once and says whether the scan walked /proc.
func scanCounted(t *testing.T, src *Source) (session.Snapshot, bool) {
	t.Helper()
	walks := src.walks
	snap, err := src.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return snap, src.walks > walks
}

// TestRescanSameAsWalk: with process events, a scan that reads only the
// sshd trees sees what a walk of every process sees, for every OpenSSH
// generation: sessions, pending connections, modes, impostors' warnings.
func TestRescanSameAsWalk(t *testing.T) {
	for _, g := range generations {
		t.Run(g.name, func(t *testing.T) {
			tree := fixtureMachine(g)
			imp := impostorTree(g) // its fakes, PIDs 500 on
			for _, p := range imp.Procs {
				if p.PID >= 500 {
					tree.Procs = append(tree.Procs, p)
				}
			}
			tree.HostFiles = imp.HostFiles
			root := writeTree(t, tree)
			clk := clock.NewFake(fixtureNow)
			src := New(Options{ProcRoot: root, Clock: clk})
			src.SetEvents(true)
			walked, w := scanCounted(t, src)
			if !w {
				t.Fatal("the first scan did not walk")
			}
			clk.Advance(time.Second)
			rescanned, w := scanCounted(t, src)
			if w {
				t.Fatal("a scan with process events walked within EventWalkEvery")
			}
			rescanned.Time = walked.Time
			if diff := cmp.Diff(walked, rescanned); diff != "" {
				t.Errorf("rescan differs from the walk (-walk +rescan):\n%s", diff)
			}
			if len(walked.Sessions) != 5 || len(walked.Warnings) == 0 {
				t.Errorf("walk saw %d sessions and %d warnings: the fixture is not what it was", len(walked.Sessions), len(walked.Warnings))
			}
		})
	}
}

// TestRescanSeesShortSession: between walks, a connection that lives for
// 100 ms is seen by the scans its process events start, which read only
// the listener's tree; its end is seen too.
func TestRescanSeesShortSession(t *testing.T) {
	for _, g := range generations {
		t.Run(g.name, func(t *testing.T) {
			tree := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
				{PID: 1, Comm: "init", Title: "/sbin/init"},
				{PID: 100, PPID: 1, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", StartTicks: 100},
			}}
			// The fixture reads host-files once: name the monitor's program.
			exe := procfixture.DefaultExe(g.monitor)
			tree.HostFiles = map[string]procfixture.File{exe: procfixture.RootBinary, filepath.Dir(exe): procfixture.RootDir}
			for pid := 1000; pid < 1100; pid++ { // the rest of the machine
				tree.Procs = append(tree.Procs, procfixture.Proc{PID: pid, PPID: 1, Comm: "worker", Title: "worker", StartTicks: 200})
			}
			root := writeTree(t, tree)
			clk := clock.NewFake(fixtureNow)
			src := New(Options{ProcRoot: root, Clock: clk})
			src.SetEvents(true)
			if snap, _ := scanCounted(t, src); len(snap.Sessions) != 0 {
				t.Fatalf("sessions before the connection: %+v", snap.Sessions)
			}
			// The listener forks a monitor, which authenticates and forks
			// the user child: the fork events start a burst of scans.
			conn := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
				{PID: 5000, PPID: 100, Comm: g.monitor, Title: g.monitor + ": alice [" + g.authTag + "]", StartTicks: 360_000, Sockets: map[int]uint64{4: 777}},
				{PID: 5001, PPID: 5000, Comm: g.monitor, Title: g.monitor + ": alice@notty", StartTicks: 360_001},
			}, TCP: []procfixture.TCP{{Local: "10.0.0.5:22", Remote: "198.51.100.1:40000", State: 1, Inode: 777}}}
			if err := conn.Write(root); err != nil {
				t.Fatal(err)
			}
			if !src.Forked(100, 5000) {
				t.Fatal("the listener's fork is not watched")
			}
			clk.Advance(10 * time.Millisecond)
			snap, walked := scanCounted(t, src)
			if walked {
				t.Error("the scan after a fork walked /proc")
			}
			if len(snap.Sessions) != 1 || snap.Sessions[0].User != "alice" || snap.Sessions[0].RemoteAddr != "198.51.100.1" {
				t.Fatalf("sessions after the connection: %+v", snap.Sessions)
			}
			// 100 ms later it ends.
			for _, pid := range []string{"5001", "5000"} {
				if err := os.RemoveAll(filepath.Join(root, pid)); err != nil {
					t.Fatal(err)
				}
			}
			clk.Advance(100 * time.Millisecond)
			snap, walked = scanCounted(t, src)
			if walked || len(snap.Sessions) != 0 {
				t.Errorf("after the end: walked %v, sessions %+v", walked, snap.Sessions)
			}
		})
	}
}

// TestBackstopWalk: with process events, /proc is walked at the first
// scan, then every EventWalkEvery by the injected clock (finding what no
// verified sshd forked: here a listener started since), and when asked;
// without events every scan walks, also after events stopped.
func TestBackstopWalk(t *testing.T) {
	tree := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
		{PID: 1, Comm: "init", Title: "/sbin/init"},
		{PID: 50, PPID: 1, Comm: "bash", Title: "-bash", StartTicks: 100},
	}}
	root := writeTree(t, tree)
	clk := clock.NewFake(fixtureNow)
	src := New(Options{ProcRoot: root, Clock: clk})
	src.SetEvents(true)
	if _, walked := scanCounted(t, src); !walked {
		t.Fatal("the first scan did not walk")
	}
	// An operator starts sshd from a shell: no watched process forked it.
	later := procfixture.Tree{BootTime: bootTime, Procs: []procfixture.Proc{
		{PID: 100, PPID: 50, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", StartTicks: 360_000},
		{PID: 200, PPID: 100, Comm: "sshd", Title: "sshd: bob [priv]", StartTicks: 360_001},
		{PID: 201, PPID: 200, Comm: "sshd", Title: "sshd: bob", StartTicks: 360_002},
	}}
	if err := later.Write(root); err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	for clk.Now().Sub(start) < EventWalkEvery-time.Second {
		clk.Advance(time.Second)
		snap, walked := scanCounted(t, src)
		if walked {
			t.Fatalf("walked %v after the last walk, before EventWalkEvery", clk.Now().Sub(start))
		}
		if len(snap.Sessions) != 0 {
			t.Fatalf("a rescan found a session under a listener it never saw: %+v", snap.Sessions)
		}
	}
	clk.Advance(time.Second)
	snap, walked := scanCounted(t, src)
	if !walked || len(snap.Sessions) != 1 {
		t.Fatalf("at EventWalkEvery: walked %v, sessions %+v", walked, snap.Sessions)
	}
	if _, walked := scanCounted(t, src); walked {
		t.Error("walked again right after the backstop walk")
	}
	src.WalkNext() // lost events, or a login in sshd's log
	if _, walked := scanCounted(t, src); !walked {
		t.Error("WalkNext did not make the next scan walk")
	}
	if _, walked := scanCounted(t, src); walked {
		t.Error("WalkNext made more than one scan walk")
	}
	// Events stop (the subscription failed): back to a walk every scan.
	src.SetEvents(false)
	for i := range 3 {
		clk.Advance(time.Second)
		if _, walked := scanCounted(t, src); !walked {
			t.Errorf("scan %d without events did not walk", i)
		}
	}
	// A clock stepped back walks too.
	src.SetEvents(true)
	scanCounted(t, src)
	clk.StepWall(-time.Hour)
	if _, walked := scanCounted(t, src); !walked {
		t.Error("no walk after the wall clock stepped back")
	}
}

// TestRescanWithoutChildrenFiles: on a kernel without
// /proc/PID/task/PID/children, scans walk as without events.
func TestRescanWithoutChildrenFiles(t *testing.T) {
	root := writeTree(t, fixtureMachine(generations[0]))
	clk := clock.NewFake(fixtureNow)
	src := New(Options{ProcRoot: root, Clock: clk})
	src.SetEvents(true)
	scanCounted(t, src)
	dirs, err := filepath.Glob(filepath.Join(root, "[0-9]*", "task"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no task directories: %v", err)
	}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		clk.Advance(time.Second)
		snap, walked := scanCounted(t, src)
		if !walked || len(snap.Sessions) != 5 {
			t.Errorf("scan %d: walked %v, %d sessions, want a walk and 5", i, walked, len(snap.Sessions))
		}
	}
}

// TestWalkReadsOnlyStatOfOthers: a process that is neither sshd nor
// sftp-server has only its stat read, on the first walk (status) and
// after; its command line, status, executable and fds are never read.
// (Reading a file whose access time is older than its modification time
// moves the access time, on relatime mounts too.)
func TestWalkReadsOnlyStatOfOthers(t *testing.T) {
	tree := fixtureMachine(generations[2])
	tree.Procs = append(tree.Procs, procfixture.Proc{PID: 7000, PPID: 1, Comm: "sshd-like", Title: "sshd: mallory [priv]", Exe: "/usr/bin/sleep"},
		procfixture.Proc{PID: 7001, PPID: 1, Comm: "python3", Title: "sshd: mallory [priv]", Exe: "/usr/bin/python3", StartTicks: 100})
	root := writeTree(t, tree)
	old := time.Unix(1_000_000, 0)
	var files []string
	for _, f := range []string{"cmdline", "status", "stat"} {
		for _, pid := range []int{1, 202, 212, 7001} {
			p := filepath.Join(root, fmt.Sprint(pid), f)
			if err := os.Chtimes(p, old, time.Now()); err != nil {
				t.Fatal(err)
			}
			files = append(files, p)
		}
	}
	atime := func(p string) time.Time {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return time.Unix(st.Atim.Unix())
	}
	clk := clock.NewFake(fixtureNow)
	src := New(Options{ProcRoot: root, Clock: clk})
	for range 3 {
		if _, err := src.Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		clk.Advance(fullEvery)
	}
	for _, p := range files {
		read := !atime(p).Equal(old)
		if want := filepath.Base(p) == "stat"; read != want {
			t.Errorf("%s read: %v, want %v", p, read, want)
		}
	}
}

// TestWalkParallelSameAsSequential: a first walk of a long list, read by
// several goroutines, finds what one goroutine finds.
func TestWalkParallelSameAsSequential(t *testing.T) {
	root := writeTree(t, benchTree(3*parallelFrom))
	scan := func() session.Snapshot {
		t.Helper()
		snap, err := New(Options{ProcRoot: root, Clock: clock.NewFake(fixtureNow)}).Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return snap
	}
	parallel := scan()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	if diff := cmp.Diff(scan(), parallel); diff != "" {
		t.Errorf("parallel walk differs (-sequential +parallel):\n%s", diff)
	}
	if len(parallel.Sessions) < 50 || len(parallel.PendingAuth) < 50 {
		t.Errorf("%d sessions, %d pending: the fixture is not what it was", len(parallel.Sessions), len(parallel.PendingAuth))
	}
}

// TestRescanSkipsUsersSSHDCopies: a rescan goes down the trees only
// through verified sshd processes. A user's copy of sshd run in their
// session (a child of the user child) and its children are not read
// beyond what a walk reads: the copy's own files, as any process titled
// sshd, and not its children, which a user can make by the thousand.
func TestRescanSkipsUsersSSHDCopies(t *testing.T) {
	tree := procfixture.Tree{BootTime: bootTime, HostFiles: map[string]procfixture.File{
		"/home/u/sshd": {Mode: 0o100755, UID: 1000}, "/home/u": {Mode: 0o40755, UID: 1000},
	}, Procs: []procfixture.Proc{
		{PID: 1, Comm: "init", Title: "/sbin/init"},
		{PID: 100, PPID: 1, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", StartTicks: 100},
		{PID: 200, PPID: 100, Comm: "sshd", Title: "sshd: u [priv]", StartTicks: 200},
		{PID: 201, PPID: 200, Comm: "sshd", Title: "sshd: u@pts/0", StartTicks: 201, UID: 1000},
		{PID: 202, PPID: 201, Comm: "sshd", Title: "sshd: u@pts/0", StartTicks: 202, UID: 1000, Exe: "/home/u/sshd"},
		{PID: 203, PPID: 202, Comm: "worker", Title: "worker", StartTicks: 203, UID: 1000, Exe: "/usr/bin/sleep"},
	}}
	root := writeTree(t, tree)
	clk := clock.NewFake(fixtureNow)
	src := New(Options{ProcRoot: root, Clock: clk})
	src.SetEvents(true)
	if snap, walked := scanCounted(t, src); !walked || len(snap.Sessions) != 1 {
		t.Fatalf("first scan: walked %v, sessions %+v", walked, snap.Sessions)
	}
	old := time.Unix(1_000_000, 0)
	stat := filepath.Join(root, "203", "stat")
	if err := os.Chtimes(stat, old, time.Now()); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		clk.Advance(time.Second)
		snap, walked := scanCounted(t, src)
		if walked || len(snap.Sessions) != 1 {
			t.Fatalf("rescan: walked %v, sessions %+v", walked, snap.Sessions)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(stat, &st); err != nil {
		t.Fatal(err)
	}
	if !time.Unix(st.Atim.Unix()).Equal(old) {
		t.Error("a rescan read the stat of a child of a user's copy of sshd")
	}
}
