package tunnel

import (
	"bufio"
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// standbyFixture runs the fixture with keepalives every iv, CountMax 5
// and StandbyAfter sa (then tweak, if not nil, and the extra forwards),
// and returns it once up with a keepalive answered. dialed counts the
// tunnel's TCP connections to the server that it has not closed.
func standbyFixture(t *testing.T, iv, sa time.Duration, tweak func(*Spec, *Options), extra ...Forward) (f *fixture, dialed *atomic.Int64) {
	t.Helper()
	dialed = &atomic.Int64{}
	f = runFixture(t, iv, func(s *Spec, o *Options) {
		s.ServerAliveCountMax = 5
		s.ConnectTimeout = 10 * time.Second // a stalled standby's handshake outlasts the test
		o.StandbyAfter = sa
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			dialed.Add(1)
			return &countedConn{Conn: c, open: dialed}, nil
		}
		if tweak != nil {
			tweak(s, o)
		}
	}, extra...)
	// Before the echo server's cleanup, which waits for connections the
	// stalled server would keep open.
	t.Cleanup(f.srv.stop)
	within(t, 5*time.Second, "tunnel up", func() bool { return f.tun.Status().State == StateUp })
	within(t, 3*iv, "first keepalive reply", func() bool { return f.tun.Status().KeepaliveRTT > 0 })
	return f, dialed
}

// countedConn takes itself off open when first closed.
type countedConn struct {
	net.Conn
	open *atomic.Int64
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.open.Add(-1) })
	return c.Conn.Close()
}

// askWhileStalled stalls the server's connections and starts a round
// trip through the LocalForward (its result on the channel, within d),
// returning once its channel open waits on the stalled connection.
func askWhileStalled(f *fixture, msg string, d time.Duration) <-chan error {
	f.srv.stallExisting()
	errc := make(chan error, 1)
	go func() { errc <- roundTripWithin(f.local, msg, d) }()
	time.Sleep(300 * time.Millisecond) // accepted, and its channel asked of the stalled connection
	return errc
}

// held is a connection through the LocalForward that a test keeps open.
type held struct {
	c net.Conn
	r *bufio.Reader
}

func holdOpen(t *testing.T, addr string) *held {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &held{c: c, r: bufio.NewReader(c)}
	if err := h.echo("opened", 3*time.Second); err != nil {
		t.Fatalf("held connection: %v", err)
	}
	return h
}

// echo sends msg on the held connection and waits at most d for it back.
func (h *held) echo(msg string, d time.Duration) error {
	_ = h.c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(h.c, msg+"\n"); err != nil {
		return err
	}
	got, err := h.r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != msg+"\n" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// A connection that goes silent while new ones still get through (a
// NAT that lost the flow's state) is replaced by a standby connection
// soon after a keepalive reply is StandbyAfter late, well before the
// keepalives run out, without the tunnel going down; a connection it
// carries stays on it, and works again when it answers again; once that
// one is closed the old connection is closed too.
func TestStandbyTakesOverFromSilentConnection(t *testing.T) {
	const (
		iv = time.Second
		sa = 200 * time.Millisecond
	)
	f, _ := standbyFixture(t, iv, sa, nil)
	old := holdOpen(t, f.local)
	since := f.tun.Status().Since
	f.tun.mu.Lock()
	f.tun.st.KeepaliveRTT = time.Hour // so that the standby's own is seen
	f.tun.mu.Unlock()

	resume := f.srv.stallExisting()
	stalled := time.Now()
	if err := roundTripWithin(f.local, "through the standby", 5*time.Second); err != nil {
		t.Fatalf("new connection after the old one went silent: %v\nstatus %+v", err, f.tun.Status())
	}
	d := time.Since(stalled)
	st := f.tun.Status()
	t.Logf("new connections flow again %s after the link went silent (keepalive every %s, standby after %s; keepalives alone: %d × %s); status %+v",
		d.Round(time.Millisecond), iv, sa, 5, iv, st)
	if lim := iv + sa + time.Second; d > lim { // a keepalive's turn, its lateness, room for CI
		t.Errorf("standby took over after %s, want within %s", d, lim)
	}
	if st.State != StateUp || !st.Since.Equal(since) || st.Reconnects != 0 || st.Handovers != 1 {
		t.Errorf("status %+v: want up since %s throughout, 0 reconnects, 1 handover", st, since)
	}
	if st.KeepaliveRTT <= 0 || st.KeepaliveRTT > time.Second {
		t.Errorf("keepalive RTT %s after the handover, want the standby's round trip", st.KeepaliveRTT)
	}
	if n := f.srv.open(); n != 2 {
		t.Errorf("server has %d connections, want 2 (the silent one drains)", n)
	}

	resume()
	if err := old.echo("old connection still works", 3*time.Second); err != nil {
		t.Fatalf("connection carried by the drained link, after it answers again: %v", err)
	}
	time.Sleep(3 * iv) // it answers again, but still carries one
	if n := f.srv.open(); n != 2 {
		t.Errorf("server has %d connections while the drained one still carries one, want 2", n)
	}
	old.c.Close()
	within(t, 4*iv, "drained connection closed once it carries nothing", func() bool { return f.srv.open() == 1 })
	if err := roundTrip(f.local, "after the drain"); err != nil {
		t.Fatal(err)
	}
	if st := f.tun.Status(); st.State != StateUp || st.Handovers != 1 || st.Reconnects != 0 {
		t.Errorf("final status %+v: want up, 1 handover, 0 reconnects", st)
	}
}

// A drained connection that never answers again is closed when its
// keepalives run out, with what it carries.
func TestDrainedConnectionEndsWithItsKeepalives(t *testing.T) {
	const iv = 500 * time.Millisecond
	f, _ := standbyFixture(t, iv, 100*time.Millisecond, nil)
	old := holdOpen(t, f.local)
	f.srv.stallExisting()
	within(t, 3*time.Second, "handover", func() bool { return f.tun.Status().Handovers == 1 })
	_ = old.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err := old.r.ReadString('\n') // the tunnel closes it: EOF
	d := time.Since(start)
	t.Logf("connection on the silent link closed %s after the handover (%d × %s keepalives): %v", d.Round(time.Millisecond), 5, iv, err)
	if err == nil || d > 5*iv+2*time.Second || d < 3*iv {
		t.Errorf("read on the silent link's connection: %v after %s, want closed by the tunnel when its 5 × %s keepalives run out", err, d, iv)
	}
	if st := f.tun.Status(); st.State != StateUp || st.Reconnects != 0 {
		t.Errorf("status %+v: want still up, no reconnect", st)
	}
}

// When the old connection answers before the standby does, the standby
// is abandoned and no more are dialled.
func TestStandbyAbandonedWhenOldAnswers(t *testing.T) {
	const iv = time.Second
	f, dialed := standbyFixture(t, iv, 100*time.Millisecond, nil)
	old := holdOpen(t, f.local)
	f.srv.stallNew.Store(true) // standbys connect but never answer
	resume := f.srv.stallExisting()
	before := f.srv.accepted.Load()
	within(t, 3*time.Second, "standby dialled", func() bool { return f.srv.accepted.Load() > before })
	resume()
	if err := old.echo("old answers", 3*time.Second); err != nil {
		t.Fatal(err)
	}
	// The stalled standby is closed by the tunnel as soon as the old one
	// answers (long before any handshake timeout).
	within(t, 2*time.Second, "standby closed", func() bool { return dialed.Load() == 1 })
	// Within one more keepalive the reply has come; after that no new
	// standby may be dialled.
	time.Sleep(iv + 200*time.Millisecond)
	n := f.srv.accepted.Load()
	time.Sleep(2 * iv)
	if m := f.srv.accepted.Load(); m != n {
		t.Errorf("%d more connections dialled after the old one answered, want none", m-n)
	}
	if st := f.tun.Status(); st.State != StateUp || st.Handovers != 0 || st.Reconnects != 0 {
		t.Errorf("status %+v: want up, no handover, no reconnect", st)
	}
	if err := roundTrip(f.local, "new connections use the old link"); err != nil {
		t.Fatal(err)
	}
}

// With StandbyAfter negative a silent connection is kept until its
// keepalives run out, as ssh does.
func TestStandbyOff(t *testing.T) {
	const iv = 500 * time.Millisecond
	f, _ := standbyFixture(t, iv, -1, nil)
	before := f.srv.accepted.Load()
	f.srv.stallExisting()
	d := within(t, 5*iv+2*time.Second, "keepalives ran out", func() bool { return f.tun.Status().State != StateUp })
	if d < 4*iv {
		t.Errorf("link dropped after %s, want after 5 × %s keepalives", d, iv)
	}
	within(t, 5*time.Second, "reconnected", func() bool { return f.tun.Status().State == StateUp })
	if st := f.tun.Status(); st.Handovers != 0 || st.Reconnects != 1 {
		t.Errorf("status %+v: want no handover, 1 reconnect", st)
	}
	if n := f.srv.accepted.Load() - before; n != 1 {
		t.Errorf("%d connections dialled, want 1 (the reconnect)", n)
	}
}

// After a handover the old session still holds a RemoteForward's port
// on the server: under ExitOnForwardFailure the standby keeps trying
// (RemoteRebindGrace) instead of dropping, and binds once the old
// connection lets go.
func TestHandoverMovesRemoteForward(t *testing.T) {
	rport := freeLocalPort(t)
	f, _ := standbyFixture(t, time.Second, 200*time.Millisecond, func(s *Spec, o *Options) {
		s.ExitOnForwardFailure = true
		o.RemoteBindRetry = 200 * time.Millisecond
	}, toEcho(t, Remote, rport))
	within(t, 5*time.Second, "remote forward up", func() bool { return f.tun.Status().Forwards[1].State == StateUp })
	resume := f.srv.stallExisting()
	within(t, 3*time.Second, "handover", func() bool { return f.tun.Status().Handovers == 1 })
	within(t, 3*time.Second, "bind refused: the old session holds the port", func() bool {
		return f.tun.Status().Forwards[1].State == StateRemoteBindFailed
	})
	time.Sleep(500 * time.Millisecond) // refused again, within the grace
	if st := f.tun.Status(); st.State != StateUp || st.Reconnects != 0 {
		t.Fatalf("status %+v: want the standby kept while the old session holds the port", st)
	}
	resume() // the old connection answers, drains and closes: the port is free
	within(t, 5*time.Second, "remote forward bound on the standby", func() bool { return f.tun.Status().Forwards[1].State == StateUp })
	if err := roundTrip(net.JoinHostPort("127.0.0.1", strconv.Itoa(rport)), "remote after the handover"); err != nil {
		t.Fatal(err)
	}
	if st := f.tun.Status(); st.Handovers != 1 || st.Reconnects != 0 {
		t.Errorf("status %+v: want 1 handover, 0 reconnects", st)
	}
}

// A forwarded connection whose channel was asked of a connection that
// is then lost (reset, not refused) is asked of the next connection.
func TestOpenRetriedOnNextConnection(t *testing.T) {
	f, _ := standbyFixture(t, time.Second, -1, nil)
	errc := askWhileStalled(f, "asked twice", 10*time.Second)
	f.srv.stop() // the stalled connection is closed: the open fails
	f.srv.restart()
	f.tun.Retry()
	if err := <-errc; err != nil {
		t.Fatalf("connection whose channel open met a lost connection: %v\nstatus %+v", err, f.tun.Status())
	}
	if st := f.tun.Status(); st.Forwards[0].LastError != "" {
		t.Errorf("forward's last error %q, want none", st.Forwards[0].LastError)
	}
}

// Run may end while a forwarded connection's channel is still asked of
// a silent connection: the open gives up cleanly.
func TestStopWhileChannelOpenPending(t *testing.T) {
	f, _ := standbyFixture(t, time.Second, -1, nil)
	errc := askWhileStalled(f, "never", 5*time.Second)
	f.cancel()
	select {
	case err := <-f.done:
		f.done <- err // for the fixture's cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if err := <-errc; err == nil {
		t.Error("round trip through a stopped tunnel succeeded")
	}
}

// A standby refused for a reason retrying soon will not fix (the key)
// is dialled again only after the tunnel's backoff, and a Retry cuts
// that wait short.
func TestStandbyBacksOffAfterAuthFailure(t *testing.T) {
	f, _ := standbyFixture(t, time.Second, 200*time.Millisecond, func(s *Spec, o *Options) {
		s.ServerAliveCountMax = 30                                  // the old connection outlives the test
		o.BackoffMin, o.BackoffMax = 10*time.Second, 20*time.Second // waits of 5-10 s, then 10-20 s
	})
	f.srv.denyAuth.Store(true)
	before := f.srv.accepted.Load()
	f.srv.stallExisting()
	within(t, 3*time.Second, "standby dialled", func() bool { return f.srv.accepted.Load() > before })
	time.Sleep(1500 * time.Millisecond) // a redial every 250-500 ms would dial several more
	if n := f.srv.accepted.Load() - before; n != 1 {
		t.Errorf("%d standbys dialled after the key was refused, want 1 within the backoff", n)
	}
	f.srv.denyAuth.Store(false)
	f.tun.Retry()
	d := within(t, 4*time.Second, "handover after Retry", func() bool { return f.tun.Status().Handovers == 1 })
	t.Logf("handover %s after Retry (the probe waits a second, then the standby tries at once)", d.Round(time.Millisecond))
	if d > 4*time.Second {
		t.Errorf("handover %s after Retry, want within the probe's second and a dial, not the backoff's 5-10 s", d)
	}
}

// A RemoteForward bind still asked of the old connection when it was
// handed over does not report on the forward once it returns: the
// forward is the new connection's.
func TestOldBindAfterHandoverLeavesForwardState(t *testing.T) {
	blocker, err := net.Listen("tcp", "127.0.0.1:0") // holds the port: binds are refused
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Close()
	f, _ := standbyFixture(t, time.Second, 200*time.Millisecond, func(s *Spec, o *Options) {
		s.ServerAliveCountMax = 30
		o.RemoteBindRetry = 300 * time.Millisecond
	}, toEcho(t, Remote, blocker.Addr().(*net.TCPAddr).Port))
	within(t, 5*time.Second, "bind refused", func() bool { return f.tun.Status().Forwards[1].State == StateRemoteBindFailed })
	resume := f.srv.stallExisting() // the old connection's next bind waits
	within(t, 3*time.Second, "handover", func() bool { return f.tun.Status().Handovers == 1 })
	blocker.Close()
	within(t, 5*time.Second, "bound on the new connection", func() bool { return f.tun.Status().Forwards[1].State == StateUp })
	resume() // the old bind is answered now: refused, the port is the new one's
	time.Sleep(500 * time.Millisecond)
	if st := f.tun.Status(); st.Forwards[1].State != StateUp {
		t.Errorf("forward %s (%s) after the old connection's bind returned, want up", st.Forwards[1].State, st.Forwards[1].LastError)
	}
}
