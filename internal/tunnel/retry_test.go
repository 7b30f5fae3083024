package tunnel

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestRetryKeepsHealthyConnection(t *testing.T) {
	f := startFixture(t, time.Second)
	f.tun.Retry()
	time.Sleep(1500 * time.Millisecond) // longer than the probe's deadline
	st := f.tun.Status()
	if st.State != StateUp || st.Reconnects != 0 || st.LastError != "" {
		t.Errorf("after Retry on a healthy link: status %+v, want up, no reconnect, no error", st)
	}
	if st.KeepaliveRTT <= 0 {
		t.Errorf("no keepalive RTT after the probe: %+v", st)
	}
	if err := roundTrip(f.local, "still"); err != nil {
		t.Fatal(err)
	}
}

// With standbys off, Retry on a silent connection makes a new one at
// once.
func TestRetryProbesDeafServer(t *testing.T) {
	const iv = 5 * time.Second // keepalives alone would need 3 × 5 s
	f := runFixture(t, iv, func(_ *Spec, o *Options) { o.StandbyAfter = -1 })
	within(t, 5*time.Second, "tunnel up", func() bool { return f.tun.Status().State == StateUp })
	f.srv.mute.Store(true) // TCP stays open, keepalives go unanswered
	f.tun.Retry()
	d := within(t, 3*time.Second, "reconnected on Retry", func() bool {
		st := f.tun.Status()
		return st.State == StateUp && st.Reconnects == 1
	})
	t.Logf("Retry on a silently dead link: up again on a new connection %s later (keepalives alone: %s)", d, 3*iv)
	if d > 2*time.Second {
		t.Errorf("reconnect after Retry took %s, want about a second", d)
	}
	if st := f.tun.Status(); !strings.Contains(st.LastError, ErrProbe.Error()) {
		t.Errorf("last error = %q, want the probe error", st.LastError)
	}
	f.srv.mute.Store(false)
	if err := roundTrip(f.local, "back"); err != nil {
		t.Fatal(err)
	}
}

// With standbys on, Retry on a silent connection dials a standby at
// once, which takes over; the tunnel stays up, and the old connection
// keeps what it carries.
func TestRetryHandsOverSilentConnection(t *testing.T) {
	const iv = 5 * time.Second // keepalives alone would need 3 × 5 s
	f := startFixture(t, iv)
	t.Cleanup(f.srv.stop)
	old := holdOpen(t, f.local)
	resume := f.srv.stallExisting() // as after a network change: the old flow is gone
	f.tun.Retry()
	d := within(t, 3*time.Second, "handed over on Retry", func() bool { return f.tun.Status().Handovers == 1 })
	t.Logf("Retry on a silent connection: a standby took over %s later", d)
	if err := roundTrip(f.local, "through the standby"); err != nil {
		t.Fatal(err)
	}
	if st := f.tun.Status(); st.State != StateUp || st.Reconnects != 0 {
		t.Errorf("status %+v: want up, no reconnect", st)
	}
	resume() // the old flow comes back: what it carried still works
	if err := old.echo("kept on the old connection", 3*time.Second); err != nil {
		t.Errorf("connection carried by the old connection after the handover: %v", err)
	}
}

// A Retry probe that answers late (after its second) starts a standby,
// but its reply, when it comes, marks the connection on time again, and
// the standby, which would answer later still, is dropped.
func TestRetryLateReplyKeepsConnection(t *testing.T) {
	const iv = 5 * time.Second
	f := startFixture(t, iv)
	t.Cleanup(f.srv.stop)
	f.srv.replyDelay.Store(int64(1500 * time.Millisecond)) // the probe's reply at 1.5 s, a standby's at 1 s + its dial + 1.5 s
	f.tun.Retry()
	time.Sleep(3500 * time.Millisecond)
	if st := f.tun.Status(); st.State != StateUp || st.Handovers != 0 || st.Reconnects != 0 {
		t.Errorf("status %+v: want up, no handover, no reconnect: the old connection answered first", st)
	}
}

func TestRetryAbandonsHungDial(t *testing.T) {
	// A server that accepts TCP but never speaks SSH.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	})
	var hang atomic.Bool
	hang.Store(true)
	f := runFixture(t, time.Second, func(sp *Spec, o *Options) {
		sp.ConnectTimeout = 10 * time.Second
		o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if hang.Load() {
				addr = ln.Addr().String()
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	})
	var hung net.Conn
	select {
	case hung = <-accepted:
		defer hung.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection to the hung server")
	}
	time.Sleep(200 * time.Millisecond)
	if st := f.tun.Status(); st.State != StateConnecting {
		t.Fatalf("state = %s, want connecting (stuck in the handshake)", st.State)
	}
	hang.Store(false)
	f.tun.Retry()
	d := within(t, 3*time.Second, "up after Retry", func() bool { return f.tun.Status().State == StateUp })
	t.Logf("Retry during a hung handshake: up on a fresh attempt %s later (ConnectTimeout 10s)", d)
	if d > time.Second {
		t.Errorf("took %s, want well under a second", d)
	}
	// The abandoned attempt's connection was closed.
	_ = hung.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, hung); err != nil {
		t.Errorf("abandoned connection not closed: %v", err)
	}
	if err := roundTrip(f.local, "fresh"); err != nil {
		t.Fatal(err)
	}
}
