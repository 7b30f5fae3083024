package tunnel

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// takenPort listens on a 127.0.0.1 port and returns the listener.
func takenPort(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestExitOnForwardFailure(t *testing.T) {
	dir := t.TempDir()
	key, pub := clientKey(t, dir)
	srv := newTestServer(t, pub)
	blocker := takenPort(t)
	bport := blocker.Addr().(*net.TCPAddr).Port
	free := freeLocalPort(t)
	spec := Spec{
		Host: "t", HostName: "127.0.0.1", Port: srv.port(), User: "u",
		IdentityFiles: []string{key}, IdentitiesOnly: true,
		UserKnownHostsFiles: []string{srv.knownHosts(t, dir)}, StrictHostKeyChecking: HostKeyStrict,
		ServerAliveInterval: time.Second, ServerAliveCountMax: 3, ExitOnForwardFailure: true,
		Forwards: []Forward{
			{Kind: Local, BindHost: "127.0.0.1", BindPort: free, DestHost: "127.0.0.1", DestPort: 9},
			{Kind: Local, BindHost: "127.0.0.1", BindPort: bport, DestHost: "127.0.0.1", DestPort: 9},
		},
	}
	tun := New(spec, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	done := make(chan error, 1)
	go func() { done <- tun.Run(context.Background()) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	if err == nil || !strings.Contains(err.Error(), spec.Forwards[1].String()) {
		t.Fatalf("Run = %v, want an error naming %s", err, spec.Forwards[1])
	}
	if st := tun.Status().Forwards[1]; st.State != StateBindFailed || st.LastError == "" {
		t.Errorf("forward status = %+v, want bind-failed with the error", st)
	}
	// The forward bound before the failure was released.
	ln, lerr := net.Listen("tcp", spec.Forwards[0].BindAddr())
	if lerr != nil {
		t.Fatalf("port of the other forward still taken after Run returned: %v", lerr)
	}
	ln.Close()
}

func TestLocalBindRetried(t *testing.T) {
	blocker := takenPort(t)
	bport := blocker.Addr().(*net.TCPAddr).Port
	var fwd Forward
	f := runFixture(t, time.Second, func(sp *Spec, o *Options) {
		fwd = sp.Forwards[0]
		fwd.BindPort = bport
		sp.Forwards = append(sp.Forwards, fwd)
		o.LocalBindRetry = 200 * time.Millisecond
	})
	within(t, 5*time.Second, "tunnel up", func() bool { return f.tun.Status().State == StateUp })
	if st := f.tun.Status().Forwards[1]; st.State != StateBindFailed || st.LastError == "" {
		t.Fatalf("taken port: forward status = %+v, want bind-failed", st)
	}
	// The others work meanwhile.
	if err := roundTrip(f.local, "other"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a few failed retries
	if st := f.tun.Status().Forwards[1]; st.State != StateBindFailed {
		t.Fatalf("still taken: forward status = %+v", st)
	}
	blocker.Close()
	freed := time.Now()
	within(t, 3*time.Second, "bound once free", func() bool { return f.tun.Status().Forwards[1].State == StateListening })
	t.Logf("bound %s after the port was freed", time.Since(freed))
	if err := roundTrip(fwd.BindAddr(), "retried"); err != nil {
		t.Fatalf("through the retried forward: %v", err)
	}
}

// reconnectWhilePortHeld runs the fixture with a RemoteForward (port
// rport) under ExitOnForwardFailure, then makes a new connection while
// the server keeps holding the port for the old session (Retry on a
// server deaf to keepalives, standbys off so that Retry reconnects at
// once), and returns once the new connection's bind was refused
// (refused: how long after the reconnect that took).
func reconnectWhilePortHeld(t *testing.T, tweak func(*Options)) (f *fixture, rport int, refused time.Duration) {
	t.Helper()
	rport = freeLocalPort(t)
	f = runFixture(t, time.Second, func(sp *Spec, o *Options) {
		sp.ExitOnForwardFailure = true
		o.StandbyAfter = -1
		tweak(o)
	}, toEcho(t, Remote, rport))
	within(t, 5*time.Second, "remote forward up", func() bool { return f.tun.Status().Forwards[1].State == StateUp })
	f.srv.stale.Store(true)
	f.srv.mute.Store(true)
	f.tun.Retry() // the probe goes unanswered: a new connection
	within(t, 5*time.Second, "reconnected", func() bool { st := f.tun.Status(); return st.Reconnects == 1 && st.State == StateUp })
	f.srv.mute.Store(false)
	refused = within(t, 3*time.Second, "bind refused", func() bool { return f.tun.Status().Forwards[1].State == StateRemoteBindFailed })
	return f, rport, refused
}

// Under ExitOnForwardFailure a RemoteForward the server still refuses
// when RemoteRebindGrace has passed ends the reconnected connection
// after all (and the next one is made after the backoff).
func TestRemoteRebindGraceRunsOut(t *testing.T) {
	const grace = 700 * time.Millisecond
	f, _, refused := reconnectWhilePortHeld(t, func(o *Options) {
		o.RemoteBindRetry = 100 * time.Millisecond
		o.rebindGrace = grace
	})
	d := within(t, grace+3*time.Second, "connection dropped once the grace ran out", func() bool { return f.tun.Status().State != StateUp })
	t.Logf("connection dropped %s after the bind was first refused (grace %s)", (refused + d).Round(time.Millisecond), grace)
	if d+refused < grace-100*time.Millisecond {
		t.Errorf("dropped after %s, before the grace of %s ran out", d+refused, grace)
	}
	if st := f.tun.Status(); !strings.Contains(st.LastError, "remote listen") {
		t.Errorf("last error %q, want the refused remote listen", st.LastError)
	}
}

// TestExitOnForwardFailureAfterReconnect reconnects while the server
// still holds the RemoteForward's port for the old session: under
// ExitOnForwardFailure the new connection stays (the LocalForward
// carries data at once) and the bind is retried until the port is free.
func TestExitOnForwardFailureAfterReconnect(t *testing.T) {
	f, rport, _ := reconnectWhilePortHeld(t, func(o *Options) { o.RemoteBindRetry = 200 * time.Millisecond })
	if err := roundTrip(f.local, "local while the remote port is held"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a few refused binds
	if st := f.tun.Status(); st.State != StateUp || st.Reconnects != 1 {
		t.Fatalf("status %+v, want the connection kept while the port is held", st)
	}
	f.srv.stale.Store(false)
	f.srv.releaseStale()
	within(t, 3*time.Second, "remote forward back", func() bool { return f.tun.Status().Forwards[1].State == StateUp })
	if err := roundTrip(net.JoinHostPort("127.0.0.1", strconv.Itoa(rport)), "remote again"); err != nil {
		t.Fatal(err)
	}
}
