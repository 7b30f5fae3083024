package authlog_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/source/authlog"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

// collector gathers a tailer's events and tells when a wanted one came.
type collector struct {
	t       *testing.T
	stamped chan seenEvent // events as they arrived from the tailer
	seen    []seenEvent
}

type seenEvent struct {
	authlog.Event
	at time.Time // when the test received it
}

func (c *collector) waitFor(what string, timeout time.Duration, match func(authlog.Event) bool) seenEvent {
	c.t.Helper()
	for _, e := range c.seen {
		if match(e.Event) {
			return e
		}
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case s := <-c.stamped:
			c.seen = append(c.seen, s)
			if match(s.Event) {
				return s
			}
		case <-timer.C:
			c.t.Fatalf("no %s within %v; events:\n%s", what, timeout, c.dump())
		}
	}
}

func (c *collector) dump() string {
	var b strings.Builder
	for _, e := range c.seen {
		fmt.Fprintf(&b, "  %s user=%q %s:%d %q\n", e.Kind, e.User, e.Addr, e.Port, e.Raw)
	}
	return b.String()
}

// tailFile starts a FileTailer on the system clock at the current end of
// path (an explicit position: no race with lines written right after).
func tailFile(t *testing.T, path string) *collector {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	tailer := authlog.NewFileTailer(path, authlog.FileOptions{
		Start: &authlog.Position{Dev: uint64(st.Dev), Inode: st.Ino, Offset: st.Size},
	})
	c := &collector{t: t, stamped: make(chan seenEvent, 1000)}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan authlog.Event)
	go func() {
		for {
			select {
			case ev := <-out:
				c.stamped <- seenEvent{ev, time.Now()}
			case <-ctx.Done():
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() { done <- tailer.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5 s of the cancel")
		}
	})
	return c
}

// lineWritten polls the file every millisecond and returns when it first
// held substr: the reference for the tailer's latency.
func lineWritten(path, substr string, timeout time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	go func() {
		deadline := time.Now().Add(timeout)
		for time.Now().Before(deadline) {
			if b, _ := os.ReadFile(path); strings.Contains(string(b), substr) {
				ch <- time.Now()
				return
			}
			time.Sleep(time.Millisecond)
		}
		close(ch)
	}()
	return ch
}

// TestRealSSHDLog tails the -E log of a real sshd while a session of
// about 100 ms, a forward-only session and three parked password prompts
// come and go, and checks that the session's Accepted and end arrive
// within 2 s with its user and client port, and that the prompts give no
// Accepted.
func TestRealSSHDLog(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	sshdtest.RequireBinary(t, "ssh")
	srv := sshdtest.Start(t, sshdtest.Options{})

	title, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(srv.PID), "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	titleStr := strings.TrimSpace(strings.ReplaceAll(string(title), "\x00", " "))
	if got, ok := authlog.LogFileFromListener(titleStr); !ok || got != srv.LogFile {
		t.Errorf("LogFileFromListener(%q) = %q, %v; want %q", titleStr, got, ok, srv.LogFile)
	}

	c := tailFile(t, srv.LogFile)

	type prompt struct {
		user   string
		client *sshdtest.Client
	}
	parked := map[int]prompt{}
	for _, user := range []string{"root", srv.User, "nosuchuser"} {
		p := srv.ParkAtPassword(t, user)
		parked[p.WaitLocalPort(t, 10*time.Second)] = prompt{user, p}
	}

	// A session of about 100 ms.
	begin := time.Now()
	quick := srv.SSH(t, nil, "sleep", "0.1")
	port := quick.WaitLocalPort(t, 10*time.Second)
	written := lineWritten(srv.LogFile, "Accepted publickey for "+srv.User+" from 127.0.0.1 port "+strconv.Itoa(port)+" ", 10*time.Second)
	if err := quick.Wait(10 * time.Second); err != nil {
		t.Fatalf("ssh sleep 0.1: %v; stderr %q", err, quick.Stderr())
	}
	exited := time.Now()
	t.Logf("client port %d, connected for at most %v", port, exited.Sub(begin))
	acc := c.waitFor("Accepted of the quick session", 2*time.Second, func(e authlog.Event) bool {
		return e.Kind == authlog.Accepted && e.Port == port
	})
	if acc.User != srv.User || acc.Addr != "127.0.0.1" || acc.Method != "publickey" || !strings.HasPrefix(acc.Key, "ED25519 SHA256:") {
		t.Errorf("Accepted event %+v", acc.Event)
	}
	if w, ok := <-written; ok {
		t.Logf("latency line written -> Accepted event: %v", acc.at.Sub(w))
	}
	end := c.waitFor("end of the quick session", 2*time.Second, func(e authlog.Event) bool {
		return e.Kind.Ends() && e.Port == port
	})
	if end.Kind != authlog.Disconnected || end.User != srv.User {
		t.Errorf("end event %+v, want Disconnected of %s", end.Event, srv.User)
	}
	t.Logf("client exit -> end event: %v", end.at.Sub(exited))

	// A forward-only session: Accepted while it is up, an end once the
	// client is killed.
	fwd := srv.SSH(t, []string{"-N"})
	fport := fwd.WaitLocalPort(t, 10*time.Second)
	c.waitFor("Accepted of the forward", 2*time.Second, func(e authlog.Event) bool {
		return e.Kind == authlog.Accepted && e.Port == fport && e.User == srv.User
	})
	// Killed within milliseconds of authenticating, sshd 9.2 may log no
	// end at all ("ssh_packet_send_debug: send DEBUG: Broken pipe");
	// wait for the session to be set up.
	srv.WaitProcs(t, "the forward's user child", 10*time.Second, func(ps []sshdtest.Proc) bool {
		return slices.ContainsFunc(ps, func(p sshdtest.Proc) bool { return p.Title == "sshd: "+srv.User && p.State != "Z" })
	})
	fwd.Stop()
	c.waitFor("end of the forward", 2*time.Second, func(e authlog.Event) bool {
		return e.Kind.Ends() && e.Port == fport
	})

	// The parked prompts end: pre-auth lines only.
	for _, p := range parked {
		p.client.Stop()
	}
	for pport, p := range parked {
		c.waitFor("pre-auth end of "+p.user+"'s prompt", 5*time.Second, func(e authlog.Event) bool {
			return e.Kind == authlog.Preauth && e.Port == pport
		})
	}
	accepted := 0
	for _, e := range c.seen {
		if _, ok := parked[e.Port]; ok && e.Kind != authlog.Preauth {
			t.Errorf("parked prompt gave %s: %q", e.Kind, e.Raw)
		}
		if e.Kind == authlog.Accepted {
			accepted++
		}
	}
	if accepted != 2 {
		t.Errorf("%d Accepted events, want 2:\n%s", accepted, c.dump())
	}
}

// TestTailLatency measures, on the system clock, the delay from a line's
// write to its event with the default 100 ms interval.
func TestTailLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about a second of real time")
	}
	path := filepath.Join(t.TempDir(), "sshd.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := tailFile(t, path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lat []time.Duration
	for i := range 20 {
		port := 10000 + i
		at := time.Now()
		if _, err := fmt.Fprintf(f, "Accepted publickey for cwtest from 127.0.0.1 port %d ssh2: ED25519 SHA256:x\r\n", port); err != nil {
			t.Fatal(err)
		}
		ev := c.waitFor("event "+strconv.Itoa(i), 2*time.Second, func(e authlog.Event) bool { return e.Port == port })
		lat = append(lat, ev.at.Sub(at))
	}
	slices.Sort(lat)
	t.Logf("write -> event over %d lines: min %v, median %v, max %v", len(lat), lat[0], lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)-1] > authlog.DefaultInterval+100*time.Millisecond { // slack for loaded machines
		t.Errorf("max latency %v, want at most one interval (%v) and a little", lat[len(lat)-1], authlog.DefaultInterval)
	}
}
