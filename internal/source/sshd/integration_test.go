package sshd_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/source/sshd"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// onPort keeps what a snapshot says about one sshd listening on port, so
// the test is not confused by other sshd instances on the machine.
func onPort(snap session.Snapshot, port int) (sess []session.Session, pending []session.PendingAuth) {
	for _, s := range snap.Sessions {
		if s.LocalPort == port {
			sess = append(sess, s)
		}
	}
	for _, p := range snap.PendingAuth {
		if p.LocalPort == port {
			pending = append(pending, p)
		}
	}
	return sess, pending
}

func describe(sess []session.Session, pending []session.PendingAuth) string {
	var b strings.Builder
	for _, s := range sess {
		fmt.Fprintf(&b, "session %s %s:%d mode=%s tty=%q pid=%d/%d\n", s.User, s.RemoteAddr, s.RemotePort, s.Mode, s.TTY, s.PID, s.UserPID)
	}
	for _, p := range pending {
		fmt.Fprintf(&b, "pending %q %s:%d pid=%d\n", p.User, p.RemoteAddr, p.RemotePort, p.PID)
	}
	return b.String()
}

// TestRealSSHD opens real OpenSSH connections of every kind against a
// real sshd and checks that exactly the authenticated ones are sessions.
func TestRealSSHD(t *testing.T) {
	sshdtest.RequireRoot(t)
	for _, bin := range []string{"sshd", "ssh", "sftp"} {
		sshdtest.RequireBinary(t, bin)
	}
	srv := sshdtest.Start(t, sshdtest.Options{})

	type want struct {
		user string
		mode session.Mode
		tty  bool
	}
	clients := map[string]*sshdtest.Client{
		"tty":     srv.SSH(t, []string{"-tt"}, "sleep", "120"),
		"notty":   srv.SSH(t, nil, "sleep", "120"),
		"forward": srv.SSH(t, []string{"-N"}),
		"sftp":    srv.SFTP(t),
	}
	parked := map[string]*sshdtest.Client{
		srv.User:  srv.ParkAtPassword(t, srv.User),
		"root":    srv.ParkAtPassword(t, "root"),
		"unknown": srv.ParkAtPassword(t, "nosuchuser"), // sshd hides invalid names
	}
	wantSess := map[int]want{}
	for name, c := range clients {
		port := c.WaitLocalPort(t, 10*time.Second)
		wantSess[port] = want{srv.User, session.Mode(name), name == "tty"}
	}
	wantPending := map[int]string{}
	for user, c := range parked {
		wantPending[c.WaitLocalPort(t, 10*time.Second)] = user
	}

	src := sshd.New(sshd.Options{})
	matches := func(sess []session.Session, pending []session.PendingAuth) bool {
		if len(sess) != len(wantSess) || len(pending) != len(wantPending) {
			return false
		}
		for _, s := range sess {
			w, ok := wantSess[s.RemotePort]
			if !ok || s.User != w.user || s.Mode != w.mode || (s.TTY != "") != w.tty {
				return false
			}
		}
		for _, p := range pending {
			if wantPending[p.RemotePort] != p.User {
				return false
			}
		}
		return true
	}
	var (
		snap    session.Snapshot
		sess    []session.Session
		pending []session.PendingAuth
	)
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		var err error
		snap, err = src.Scan(context.Background())
		if err != nil {
			t.Fatalf("Scan: %v", err)
		}
		sess, pending = onPort(snap, srv.Port)
		if matches(sess, pending) {
			break
		}
		if time.Now().After(deadline) || i > 300 {
			t.Fatalf("after %d scans the view is not as expected.\nwant sessions on ports %v, pending %v\ngot:\n%s", i, wantSess, wantPending, describe(sess, pending))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("view:\n%s", describe(sess, pending))

	if !snap.Complete {
		t.Errorf("snapshot incomplete as root: %+v", snap.Warnings)
	}
	for _, s := range sess {
		if s.RemoteAddr != "127.0.0.1" || s.LocalAddr != "127.0.0.1" || s.PID == 0 || s.UserPID == 0 || s.PID == s.UserPID {
			t.Errorf("session details wrong: %+v", s)
		}
		if s.Mode == session.ModeTTY && !strings.HasPrefix(s.TTY, "pts/") {
			t.Errorf("tty session has tty %q", s.TTY)
		}
		if age := time.Since(s.StartedAt); age < -time.Second || age > time.Minute {
			t.Errorf("started_at %v is %v ago", s.StartedAt, age)
		}
		if s.LastActivityAt == nil {
			t.Errorf("no activity for %s session (sock_diag as root should know)", s.Mode)
		} else if s.LastActivityAt.Before(s.StartedAt) || s.LastActivityAt.After(snap.Time.Add(time.Second)) {
			t.Errorf("last activity %v outside [%v, %v]", s.LastActivityAt, s.StartedAt, snap.Time)
		}
	}
	ids := map[string]bool{}
	for _, s := range sess {
		ids[s.ID] = true
	}
	if len(ids) != len(sess) {
		t.Errorf("session ids not unique: %v", ids)
	}
	// IDs are stable from one scan to the next.
	again, err := src.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := onPort(again, srv.Port)
	for _, s := range s2 {
		if !ids[s.ID] {
			t.Errorf("id %s not in previous scan", s.ID)
		}
	}

	// Everything disappears once the clients are gone.
	for _, c := range clients {
		c.Stop()
	}
	for _, c := range parked {
		c.Stop()
	}
	deadline = time.Now().Add(15 * time.Second)
	for i := 0; ; i++ {
		snap, err := src.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sess, pending = onPort(snap, srv.Port)
		if len(sess) == 0 && len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) || i > 300 {
			t.Fatalf("connections still listed after the clients exited:\n%s", describe(sess, pending))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRealSSHDManyConnections checks counting under churn: several
// sessions and bots at once, opened and closed in varying order.
func TestRealSSHDManyConnections(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	sshdtest.RequireBinary(t, "ssh")
	srv := sshdtest.Start(t, sshdtest.Options{})
	src := sshd.New(sshd.Options{})

	var sessions, bots []*sshdtest.Client
	for i := 0; i < 6; i++ {
		sessions = append(sessions, srv.SSH(t, []string{"-N"}))
		bots = append(bots, srv.ParkAtPassword(t, "root"))
	}
	for _, c := range append(append([]*sshdtest.Client{}, sessions...), bots...) {
		c.WaitLocalPort(t, 10*time.Second)
	}
	waitCounts := func(wantSess, wantPending int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for i := 0; ; i++ {
			snap, err := src.Scan(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			sess, pending := onPort(snap, srv.Port)
			if len(sess) == wantSess && len(pending) == wantPending {
				return
			}
			if time.Now().After(deadline) || i > 300 {
				t.Fatalf("want %d sessions and %d pending, got:\n%s", wantSess, wantPending, describe(sess, pending))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitCounts(6, 6)
	// Close every other one of each.
	for _, i := range []int{0, 2, 4} {
		sessions[i].Stop()
		bots[i].Stop()
	}
	waitCounts(3, 3)
}

// TestRealSSHDIgnoresImpostors: a real unprivileged user runs a fake
// listener, a fake root monitor and its fake root tty child (copies of cat
// named sshd, titled with exec -a) next to a real sshd with a real
// session. The real session counts; the fakes are not sessions, not
// pending, not listeners, not watched, and cost one warning naming them.
func TestRealSSHDIgnoresImpostors(t *testing.T) {
	imp := sshdtest.StartImpostors(t)
	srv, realPort, u, fake := imp.Server, imp.RealPort, imp.User, imp.Fake

	src := sshd.New(sshd.Options{})
	var snap session.Snapshot
	deadline := time.Now().Add(15 * time.Second)
	for {
		var err error
		snap, err = src.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if sess, _ := onPort(snap, srv.Port); len(sess) == 1 && sess[0].RemotePort == realPort {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the real session is not seen:\n%s", describe(onPort(snap, srv.Port)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range snap.Sessions {
		if s.PID == fake.PIDs[1] || s.UserPID == fake.PIDs[2] || s.User == "root" {
			t.Errorf("impostor counted as a session: %+v", s)
		}
	}
	for _, p := range snap.PendingAuth {
		if p.PID == fake.PIDs[1] {
			t.Errorf("impostor listed as pending: %+v", p)
		}
	}
	for _, l := range src.Listeners() {
		if strings.Contains(l, "fake.log") {
			t.Errorf("impostor listed as a listener: %q", l)
		}
	}
	for _, pid := range fake.PIDs {
		if src.Watches(pid) {
			t.Errorf("impostor pid %d watched", pid)
		}
	}
	if !src.Watches(srv.PID) {
		t.Errorf("real listener pid %d not watched", srv.PID)
	}
	var warned bool
	for _, w := range snap.Warnings {
		if w.Code == session.WarnUnverifiedSSHD {
			warned = true
			for _, want := range []string{fmt.Sprintf("pid %d (uid %d", fake.PIDs[1], u.UID), fake.Exe} {
				if !strings.Contains(w.Message, want) {
					t.Errorf("warning %q does not say %q", w.Message, want)
				}
			}
			if w.Blind {
				t.Errorf("impostors made the view blind: %+v", w)
			}
		}
	}
	if !warned {
		t.Errorf("no unverified_sshd warning: %+v", snap.Warnings)
	}
}

// TestRealSSHDIgnoresForkLoop: a real unprivileged user's "sshd-forker"
// forking in a loop is not watched (its forks never start a burst of
// scans), while the real listener is.
func TestRealSSHDIgnoresForkLoop(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	srv := sshdtest.Start(t, sshdtest.Options{})
	forker := testproc.HostileUser(t).ForkLoop(t, 30*time.Second)
	src := sshd.New(sshd.Options{})
	for range 3 {
		if _, err := src.Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if src.Watches(forker) || src.Forked(forker, forker+1) || src.Exited(forker+1, forker) {
		t.Errorf("the user's sshd-forker (pid %d) is watched", forker)
	}
	for _, pid := range src.WatchedPIDs() {
		if pid == forker {
			t.Errorf("the user's sshd-forker (pid %d) is in the watched set", forker)
		}
	}
	if !src.Watches(srv.PID) || !src.Forked(srv.PID, 999_999) {
		t.Errorf("the real listener (pid %d) is not watched", srv.PID)
	}
}
