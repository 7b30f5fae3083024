package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/procevents"
	"github.com/connwatch/connwatch/internal/source/authlog"
	"github.com/connwatch/connwatch/internal/source/sshd"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
	"github.com/connwatch/connwatch/internal/tracker"
)

// TestStatusIgnoresImpostors runs the real binary's `status --json` while
// a real unprivileged user runs a fake sshd listener, a fake root monitor
// and a fake root tty child next to a real sshd with a real session: the
// real session is listed, the fakes are not (neither as sessions nor as
// pending), and a warning names them.
func TestStatusIgnoresImpostors(t *testing.T) {
	imp := sshdtest.StartImpostors(t)
	srv, realPort, u, fake := imp.Server, imp.RealPort, imp.User, imp.Fake

	type status struct {
		Sessions []struct {
			User       string `json:"user"`
			RemotePort int    `json:"remote_port"`
			LocalPort  int    `json:"local_port"`
			PID        int    `json:"pid"`
			UserPID    int    `json:"user_pid"`
		} `json:"sessions"`
		PendingAuth []struct {
			PID int `json:"pid"`
		} `json:"pending_auth"`
		Warnings []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Blind   bool   `json:"blind"`
		} `json:"warnings"`
	}
	var got status
	var out string
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, err := connwatchCmd(t, "status", "--json").Output()
		if err != nil {
			t.Fatalf("connwatch status --json: %v", err)
		}
		out = string(b)
		got = status{}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("decode %q: %v", b, err)
		}
		seen := false
		for _, s := range got.Sessions {
			seen = seen || s.LocalPort == srv.Port && s.RemotePort == realPort
		}
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the real session is not listed:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range got.Sessions {
		if s.PID == fake.PIDs[1] || s.UserPID == fake.PIDs[2] || s.User == "root" {
			t.Errorf("impostor listed as a session: %+v", s)
		}
	}
	for _, p := range got.PendingAuth {
		if p.PID == fake.PIDs[1] {
			t.Errorf("impostor listed as pending: %+v", p)
		}
	}
	warned := false
	for _, w := range got.Warnings {
		if w.Code == "unverified_sshd" && strings.Contains(w.Message, fmt.Sprintf("pid %d (uid %d", fake.PIDs[1], u.UID)) {
			warned = !w.Blind
		}
	}
	if !warned {
		t.Errorf("no non-blind unverified_sshd warning naming pid %d:\n%s", fake.PIDs[1], out)
	}
}

// TestProcEventsFilterUserForks: with the filter procEventSignal sets (the
// verified sshd processes), the kernel delivers none of the events of a
// real unprivileged user's "sshd-forker" fork loop, and still delivers
// the real listener's fork of a new connection.
func TestProcEventsFilterUserForks(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	sshdtest.RequireBinary(t, "ssh")
	srv := sshdtest.Start(t, sshdtest.Options{})
	src := sshd.New(sshd.Options{})
	if _, err := src.Scan(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := procevents.Listen()
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	defer l.Close()
	if err := l.Filter(src.WatchedPIDs()); err != nil {
		t.Fatalf("Filter: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs := make(chan procevents.Event, 1<<16)
	go l.Run(ctx, evs)

	forker := testproc.HostileUser(t).ForkLoop(t, 30*time.Second)
	time.Sleep(time.Second) // a second of the loop
	c := srv.SSH(t, []string{"-N"})
	c.WaitLocalPort(t, 10*time.Second)
	var fromListener, seen int
	timeout := time.After(10 * time.Second)
	for fromListener == 0 {
		select {
		case e := <-evs:
			seen++
			if e.PID == forker || e.ParentPID == forker {
				t.Fatalf("event of the user's fork loop delivered: %+v", e)
			}
			if e.Kind == procevents.Fork && e.ParentPID == srv.PID {
				fromListener++
			}
		case <-timeout:
			t.Fatalf("the listener's fork never came (%d events)", seen)
		}
	}
	t.Logf("%d events delivered in all", seen)
}

// TestSSHDLogIgnoresFakeListener: a real unprivileged user's fake
// listener names "-E /home/u/fake.log", a file the user writes "Accepted
// publickey for root" into. The agent's "auto" choice never follows it,
// and the file, given explicitly, is refused as untrusted.
func TestSSHDLogIgnoresFakeListener(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	srv := sshdtest.Start(t, sshdtest.Options{})
	u := testproc.HostileUser(t)
	fakeLog := filepath.Join(u.Home, "fake.log")
	t.Cleanup(func() { os.Remove(fakeLog) })
	u.Run(t, "rm -f "+fakeLog+"; echo 'Accepted publickey for root from 127.0.0.1 port 5 ssh2' > "+fakeLog)
	u.Impostor(t, "sshd: /usr/sbin/sshd -D -E "+fakeLog+" [listener] 0 of 10-100 startups")

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := sshd.New(sshd.Options{})
	logins := make(chan tracker.Login, 10)
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.SSHDLog = "auto"
	_, what, err := sshdLogSignal(context.Background(), cfg, src, logins, log)
	t.Logf("auto follows %q (err %v)", what, err)
	if what == fakeLog {
		t.Errorf("auto follows the fake listener's %s", fakeLog)
	}
	var real bool
	for _, l := range src.Listeners() {
		real = real || strings.Contains(l, srv.LogFile)
		if strings.Contains(l, fakeLog) {
			t.Errorf("fake listener listed: %q", l)
		}
	}
	if !real {
		t.Errorf("the real listener (-E %s) is not listed: %q", srv.LogFile, src.Listeners())
	}

	cfg.SSHDLog = fakeLog
	if _, _, err := sshdLogSignal(context.Background(), cfg, src, logins, log); !errors.Is(err, authlog.ErrUntrustedLog) {
		t.Errorf("following %s explicitly: %v, want ErrUntrustedLog", fakeLog, err)
	}
	cfg.SSHDLog = srv.LogFile
	if _, what, err := sshdLogSignal(context.Background(), cfg, src, logins, log); err != nil || what != srv.LogFile {
		t.Errorf("following the real sshd's -E file: %q, %v", what, err)
	}
}

// TestLoginFromSSHD: a login in a syslog line counts only from a pid that
// is, or lately was, sshd's; -E and journald lines were vouched for when
// read.
func TestLoginFromSSHD(t *testing.T) {
	sshdPIDs := map[int]bool{2883: true}
	was := func(pid int) bool { return sshdPIDs[pid] }
	now := time.Date(2026, 11, 22, 0, 5, 0, 0, time.UTC)
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"Nov 22 00:05:00 vm sshd[2883]: Accepted publickey for cwtest from 127.0.0.1 port 55904 ssh2", true},
		{"Nov 22 00:05:00 vm sshd[4101]: Accepted publickey for root from 127.0.0.1 port 5 ssh2", false}, // logger -t sshd -i
		{"Nov 22 00:05:00 vm sshd: Accepted publickey for root from 127.0.0.1 port 5 ssh2", false},       // logger -t sshd
		{"2026-11-22T00:05:00.000000+00:00 vm sshd-session[4102]: Accepted password for root from 127.0.0.1 port 5 ssh2", false},
		{"Accepted publickey for cwtest from 127.0.0.1 port 55904 ssh2", true}, // sshd -E: the file is root's alone
	} {
		e, ok := authlog.ParseLine(tc.line, now)
		if !ok || e.Kind != authlog.Accepted {
			t.Fatalf("%q: not an Accepted line", tc.line)
		}
		if got := loginFromSSHD(e, was); got != tc.want {
			t.Errorf("%q: believed = %v, want %v", tc.line, got, tc.want)
		}
	}
}
