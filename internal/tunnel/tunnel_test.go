package tunnel

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// within polls cond until it holds, at most d.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// roundTrip sends a line through addr and expects it back within 3 s.
func roundTrip(addr, msg string) error { return roundTripWithin(addr, msg, 3*time.Second) }

type fixture struct {
	srv    *testServer
	spec   Spec
	tun    *Tunnel
	local  string // the LocalForward's address
	cancel context.CancelFunc
	done   chan error
}

// toEcho returns a forward of kind from 127.0.0.1:port to a new echo
// server.
func toEcho(t *testing.T, kind Kind, port int) Forward {
	echo := echoServer(t)
	h, p, _ := net.SplitHostPort(echo)
	pn, _ := strconv.Atoi(p)
	return Forward{Kind: kind, BindHost: "127.0.0.1", BindPort: port, DestHost: h, DestPort: pn}
}

// startFixture runs a Tunnel with one LocalForward to an echo server
// through the in-process server.
func startFixture(t *testing.T, interval time.Duration, extra ...Forward) *fixture {
	f := runFixture(t, interval, nil, extra...)
	within(t, 5*time.Second, "tunnel up", func() bool { return f.tun.Status().State == StateUp })
	return f
}

// runFixture is startFixture without waiting for the link; tweak, if not
// nil, may change the Spec and Options before the Tunnel is made.
func runFixture(t *testing.T, interval time.Duration, tweak func(*Spec, *Options), extra ...Forward) *fixture {
	dir := t.TempDir()
	key, pub := clientKey(t, dir)
	srv := newTestServer(t, pub)
	echo := echoServer(t)
	eh, ep, _ := net.SplitHostPort(echo)
	epn, _ := strconv.Atoi(ep)
	lport := freeLocalPort(t)
	spec := Spec{
		Host: "test", HostName: "127.0.0.1", Port: srv.port(), User: "u",
		IdentityFiles: []string{key}, IdentitiesOnly: true,
		UserKnownHostsFiles:   []string{srv.knownHosts(t, dir)},
		StrictHostKeyChecking: HostKeyStrict,
		ServerAliveInterval:   interval, ServerAliveCountMax: 3,
		ConnectTimeout: 2 * time.Second,
		Forwards:       append([]Forward{{Kind: Local, BindHost: "127.0.0.1", BindPort: lport, DestHost: eh, DestPort: epn}}, extra...),
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if !testing.Verbose() {
		log = slog.New(slog.DiscardHandler)
	}
	opt := Options{Logger: log, AgentSocket: "/nonexistent"}
	if tweak != nil {
		tweak(&spec, &opt)
	}
	tun := New(spec, opt)
	ctx, cancel := context.WithCancel(context.Background())
	f := &fixture{srv: srv, spec: spec, tun: tun, local: net.JoinHostPort("127.0.0.1", strconv.Itoa(lport)), cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- tun.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-f.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return f
}

func TestLocalForwardSurvivesServerRestart(t *testing.T) {
	f := startFixture(t, time.Second)
	if err := roundTrip(f.local, "hello"); err != nil {
		t.Fatalf("through the tunnel: %v", err)
	}
	f.srv.stop()
	within(t, 5*time.Second, "loss noticed", func() bool { return f.tun.Status().State != StateUp })
	time.Sleep(300 * time.Millisecond) // the server stays down a while
	f.srv.restart()
	back := time.Now()
	d := within(t, 15*time.Second, "reconnected", func() bool { return f.tun.Status().State == StateUp })
	if err := roundTrip(f.local, "again"); err != nil {
		t.Fatalf("through the tunnel after restart: %v", err)
	}
	st := f.tun.Status()
	t.Logf("reconnected %s after the server came back (forward works again %s after); status %+v", d, time.Since(back), st)
	if st.Reconnects != 1 || st.LastError == "" {
		t.Errorf("status = %+v, want 1 reconnect and the last error", st)
	}
}

func TestConnectionWhileDownWaitsForLink(t *testing.T) {
	f := startFixture(t, time.Second)
	f.srv.stop()
	within(t, 5*time.Second, "loss noticed", func() bool { return f.tun.Status().State != StateUp })
	errc := make(chan error, 1)
	go func() { errc <- roundTrip(f.local, "queued") }()
	time.Sleep(200 * time.Millisecond)
	f.srv.restart()
	f.tun.Retry()
	if err := <-errc; err != nil {
		t.Fatalf("connection made while down: %v", err)
	}
}

// A connection whose client gives up while it waits for the link is
// dropped when the link returns, without a channel to its destination;
// one still waiting is carried.
func TestGaveUpWhileDownIsDropped(t *testing.T) {
	f := startFixture(t, time.Second)
	f.srv.stop()
	within(t, 5*time.Second, "loss noticed", func() bool { return f.tun.Status().State != StateUp })
	gaveUp, err := net.Dial("tcp", f.local)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(gaveUp, "a request left unread\n"); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- roundTripWithin(f.local, "still waiting", 10*time.Second) }()
	time.Sleep(200 * time.Millisecond) // both accepted, waiting
	gaveUp.Close()
	time.Sleep(100 * time.Millisecond)
	before := f.srv.channels.Load()
	f.srv.restart()
	f.tun.Retry()
	if err := <-errc; err != nil {
		t.Fatalf("connection still waiting when the link came back: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := f.srv.channels.Load() - before; n != 1 {
		t.Errorf("%d channels opened when the link came back, want 1 (the one still waiting)", n)
	}
	if st := f.tun.Status(); st.Forwards[0].LastError != "" {
		t.Errorf("forward's last error %q: a client giving up is not the forward's failure", st.Forwards[0].LastError)
	}
}

func TestKeepaliveDetectsDeafServer(t *testing.T) {
	const iv = time.Second
	f := startFixture(t, iv)
	within(t, 3*iv, "first keepalive reply", func() bool { return f.tun.Status().KeepaliveRTT > 0 })
	f.srv.mute.Store(true)
	muted := time.Now()
	d := within(t, 6*iv, "dead link detected", func() bool { return f.tun.Status().State != StateUp })
	t.Logf("dead link detected %s after the server went deaf (interval %s × 3)", d, iv)
	if d > iv*(3+1)+500*time.Millisecond {
		t.Errorf("detection took %s, want at most (CountMax+1) × Interval", d)
	}
	if st := f.tun.Status(); !strings.Contains(st.LastError, ErrKeepalive.Error()) {
		t.Errorf("last error = %q, want the keepalive error", st.LastError)
	}
	// Standbys connect to a deaf server too, but none answers its
	// keepalive, so none takes over.
	if st := f.tun.Status(); st.Handovers != 0 {
		t.Errorf("handovers = %d, want 0: a standby must answer before it takes over", st.Handovers)
	}
	f.srv.mute.Store(false)
	within(t, 15*time.Second, "reconnected", func() bool { return f.tun.Status().State == StateUp })
	t.Logf("up again %s after going deaf", time.Since(muted))
	if err := roundTrip(f.local, "alive"); err != nil {
		t.Fatal(err)
	}
}

func TestRemoteAndDynamicForwards(t *testing.T) {
	rport := freeLocalPort(t)
	dport := freeLocalPort(t)
	echo := echoServer(t)
	eh, ep, _ := net.SplitHostPort(echo)
	epn, _ := strconv.Atoi(ep)
	f := startFixture(t, time.Second,
		Forward{Kind: Remote, BindHost: "127.0.0.1", BindPort: rport, DestHost: eh, DestPort: epn},
		Forward{Kind: Dynamic, BindHost: "127.0.0.1", BindPort: dport},
		// This port is taken by the echo server on the "server" side.
		Forward{Kind: Remote, BindHost: "127.0.0.1", BindPort: epn, DestHost: eh, DestPort: epn},
	)
	within(t, 5*time.Second, "remote forward up", func() bool { return f.tun.Status().Forwards[1].State == StateUp })
	if err := roundTrip(net.JoinHostPort("127.0.0.1", strconv.Itoa(rport)), "remote"); err != nil {
		t.Fatalf("remote forward: %v", err)
	}
	within(t, 5*time.Second, "refused bind reported", func() bool {
		return f.tun.Status().Forwards[3].State == StateRemoteBindFailed
	})
	// SOCKS5 CONNECT to the echo server by IPv4 address.
	c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(dport)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	req := []byte{5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, byte(epn >> 8), byte(epn)}
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	resp := make([]byte, 12)
	if _, err := io.ReadFull(c, resp); err != nil || resp[0] != 5 || resp[1] != 0 || resp[2+1] != 0 {
		t.Fatalf("socks handshake: %v %v", resp, err)
	}
	_, _ = io.WriteString(c, "socks\n")
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "socks\n" {
		t.Fatalf("through socks: %q %v", got, err)
	}
	// The failed remote bind did not take the others down.
	if err := roundTrip(f.local, "still"); err != nil {
		t.Fatal(err)
	}
}

func TestAcceptNewAndStrict(t *testing.T) {
	dir := t.TempDir()
	key, pub := clientKey(t, dir)
	srv := newTestServer(t, pub)
	kh := dir + "/sub/known_hosts"
	spec := Spec{
		Host: "t", HostName: "127.0.0.1", Port: srv.port(), User: "u",
		IdentityFiles: []string{key}, UserKnownHostsFiles: []string{kh},
		StrictHostKeyChecking: HostKeyStrict, ServerAliveInterval: time.Second, ServerAliveCountMax: 3,
	}
	tun := New(spec, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	if _, _, err := tun.connect(context.Background()); !errors.Is(err, ErrHostKey) {
		t.Fatalf("strict, unknown host: err = %v, want ErrHostKey", err)
	}
	spec.StrictHostKeyChecking = HostKeyAcceptNew
	tun = New(spec, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	c, _, err := tun.connect(context.Background())
	if err != nil {
		t.Fatalf("accept-new: %v", err)
	}
	c.Close()
	b, err := os.ReadFile(kh)
	if err != nil || !strings.Contains(string(b), "[127.0.0.1]:"+strconv.Itoa(srv.port())+" ssh-ed25519 ") {
		t.Fatalf("known_hosts after accept-new = %q, %v", b, err)
	}
	// Now known: strict passes, and a different key is refused even under accept-new.
	spec.StrictHostKeyChecking = HostKeyStrict
	tun = New(spec, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	if c, _, err := tun.connect(context.Background()); err != nil {
		t.Fatalf("strict, known host: %v", err)
	} else {
		c.Close()
	}
	other := newTestServer(t, pub)
	spec.Port = other.port()
	if err := os.WriteFile(kh, []byte(strings.Replace(string(b), strconv.Itoa(srv.port()), strconv.Itoa(other.port()), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	spec.StrictHostKeyChecking = HostKeyAcceptNew
	tun = New(spec, Options{Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent"})
	if _, _, err := tun.connect(context.Background()); !errors.Is(err, ErrHostKey) {
		t.Fatalf("changed key under accept-new: err = %v, want ErrHostKey", err)
	}
}

// TestBackoffOnFakeClock drives Run's reconnect loop with a fake clock
// against a server that fails every handshake (a failure that retrying
// soon will not fix): no sleeping, attempts happen exactly when the
// backoff says, and Retry skips the wait.
func TestBackoffOnFakeClock(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	var mu sync.Mutex
	var attempts []time.Time
	dial := func(context.Context, string, string) (net.Conn, error) {
		mu.Lock()
		attempts = append(attempts, clk.Now())
		mu.Unlock()
		c, s := net.Pipe()
		s.Close() // the handshake fails at once
		return c, nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(attempts) }
	tun := New(Spec{Host: "t", HostName: "127.0.0.1", Port: 1, ServerAliveInterval: time.Second, ServerAliveCountMax: 3},
		Options{Clock: clk, Dial: dial, Logger: slog.New(slog.DiscardHandler), BackoffMin: time.Second, BackoffMax: 8 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tun.Run(ctx) }()
	waitTimer := func() time.Time {
		t.Helper()
		var at time.Time
		within(t, 5*time.Second, "backoff timer", func() bool {
			var ok bool
			at, ok = clk.NextDeadline()
			return ok && tun.Status().State == StateBackoff
		})
		return at
	}
	for n := 1; n <= 6; n++ {
		at := waitTimer()
		wait := at.Sub(clk.Now())
		upper := min(time.Second<<(n-1), 8*time.Second)
		if wait < upper/2 || wait > upper {
			t.Errorf("wait %d = %s, want in [%s, %s]", n, wait, upper/2, upper)
		}
		clk.Set(at)
		within(t, 5*time.Second, "next attempt", func() bool { return count() == n+1 })
	}
	waitTimer()
	tun.Retry()
	within(t, 5*time.Second, "attempt on Retry", func() bool { return count() == 8 })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil on cancel", err)
	}
}
