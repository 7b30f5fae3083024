package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/connwatch/connwatch/internal/clock"
)

// blackhole is a Dial for a fake clock: until back is set, every attempt
// hangs until its context ends, as a connect() whose SYN is dropped
// does; after, it connects with connect. It records each attempt.
type blackhole struct {
	clk     *clock.Fake
	connect func(ctx context.Context, addr string) (net.Conn, error)

	mu       sync.Mutex
	back     bool
	starts   []time.Time
	addrs    []string
	inFlight int
	most     int
}

func (b *blackhole) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	b.mu.Lock()
	b.starts = append(b.starts, b.clk.Now())
	b.addrs = append(b.addrs, addr)
	back := b.back
	b.inFlight++
	b.most = max(b.most, b.inFlight)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	if back {
		return b.connect(ctx, addr)
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (b *blackhole) restore() {
	b.mu.Lock()
	b.back = true
	b.mu.Unlock()
}

// since returns the attempts started at or after from.
func (b *blackhole) since(from time.Time) []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []time.Time
	for _, s := range b.starts {
		if !s.Before(from) {
			out = append(out, s)
		}
	}
	return out
}

// step advances clk by d in increments of 10 ms, letting the goroutines
// woken by each increment run before the next (a bounded real pause;
// the test's bounds leave room for a late one).
func step(clk *clock.Fake, d time.Duration) { stepBy(clk, d, 10*time.Millisecond) }

// stepBy is step in increments of inc.
func stepBy(clk *clock.Fake, d, inc time.Duration) {
	for end := clk.Now().Add(d); clk.Now().Before(end); {
		clk.Advance(inc)
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}

// TestDialRaceStaggers dials a blackholed server: attempts start every
// interval to twice that while the earlier ones wait, take turns over
// the addresses, never more than maxDialsInFlight at once, each given
// up after its limit; once the link is back, the next attempt connects.
func TestDialRaceStaggers(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	pipes := make(chan net.Conn, 16)
	b := &blackhole{clk: clk, connect: func(context.Context, string) (net.Conn, error) {
		c, s := net.Pipe()
		pipes <- s
		return c, nil
	}}
	const iv = 250 * time.Millisecond
	d := &dialer{clk: clk, dial: b.dial, interval: iv, attempt: 3 * time.Second, budget: time.Hour}
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := d.race(context.Background(), []string{"192.0.2.1:22", "[2001:db8::1]:22"})
		done <- result{c, err}
	}()
	const outage = 30 * time.Second
	stepBy(clk, outage, 25*time.Millisecond)
	starts := b.since(time.Unix(0, 0))
	if n := len(starts); n < int(outage/(2*iv)) || n > int(outage/iv)+1 {
		t.Errorf("%d attempts in %s, want one every %s to %s", n, outage, iv, 2*iv)
	}
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < iv || gap > 2*iv+100*time.Millisecond {
			t.Errorf("attempt %d started %s after the one before, want %s to %s", i, gap, iv, 2*iv)
			break
		}
	}
	b.mu.Lock()
	most, addrs := b.most, b.addrs
	b.mu.Unlock()
	if most > maxDialsInFlight+1 || most < 6 {
		t.Errorf("at most %d attempts in flight, want up to %d, and one giving way (3 s each, one every 250-500 ms)", most, maxDialsInFlight)
	}
	if addrs[0] == addrs[1] || addrs[0] != addrs[2] {
		t.Errorf("addresses %v, want them in turn", addrs[:3])
	}

	back := clk.Now()
	b.restore()
	var r result
	for r.c == nil && r.err == nil && clk.Now().Sub(back) < 5*time.Second {
		step(clk, 10*time.Millisecond)
		select {
		case r = <-done:
		default:
		}
	}
	if r.err != nil || r.c == nil {
		t.Fatalf("race after the link came back: %v", r.err)
	}
	r.c.Close()
	took := clk.Now().Sub(back)
	t.Logf("connected %s (fake clock) after the link came back; %d attempts in flight at most", took, most)
	if took > 2*iv+100*time.Millisecond {
		t.Errorf("connected %s after the link came back, want within %s", took, 2*iv)
	}
	within(t, 2*time.Second, "every attempt ended", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.inFlight == 0
	})
}

// TestDialRaceClosesLosers makes two attempts connect: the race returns
// one and closes the other.
func TestDialRaceClosesLosers(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	release := make(chan struct{})
	var mu sync.Mutex
	var far []net.Conn
	dial := func(context.Context, string, string) (net.Conn, error) {
		<-release // every attempt connects
		c, s := net.Pipe()
		mu.Lock()
		far = append(far, s)
		mu.Unlock()
		return c, nil
	}
	d := &dialer{clk: clk, dial: dial, interval: 250 * time.Millisecond, attempt: 3 * time.Second, budget: time.Hour}
	done := make(chan net.Conn, 1)
	go func() {
		c, err := d.race(context.Background(), []string{"192.0.2.1:22"})
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	step(clk, 600*time.Millisecond) // two attempts or three
	close(release)
	c := <-done
	defer c.Close()
	mu.Lock()
	defer mu.Unlock()
	closed := 0
	for _, s := range far {
		_ = s.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := s.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	if len(far) < 2 || closed != len(far)-1 {
		t.Errorf("%d attempts connected, %d of them closed; want all but the winner closed", len(far), closed)
	}
}

// TestDialRaceBudget ends a round after its budget with the last
// attempt's error.
func TestDialRaceBudget(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	refused := func(context.Context, string, string) (net.Conn, error) { return nil, syscall.ECONNREFUSED }
	d := &dialer{clk: clk, dial: refused, interval: 250 * time.Millisecond, attempt: 3 * time.Second, budget: 2 * time.Second}
	done := make(chan error, 1)
	go func() { _, err := d.race(context.Background(), []string{"192.0.2.1:22"}); done <- err }()
	var err error
	for err == nil && clk.Now().Before(time.Unix(10, 0)) {
		step(clk, 10*time.Millisecond)
		select {
		case err = <-done:
		default:
		}
	}
	if !errors.Is(err, syscall.ECONNREFUSED) || isSlow(err) {
		t.Fatalf("race = %v, want the refusal, not slow", err)
	}
	if !errors.Is(err, errRoundOver) {
		t.Errorf("race = %v, want errRoundOver", err)
	}
	if got := clk.Now().Sub(time.Unix(0, 0)); got < 2*time.Second || got > 2*time.Second+600*time.Millisecond {
		t.Errorf("round ended after %s, want at the first turn after its budget (2 s)", got)
	}
}

// TestOutageRecoversWithinInterval runs a tunnel on a fake clock through
// outages of 20 s and 2 min (a blackhole: dials hang) and checks that
// once the link is back a connection attempt starts within two dial
// intervals, however long the outage was: no backoff grows while the
// network is down, so 2 min stands for 10 min and longer too
// (scripts/bench-tunnel.sh --outage 600 measures that for real).
func TestOutageRecoversWithinInterval(t *testing.T) {
	for _, outage := range []time.Duration{20 * time.Second, 2 * time.Minute} {
		t.Run(outage.String(), func(t *testing.T) {
			clk := clock.NewFake(time.Unix(0, 0))
			b := &blackhole{clk: clk, connect: func(context.Context, string) (net.Conn, error) {
				return nil, syscall.ECONNREFUSED // back, but only the refusal is needed here
			}}
			tun := New(Spec{Host: "t", HostName: "192.0.2.1", Port: 22, ServerAliveInterval: time.Second, ServerAliveCountMax: 3},
				Options{Clock: clk, Dial: b.dial, Logger: slog.New(slog.DiscardHandler)})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- tun.Run(ctx) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Run = %v", err)
				}
			}()
			stepBy(clk, outage, 50*time.Millisecond)
			starts := b.since(time.Unix(0, 0))
			var worst time.Duration
			for i := 1; i < len(starts); i++ {
				worst = max(worst, starts[i].Sub(starts[i-1]))
			}
			if worst > 2*DefaultDialInterval+150*time.Millisecond {
				t.Errorf("longest wait between attempts during the outage: %s, want at most %s", worst, 2*DefaultDialInterval)
			}
			back := clk.Now()
			b.restore()
			step(clk, time.Second)
			after := b.since(back)
			if len(after) == 0 {
				t.Fatalf("no attempt within 1 s of the link's return (%d during the %s outage)", len(starts), outage)
			}
			first := after[0].Sub(back)
			t.Logf("%s outage: %d attempts, longest gap %s; first attempt %s after the link came back", outage, len(starts), worst, first)
			if first > 2*DefaultDialInterval+100*time.Millisecond {
				t.Errorf("first attempt %s after the link came back, want within %s", first, 2*DefaultDialInterval)
			}
		})
	}
}

// TestRefusedAuthStaysSlow connects to a server that refuses the key,
// and to one whose host key does not match known_hosts: the retries back
// off up to BackoffMax and never come at the network's pace, so a bad
// key does not hammer the server.
func TestRefusedAuthStaysSlow(t *testing.T) {
	for _, c := range []struct {
		name, wantErr   string
		hostKeyMismatch bool
	}{
		{"key refused", "unable to authenticate", false},
		{"host key mismatch", ErrHostKey.Error(), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			key, pub := clientKey(t, dir)
			_, other := clientKey(t, t.TempDir())
			authorised := other // another key
			if c.hostKeyMismatch {
				authorised = pub
			}
			srv := newTestServer(t, authorised)
			kh := srv.knownHosts(t, dir)
			if c.hostKeyMismatch { // known_hosts holds another server's key for it
				impostor := newTestServer(t, pub)
				impostor.addr = srv.addr
				kh = impostor.knownHosts(t, t.TempDir())
			}
			clk := clock.NewFake(time.Unix(0, 0))
			var mu sync.Mutex
			var starts []time.Time
			dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				starts = append(starts, clk.Now())
				mu.Unlock()
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}
			spec := Spec{
				Host: "t", HostName: "127.0.0.1", Port: srv.port(), User: "u",
				IdentityFiles: []string{key}, IdentitiesOnly: true,
				UserKnownHostsFiles: []string{kh}, StrictHostKeyChecking: HostKeyStrict,
				ServerAliveInterval: time.Second, ServerAliveCountMax: 3,
			}
			tun := New(spec, Options{Clock: clk, Dial: dial, Logger: slog.New(slog.DiscardHandler), AgentSocket: "/nonexistent",
				BackoffMin: time.Second, BackoffMax: 8 * time.Second})
			runTunnel(t, tun)
			for n := 1; n <= 6; n++ {
				var at time.Time
				within(t, 5*time.Second, fmt.Sprintf("backoff %d", n), func() bool {
					var ok bool
					at, ok = clk.NextDeadline()
					return ok && tun.Status().State == StateBackoff
				})
				wait := at.Sub(clk.Now())
				upper := min(time.Second<<(n-1), 8*time.Second)
				if wait < upper/2 || wait > upper {
					t.Errorf("wait %d = %s, want in [%s, %s]", n, wait, upper/2, upper)
				}
				clk.Set(at)
				within(t, 5*time.Second, "next attempt", func() bool { mu.Lock(); defer mu.Unlock(); return len(starts) == n+1 })
			}
			if st := tun.Status(); !strings.Contains(st.LastError, c.wantErr) {
				t.Errorf("last error %q, want %q", st.LastError, c.wantErr)
			}
		})
	}
}

// TestLookupRemembers dials the last answer at once when the name was
// resolved before, while a fresh lookup runs for the next round.
func TestLookupRemembers(t *testing.T) {
	answers := make(chan []net.IP, 1)
	failing := make(chan struct{})
	l := &lookup{last: map[string][]net.IP{}, inFlight: map[string]bool{}, resolve: func(ctx context.Context, _ string) ([]net.IP, error) {
		select {
		case ips := <-answers:
			return ips, nil
		case <-failing:
			return nil, errors.New("no DNS server answers")
		}
	}}
	if got, err := l.addrs(context.Background(), context.Background(), "192.0.2.7", 22); err != nil || got[0] != "192.0.2.7:22" {
		t.Fatalf("an address literal: %v %v", got, err)
	}
	answers <- []net.IP{net.ParseIP("192.0.2.1"), net.ParseIP("2001:db8::1")}
	got, err := l.addrs(context.Background(), context.Background(), "server", 22)
	if err != nil || strings.Join(got, " ") != "192.0.2.1:22 [2001:db8::1]:22" {
		t.Fatalf("first lookup: %v %v", got, err)
	}
	// DNS is down: the remembered answer, at once.
	close(failing)
	got, err = l.addrs(context.Background(), context.Background(), "server", 22)
	if err != nil || got[0] != "192.0.2.1:22" {
		t.Fatalf("with DNS down: %v %v, want the last answer", got, err)
	}
	l.wg.Wait()
	// A fresh answer serves the round after it came.
	failing = make(chan struct{})
	answers <- []net.IP{net.ParseIP("192.0.2.9")}
	_, _ = l.addrs(context.Background(), context.Background(), "server", 22)
	l.wg.Wait()
	got, _ = l.addrs(context.Background(), context.Background(), "server", 22)
	close(failing)
	l.wg.Wait()
	if got[0] != "192.0.2.9:22" {
		t.Errorf("after a fresh answer: %v, want it", got)
	}
}

func TestCipherPreference(t *testing.T) {
	if got := cipherPreference(true); got[0] != ssh.CipherAES128GCM || got[2] != ssh.CipherChaCha20Poly1305 {
		t.Errorf("with AES-GCM in hardware: %v", got)
	}
	if got := cipherPreference(false); got[0] != ssh.CipherChaCha20Poly1305 || len(got) != 6 {
		t.Errorf("without: %v", got)
	}
}
