package sshd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/procfixture"
)

// mapInspector answers from maps: exe by pid, directories by path.
type mapInspector struct {
	exes map[int]struct {
		link string
		fi   fileInfo
	}
	dirs map[string]fileInfo
	err  error // returned for every exe
}

func (m mapInspector) exe(pid int) (string, fileInfo, error) {
	if m.err != nil {
		return "", fileInfo{}, m.err
	}
	e, ok := m.exes[pid]
	if !ok {
		return "", fileInfo{}, fs.ErrNotExist
	}
	return e.link, e.fi, nil
}

func (m mapInspector) dir(p string) (fileInfo, error) {
	fi, ok := m.dirs[p]
	if !ok {
		return fileInfo{}, fs.ErrNotExist
	}
	return fi, nil
}

func status(real, eff int) []byte {
	return fmt.Appendf(nil, "Name:\tsshd\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t%d\t%d\t%d\t%d\nGid:\t0\t0\t0\t0\n", real, eff, eff, eff)
}

// TestRootVerdict checks the rule for monitors and listeners: root's
// sshd, by uid and by executable, and nothing that only looks like it.
func TestRootVerdict(t *testing.T) {
	rootBin := fileInfo{uid: 0, mode: 0o100755}
	rootDir := fileInfo{uid: 0, mode: 0o40755}
	dirs := map[string]fileInfo{
		"/usr/sbin": rootDir, "/usr/lib/openssh": rootDir, "/usr/bin": rootDir,
		"/home/u":     {uid: 1000, mode: 0o40755},
		"/srv/shared": {uid: 0, mode: 0o40777},
		"/tmp":        {uid: 0, mode: 0o41777},
	}
	for _, tc := range []struct {
		name      string
		link      string
		fi        fileInfo
		real, eff int
		want      bool
		why       string
	}{
		{"sshd as root", "/usr/sbin/sshd", rootBin, 0, 0, true, ""},
		{"sshd-session as root (9.8+)", "/usr/lib/openssh/sshd-session", rootBin, 0, 0, true, ""},
		{"sshd-auth as root (10.0+)", "/usr/lib/openssh/sshd-auth", rootBin, 0, 0, true, ""},
		{"sshd replaced by an upgrade", "/usr/sbin/sshd (deleted)", rootBin, 0, 0, true, ""},
		{"a user's copy", "/home/u/sshd", fileInfo{uid: 1000, mode: 0o100755}, 1000, 1000, false, "uid 1000"},
		{"the real sshd run by a user", "/usr/sbin/sshd", rootBin, 1000, 1000, false, "not root"},
		{"a setuid program run by a user", "/usr/sbin/sshd", rootBin, 1000, 0, false, "not root"},
		{"root's python with an sshd title", "/usr/bin/python3", rootBin, 0, 0, false, "is not sshd"},
		{"root-owned sshd in a user's directory", "/home/u/sshd", rootBin, 0, 0, false, "directory /home/u"},
		{"root-owned sshd in a world-writable directory", "/srv/shared/sshd", rootBin, 0, 0, false, "directory /srv/shared"},
		{"root-owned sshd in /tmp", "/tmp/sshd", rootBin, 0, 0, false, "directory /tmp"},
		{"group-writable binary", "/usr/sbin/sshd", fileInfo{uid: 0, mode: 0o100775}, 0, 0, false, "writable"},
		{"not a regular file", "/usr/sbin/sshd", fileInfo{uid: 0, mode: 0o20666}, 0, 0, false, "regular"},
		{"relative link", "sshd", rootBin, 0, 0, false, "no path"},
		{"a directory named like sshd's is not enough", "/usr/sbin/sshd-forker", rootBin, 0, 0, false, "is not sshd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := mapInspector{exes: map[int]struct {
				link string
				fi   fileInfo
			}{7: {tc.link, tc.fi}}, dirs: dirs}
			v := rootVerdict(in, 7, status(tc.real, tc.eff), map[string]bool{})
			if v.ok != tc.want {
				t.Fatalf("ok = %v (%s), want %v", v.ok, v.why, tc.want)
			}
			if !v.ok && !strings.Contains(v.why, tc.why) {
				t.Errorf("why = %q, want it to mention %q", v.why, tc.why)
			}
			if v.uid != tc.real {
				t.Errorf("uid = %d, want %d", v.uid, tc.real)
			}
		})
	}
	t.Run("executable unreadable without root", func(t *testing.T) {
		in := mapInspector{err: &fs.PathError{Op: "readlink", Path: "/proc/7/exe", Err: fs.ErrPermission}, dirs: dirs}
		if v := rootVerdict(in, 7, status(0, 0), map[string]bool{}); !v.ok || !v.unchecked {
			t.Errorf("root process, exe unreadable: %+v, want ok and unchecked", v)
		}
		if v := rootVerdict(in, 7, status(1000, 1000), map[string]bool{}); v.ok {
			t.Errorf("user process, exe unreadable: %+v, want refused", v)
		}
	})
	t.Run("gone", func(t *testing.T) {
		v := rootVerdict(mapInspector{}, 7, status(0, 0), map[string]bool{})
		if v.ok || !v.gone {
			t.Errorf("%+v, want gone", v)
		}
	})
	t.Run("no uid line", func(t *testing.T) {
		if v := rootVerdict(mapInspector{}, 7, []byte("Name:\tsshd\n"), map[string]bool{}); v.ok {
			t.Errorf("%+v", v)
		}
	})
}

// impostorTree is a machine with one real session (alice, under a real
// listener) and, per generation, what a local user (uid 1000) or a root
// program that is not sshd can fake.
func impostorTree(g generation) procfixture.Tree {
	monExe := procfixture.DefaultExe(g.monitor)
	t := procfixture.Tree{BootTime: bootTime, HostFiles: map[string]procfixture.File{
		"/home/u/sshd":             {Mode: 0o100755, UID: 1000},
		"/home/u":                  {Mode: 0o40755, UID: 1000},
		"/usr/bin/python3":         procfixture.RootBinary,
		"/usr/bin":                 procfixture.RootDir,
		monExe + " (deleted)":      procfixture.RootBinary,
		"/home/u/bin/sshd":         procfixture.RootBinary, // hard-linked in
		"/home/u/bin":              {Mode: 0o40755, UID: 1000},
		"/usr/local/sbin/sshd":     {Mode: 0o100775, UID: 0}, // group-writable
		"/usr/local/sbin":          procfixture.RootDir,
		"/usr/lib/openssh/sshd-x1": procfixture.RootBinary,
	}}
	add := func(p procfixture.Proc) { t.Procs = append(t.Procs, p) }
	add(procfixture.Proc{PID: 1, Comm: "init", Title: "/sbin/init"})
	add(procfixture.Proc{PID: 100, PPID: 1, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"})
	add(procfixture.Proc{PID: 200, PPID: 100, Comm: g.monitor, Title: fmt.Sprintf("%s: alice [%s]", g.monitor, g.authTag), StartTicks: 1200})
	add(procfixture.Proc{PID: 201, PPID: 200, Comm: g.monitor, Title: g.monitor + ": alice@pts/0", StartTicks: 2201, UID: 1001})
	// After an upgrade of openssh-server the running monitor's file is
	// deleted: still the real sshd.
	add(procfixture.Proc{PID: 210, PPID: 100, Comm: g.monitor, Exe: monExe + " (deleted)", Title: fmt.Sprintf("%s: bob [%s]", g.monitor, g.authTag), StartTicks: 1210})
	add(procfixture.Proc{PID: 211, PPID: 210, Comm: g.monitor, Exe: monExe + " (deleted)", Title: g.monitor + ": bob", StartTicks: 2211, UID: 1002})

	fake := func(pid, uid int, exe string) {
		add(procfixture.Proc{PID: pid, PPID: 1, UID: uid, Comm: "sshd", Exe: exe, Title: "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"})
		add(procfixture.Proc{PID: pid + 1, PPID: pid, UID: uid, Comm: g.monitor, Exe: exe, Title: fmt.Sprintf("%s: root [%s]", g.monitor, g.authTag)})
		add(procfixture.Proc{PID: pid + 2, PPID: pid + 1, UID: uid, Comm: g.monitor, Exe: exe, Title: g.monitor + ": root@pts/9"})
	}
	fake(500, 1000, "/home/u/sshd")            // exec -a of a copy
	fake(510, 1000, "/usr/sbin/sshd")          // the real binary, run by the user
	fake(520, 0, "/usr/bin/python3")           // a root program with an sshd title
	fake(530, 0, "/home/u/bin/sshd")           // root-owned file in a user's directory
	fake(540, 0, "/usr/local/sbin/sshd")       // writable by a group
	fake(550, 0, "/usr/lib/openssh/sshd-x1")   // not an sshd program name
	fake(560, 0, "-")                          // no executable link at all
	fake(570, 1000, "/usr/lib/openssh/nosuch") // not recorded
	return t
}

// TestScanRefusesImpostors: processes that only look like sshd are never
// sessions, never pending, never listeners, never watched, and cost one
// warning; real sessions, also of a deleted (upgraded) sshd, still count.
func TestScanRefusesImpostors(t *testing.T) {
	for _, g := range generations {
		t.Run(g.name, func(t *testing.T) {
			src := New(Options{ProcRoot: writeTree(t, impostorTree(g)), Clock: clock.NewFake(fixtureNow)})
			snap, err := src.Scan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var users []string
			for _, s := range snap.Sessions {
				users = append(users, fmt.Sprintf("%s/%d", s.User, s.PID))
			}
			if got := strings.Join(users, " "); got != "alice/200 bob/210" {
				t.Errorf("sessions %q, want alice/200 bob/210", got)
			}
			if len(snap.PendingAuth) != 0 {
				t.Errorf("pending %+v, want none", snap.PendingAuth)
			}
			if l := src.Listeners(); len(l) != 1 {
				t.Errorf("listeners %q, want the real one", l)
			}
			unverified := func(snap session.Snapshot) []session.Warning {
				var out []session.Warning
				for _, w := range snap.Warnings {
					if w.Code == session.WarnUnverifiedSSHD {
						out = append(out, w)
					}
				}
				return out
			}
			w := unverified(snap)
			if snap.Blind() || len(w) != 1 {
				t.Fatalf("want one non-blind unverified_sshd warning, got %+v", snap.Warnings)
			}
			msg := w[0].Message
			for _, want := range []string{"14 process(es)", "pid 500 (uid 1000", "pid 501 (uid 1000", "/home/u/sshd", "and 9 more"} {
				if !strings.Contains(msg, want) {
					t.Errorf("warning %q does not say %q", msg, want)
				}
			}
			for pid, want := range map[int]bool{100: true, 200: true, 201: true, 210: true, 211: true,
				500: false, 501: false, 502: false, 511: false, 521: false, 531: false, 541: false, 551: false, 561: false, 571: false} {
				if got := src.Watches(pid); got != want {
					t.Errorf("Watches(%d) = %v, want %v", pid, got, want)
				}
			}
			// The verdicts are remembered: a second scan says the same.
			again, err := src.Scan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(again.Sessions) != 2 || len(unverified(again)) != 1 {
				t.Errorf("second scan: %d sessions, warnings %+v", len(again.Sessions), again.Warnings)
			}
		})
	}
}

// TestScanFixtureBrokenHostFiles: a tree whose host-files cannot be read
// verifies nothing: its sshd titles are warned about, never counted, and
// the scan itself still works.
func TestScanFixtureBrokenHostFiles(t *testing.T) {
	root := writeTree(t, fixtureMachine(generations[0]))
	mustWrite(t, root+"/"+HostFilesName, []byte("not a line\n"))
	snap, err := New(Options{ProcRoot: root, Clock: clock.NewFake(fixtureNow)}).Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Sessions) != 0 || len(snap.Warnings) != 1 || !strings.Contains(snap.Warnings[0].Message, "parse host-files") {
		t.Errorf("sessions %d, warnings %+v", len(snap.Sessions), snap.Warnings)
	}
	if errors.Is(err, ErrProcUnavailable) {
		t.Error("a broken host-files made the scan fail")
	}
}
