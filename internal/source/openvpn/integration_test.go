package openvpn_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/source/openvpn"
	"github.com/connwatch/connwatch/internal/testkit/openvpntest"
)

// watcher polls a source and remembers, per common name, what it saw.
type watcher struct {
	t   *testing.T
	src *openvpn.Source

	mu    sync.Mutex
	polls int
	errs  int
	seen  map[string]*sighting // by common name
	ids   map[string]string    // session ID -> common name
	last  session.Snapshot
}

// sighting is what the polls told of one connection.
type sighting struct {
	id         string
	firstSeen  time.Time // when the first poll listing it returned
	ended      time.Time // when the poll listing it in Ended returned
	endedCount int
	liveAgain  bool // listed live after it was listed ended
	last       session.Session
	endedAs    session.Session
}

func newWatcher(t *testing.T, src *openvpn.Source) *watcher {
	return &watcher{t: t, src: src, seen: map[string]*sighting{}, ids: map[string]string{}}
}

// poll polls once and records what it saw.
func (w *watcher) poll(ctx context.Context) (session.Snapshot, error) {
	snap, err := w.src.Poll(ctx)
	at := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	if err != nil {
		w.errs++
		return snap, err
	}
	w.last = snap
	for _, s := range snap.Sessions {
		cn := s.VPN.CommonName
		if other, ok := w.ids[s.ID]; ok && other != cn {
			w.t.Errorf("session ID %s used for %s and %s", s.ID, other, cn)
		}
		w.ids[s.ID] = cn
		sg := w.seen[cn]
		if sg == nil {
			sg = &sighting{id: s.ID, firstSeen: at}
			w.seen[cn] = sg
		}
		if sg.id != s.ID {
			w.t.Errorf("%s: session ID changed from %s to %s", cn, sg.id, s.ID)
		}
		if sg.endedCount > 0 {
			sg.liveAgain = true
		}
		sg.last = s
	}
	for _, e := range snap.Ended {
		sg := w.seen[e.VPN.CommonName]
		if sg == nil || sg.id != e.ID {
			w.t.Errorf("ended session %s (%s) was never seen live", e.ID, e.VPN.CommonName)
			continue
		}
		sg.endedCount++
		sg.ended = at
		sg.endedAs = e
	}
	return snap, nil
}

// get returns a copy of the sighting of cn, if any.
func (w *watcher) get(cn string) (sighting, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	sg, ok := w.seen[cn]
	if !ok {
		return sighting{}, false
	}
	return *sg, true
}

// until polls every interval until cond holds for the sighting of cn,
// at most timeout; it fails the test when it does not.
func (w *watcher) until(cn string, interval, timeout time.Duration, what string, cond func(sighting) bool) sighting {
	w.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := w.poll(ctx)
		cancel()
		if err != nil {
			w.t.Logf("poll: %v", err)
		}
		if sg, ok := w.get(cn); ok && cond(sg) {
			return sg
		}
		if time.Now().After(deadline) {
			sg, _ := w.get(cn)
			w.t.Fatalf("%s: %s not seen in %v (%d polls, %d failed); last %+v", cn, what, timeout, w.polls, w.errs, sg)
		}
		time.Sleep(interval)
	}
}

func seenLive(sg sighting) bool  { return !sg.firstSeen.IsZero() }
func seenEnded(sg sighting) bool { return sg.endedCount > 0 }

// checkSession compares a live session with the client it stands for.
func checkSession(t *testing.T, srv *openvpntest.Server, c *openvpntest.Client, s session.Session, user, username string, wantPort bool) {
	t.Helper()
	v := s.VPN
	if s.Kind != session.KindOpenVPN || s.User != user || v == nil || v.CommonName != c.CN || v.Username != username {
		t.Errorf("%s: session %+v %+v; want user %q, username %q", c.CN, s, v, user, username)
		return
	}
	if s.RemoteAddr != srv.ClientAddr || (s.RemotePort > 0) != wantPort {
		t.Errorf("%s: remote %s port %d; want %s (with a port: %v)", c.CN, s.RemoteAddr, s.RemotePort, srv.ClientAddr, wantPort)
	}
	if v.VirtualAddr != c.VirtualAddr || v.BytesIn == 0 || v.BytesOut == 0 || v.Server == "" {
		t.Errorf("%s: VPN %+v; want virtual address %s and bytes", c.CN, v, c.VirtualAddr)
	}
	if s.StartedAt.IsZero() || s.StartedAt.After(c.ReadyAt.Add(time.Second)) || c.ReadyAt.Sub(s.StartedAt) > 30*time.Second {
		t.Errorf("%s: started at %v, client ready at %v", c.CN, s.StartedAt, c.ReadyAt)
	}
	if s.LastActivityAt == nil || s.LastActivityAt.Before(s.StartedAt) {
		t.Errorf("%s: last activity %v, started %v", c.CN, s.LastActivityAt, s.StartedAt)
	}
	if s.PID != 0 || s.Mode != "" {
		t.Errorf("%s: PID %d, Mode %q", c.CN, s.PID, s.Mode)
	}
}

// checkEndedOnce polls a few more times and checks that cn ended
// exactly once and never came back.
func (w *watcher) checkEndedOnce(cn string, polls int) {
	w.t.Helper()
	for range polls {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = w.poll(ctx)
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	sg, _ := w.get(cn)
	if sg.endedCount != 1 || sg.liveAgain {
		w.t.Errorf("%s: ended %d times, live again %v; want once", cn, sg.endedCount, sg.liveAgain)
	}
	if e := sg.endedAs.EndedAt; e == nil || e.Before(sg.endedAs.StartedAt) {
		w.t.Errorf("%s: EndedAt %v, StartedAt %v", cn, e, sg.endedAs.StartedAt)
	}
}

// TestLiveManagementUnix: a UDP server asked over its unix management
// socket; alice (certificate), bobcn (username bob) and carol appear;
// alice leaves with SIGTERM, bob is killed (the server notices at its
// keepalive timeout); each ends exactly once, carol stays.
func TestLiveManagementUnix(t *testing.T) {
	t.Parallel()
	srv := openvpntest.Start(t, openvpntest.Options{Users: map[string]string{"bob": "pw"}})
	src, err := openvpn.New(openvpn.Config{Name: "office", Management: srv.Management()})
	if err != nil {
		t.Fatal(err)
	}
	alice := srv.Connect(t, "alice", openvpntest.ClientOptions{})
	bob := srv.Connect(t, "bobcn", openvpntest.ClientOptions{Username: "bob", Password: "pw"})
	srv.Connect(t, "carol", openvpntest.ClientOptions{})
	alice.Ping(t, 2)
	w := newWatcher(t, src)
	w.until("alice", 100*time.Millisecond, 10*time.Second, "alice", seenLive)
	w.until("carol", 100*time.Millisecond, 10*time.Second, "carol", seenLive)
	sb := w.until("bobcn", 100*time.Millisecond, 10*time.Second, "bobcn", seenLive)
	sa, _ := w.get("alice")
	checkSession(t, srv, alice, sa.last, "alice", "", true)
	checkSession(t, srv, bob, sb.last, "bob", "bob", true)
	if sa.last.VPN.Server != "office" || !strings.HasPrefix(sa.last.ID, "ovpn-office-") || sa.last.VPN.ConnectionID == "" {
		t.Errorf("alice: ID %s, VPN %+v", sa.last.ID, sa.last.VPN)
	}
	if sa.last.ID == sb.last.ID || sa.last.RemotePort == sb.last.RemotePort {
		t.Errorf("alice and bob: IDs %s, %s, ports %d, %d", sa.last.ID, sb.last.ID, sa.last.RemotePort, sb.last.RemotePort)
	}
	if w.last.Time.IsZero() || !w.last.Complete || w.last.Blind() {
		t.Errorf("snapshot %+v", w.last)
	}

	alice.Stop()
	bob.Kill()
	sa = w.until("alice", 100*time.Millisecond, 15*time.Second, "alice's end", seenEnded)
	sb = w.until("bobcn", 100*time.Millisecond, 15*time.Second, "bob's end", seenEnded)
	t.Logf("management over unix socket, UDP: end of a client stopped with SIGTERM reported %v after it, of a killed one %v after (keepalive 1 3: the server drops it after 6 s)",
		sa.ended.Sub(alice.StoppedAt).Round(time.Millisecond), sb.ended.Sub(bob.StoppedAt).Round(time.Millisecond))
	w.checkEndedOnce("alice", 3)
	w.checkEndedOnce("bobcn", 0)
	if sc, _ := w.get("carol"); sc.endedCount != 0 || len(w.last.Sessions) != 1 {
		t.Errorf("carol: %+v; sessions %+v", sc, w.last.Sessions)
	}
}

// TestLiveManagementTCPPassword: a TCP management interface with a
// password; a wrong password is a clear error; a management interface
// busy with another client makes the poll fail at its deadline, and
// the source's memory survives the failed polls.
func TestLiveManagementTCPPassword(t *testing.T) {
	t.Parallel()
	srv := openvpntest.Start(t, openvpntest.Options{Management: openvpntest.ManagementTCP, ManagementPassword: "s3cret", Proto: "tcp"})
	src, err := openvpn.New(openvpn.Config{Management: srv.Management(), PasswordFile: srv.ManagementPasswordFile})
	if err != nil {
		t.Fatal(err)
	}
	if src.Name() != "openvpn" {
		t.Errorf("Name() = %q", src.Name())
	}
	alice := srv.Connect(t, "alice", openvpntest.ClientOptions{})
	bob := srv.Connect(t, "bob", openvpntest.ClientOptions{})
	w := newWatcher(t, src)
	sa := w.until("alice", 100*time.Millisecond, 10*time.Second, "alice", seenLive)
	checkSession(t, srv, alice, sa.last, "alice", "", true)

	// A wrong password.
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad, err := openvpn.New(openvpn.Config{Management: srv.Management(), PasswordFile: wrong})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Poll(context.Background()); !errors.Is(err, openvpn.ErrBadPassword) {
		t.Errorf("poll with a wrong password: %v, want ErrBadPassword", err)
	} else {
		t.Logf("wrong password: %v", err)
	}
	// No password at all.
	none, err := openvpn.New(openvpn.Config{Management: srv.Management()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := none.Poll(context.Background()); !errors.Is(err, openvpn.ErrPasswordRequired) {
		t.Errorf("poll without a password: %v, want ErrPasswordRequired", err)
	}

	// Someone else holds the management interface: polls fail, bob
	// leaves meanwhile.
	busy, err := net.DialTimeout("tcp", srv.ManagementAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = busy.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := busy.Read(make([]byte, 64)); err != nil { // the prompt: it is connected
		t.Fatal(err)
	}
	bob.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	_, err = src.Poll(ctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "one management client at a time") {
		t.Errorf("poll while another client holds the interface: %v", err)
	} else {
		t.Logf("busy: %v", err)
	}
	busy.Close()
	sg := w.until("bob", 100*time.Millisecond, 10*time.Second, "bob's end", seenEnded)
	if sg.endedAs.EndedAt == nil {
		t.Errorf("bob ended without EndedAt")
	}
	w.checkEndedOnce("bob", 2)
}

// TestLiveStatusFiles: status files of versions 1 to 3 over UDP, TCP and
// IPv6; the client appears with its real and virtual address, and ends
// exactly once after SIGTERM.
func TestLiveStatusFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts openvpntest.Options
		// username is sent by the client; version 1 has no Username
		// column, so the session's user is then the common name.
		username string
		wantUser string
		wantPort bool // IPv6 real addresses are printed without a port
	}{
		{"v1-udp", openvpntest.Options{StatusVersion: 1, Users: map[string]string{"dave": "pw"}}, "dave", "carol", true},
		{"v2-tcp6", openvpntest.Options{StatusVersion: 2, Proto: "tcp", IPv6: true}, "", "carol", false},
		{"v3-udp", openvpntest.Options{StatusVersion: 3, Users: map[string]string{"dave": "pw"}}, "dave", "dave", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := openvpntest.Start(t, tt.opts)
			src, err := openvpn.New(openvpn.Config{StatusFile: srv.StatusFile, StaleAfter: 30 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			c := srv.Connect(t, "carol", openvpntest.ClientOptions{Username: tt.username, Password: "pw"})
			w := newWatcher(t, src)
			// The server rewrites its file once a second: a rewrite may
			// catch the client before its tunnel address is assigned,
			// so wait for one that has it.
			sg := w.until("carol", 200*time.Millisecond, 10*time.Second, "carol with a tunnel address", func(sg sighting) bool {
				return seenLive(sg) && sg.last.VPN != nil && sg.last.VPN.VirtualAddr != ""
			})
			wantName := ""
			if tt.opts.StatusVersion > 1 {
				wantName = tt.username
			}
			checkSession(t, srv, c, sg.last, tt.wantUser, wantName, tt.wantPort)
			if !w.last.Complete || w.last.Blind() {
				t.Errorf("snapshot of a fresh file: %+v", w.last)
			}
			c.Stop()
			// The server drops the client (UDP: 5 s after its exit
			// notification) and rewrites the file within a second, or
			// when its event loop next wakes up (about 10 s) once it
			// has no clients left.
			sg = w.until("carol", 200*time.Millisecond, 25*time.Second, "carol's end", seenEnded)
			t.Logf("status file v%d %s: detected %v after the client's init completed; end reported %v after SIGTERM",
				tt.opts.StatusVersion, srv.Proto, sg.firstSeen.Sub(c.ReadyAt).Round(time.Millisecond), sg.ended.Sub(c.StoppedAt).Round(time.Millisecond))
			w.checkEndedOnce("carol", 2)
		})
	}
}

// TestLiveShortConnections connects 8 clients one after the other, each
// for 1.5 poll intervals, while polling the management interface every
// 200 ms, and measures misses and detection delays: from the client's
// "Initialization Sequence Completed" to the first poll listing it, and
// from its SIGTERM to the poll listing it in Ended.
func TestLiveShortConnections(t *testing.T) {
	t.Parallel()
	const (
		runs     = 8
		interval = 200 * time.Millisecond
		hold     = 3 * interval / 2
	)
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			t.Parallel()
			srv := openvpntest.Start(t, openvpntest.Options{Proto: proto})
			src, err := openvpn.New(openvpn.Config{Management: srv.Management()})
			if err != nil {
				t.Fatal(err)
			}
			w := newWatcher(t, src)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				tick := time.NewTicker(interval)
				defer tick.Stop()
				for {
					pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
					_, _ = w.poll(pctx)
					pcancel()
					select {
					case <-ctx.Done():
						return
					case <-tick.C:
					}
				}
			}()
			defer func() { cancel(); <-done }()

			clients := make([]*openvpntest.Client, runs)
			for i := range runs {
				c := srv.Connect(t, fmt.Sprintf("short-%d", i), openvpntest.ClientOptions{})
				time.Sleep(time.Until(c.ReadyAt.Add(hold)))
				c.Stop()
				clients[i] = c
			}
			// Wait (at most 15 s) for every seen connection to end.
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				all := true
				for _, c := range clients {
					if sg, ok := w.get(c.CN); ok && sg.endedCount == 0 {
						all = false
					}
				}
				if all {
					break
				}
				time.Sleep(interval)
			}
			cancel()
			<-done

			var misses int
			var detect, end []time.Duration
			for _, c := range clients {
				sg, ok := w.get(c.CN)
				if !ok {
					misses++
					t.Errorf("%s (ready %v, stopped %v) was never seen", c.CN, c.ReadyAt.Format(time.StampMilli), c.StoppedAt.Format(time.StampMilli))
					continue
				}
				detect = append(detect, sg.firstSeen.Sub(c.ReadyAt))
				if sg.endedCount != 1 || sg.liveAgain {
					t.Errorf("%s: ended %d times, live again %v", c.CN, sg.endedCount, sg.liveAgain)
					continue
				}
				end = append(end, sg.ended.Sub(c.StoppedAt))
			}
			w.mu.Lock()
			polls, errs := w.polls, w.errs
			w.mu.Unlock()
			t.Logf("%s, management, poll every %v, %d connections of %v: %d missed, %d polls (%d failed); detection delay %s; end delay %s",
				proto, interval, runs, hold, misses, polls, errs, stats(detect), stats(end))
			if errs > 0 {
				t.Errorf("%d polls failed", errs)
			}
		})
	}
}

// stats formats min/median/max of ds.
func stats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "n/a"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("min %v median %v max %v (n=%d)", r(s[0]), r(s[len(s)/2]), r(s[len(s)-1]), len(s))
}
