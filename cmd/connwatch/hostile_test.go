package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/procevents"
	"github.com/connwatch/connwatch/internal/source/sshd"
	"github.com/connwatch/connwatch/internal/sshdtest"
	"github.com/connwatch/connwatch/internal/testproc"
)

// TestStatusIgnoresImpostors runs the real binary's `status --json` while
// a real unprivileged user runs a fake sshd listener, a fake root monitor
// and a fake root tty child next to a real sshd with a real session: the
// real session is listed, the fakes are not (neither as sessions nor as
// pending), and a warning names them.
func TestStatusIgnoresImpostors(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	sshdtest.RequireBinary(t, "ssh")
	srv := sshdtest.Start(t, sshdtest.Options{})
	real := srv.SSH(t, []string{"-tt"}, "sleep", "120")
	realPort := real.WaitLocalPort(t, 10*time.Second)
	u := testproc.HostileUser(t)
	fake := u.Impostor(t,
		"sshd: /usr/sbin/sshd -D -E "+u.Home+"/fake.log [listener] 0 of 10-100 startups",
		"sshd: root [priv]",
		"sshd: root@pts/9")

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
