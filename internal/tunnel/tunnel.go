package tunnel

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/connwatch/connwatch/internal/backoff"
	"github.com/connwatch/connwatch/internal/clock"
)

// State is the state of a tunnel or of one of its forwards.
type State string

// States. A tunnel is connecting, up or in backoff. A local or dynamic
// forward is listening (its listener stays open across reconnects) or
// bind-failed (retried with backoff up to Options.LocalBindRetry, unless
// ExitOnForwardFailure made Run return); a remote forward is up, remote-bind-failed (the server
// refused the bind; retried every few seconds while the link is up) or
// down (waiting for the link). With Options.ProbeInterval, a local
// forward is down while the link is up but its destination cannot be
// reached through it.
const (
	StateConnecting       State = "connecting"
	StateUp               State = "up"
	StateBackoff          State = "backoff"
	StateListening        State = "listening"
	StateBindFailed       State = "bind-failed"
	StateRemoteBindFailed State = "remote-bind-failed"
	StateDown             State = "down"
)

// Log keys.
const (
	keyHost    = "host"
	keyState   = "state"
	keyErr     = "err"
	keyForward = "forward"
	keyRetryIn = "retry_in"
	keyRTT     = "rtt"
)

// Errors callers may branch on.
var (
	// ErrKeepalive ends a connection whose server stopped answering
	// keepalives.
	ErrKeepalive = errors.New("server stopped answering keepalives")
	// ErrLinkDown refuses a local connection that waited too long for
	// the link.
	ErrLinkDown = errors.New("tunnel is down")
	// ErrProbe ends a connection that did not answer the keepalive sent
	// at once on Retry, when standby connections are off (with them on,
	// that dials a standby); the next attempt starts without a backoff
	// wait.
	ErrProbe = errors.New("server did not answer the probe on retry")
)

// probeTimeout is the longest wait for the reply to the probe sent on
// Retry (shorter when ServerAliveInterval is).
const probeTimeout = time.Second

// Options tune a Tunnel; zero values pick the defaults.
type Options struct {
	Clock  clock.Clock  // default clock.Real
	Logger *slog.Logger // default slog.Default
	// AgentSocket is the ssh-agent socket; "" reads SSH_AUTH_SOCK.
	AgentSocket string
	// BackoffMin and BackoffMax bound the reconnect backoff after a
	// failure that retrying soon will not fix: the SSH handshake failed
	// (authentication, host key), settings or keys could not be used, or
	// a RemoteForward was refused under ExitOnForwardFailure (250 ms,
	// 10 s). Network failures do not back off: see DialInterval.
	BackoffMin, BackoffMax time.Duration
	// DialInterval paces connection attempts while the server cannot be
	// reached (250 ms): a new TCP attempt starts every DialInterval to
	// 2×DialInterval (jittered) while earlier ones still wait for an
	// answer, the first to connect wins, and after a lost connection or a
	// failed round the next starts within the same interval.
	DialInterval time.Duration
	// Lookup resolves the server's name (default net.DefaultResolver's
	// LookupIP); the last answer is remembered and dialled while a fresh
	// lookup runs.
	Lookup func(ctx context.Context, host string) ([]net.IP, error)
	// HealthyAfter is how long a connection must stay up for the backoff
	// to start over from BackoffMin (30 s).
	HealthyAfter time.Duration
	// RemoteBindRetry is the longest wait between attempts to bind a
	// refused RemoteForward (5 s; the first retry is after 0.5 s).
	RemoteBindRetry time.Duration
	// LocalBindRetry is the longest wait between attempts to bind a
	// LocalForward or DynamicForward whose port was taken (5 s; the first
	// retry is after 0.5 s, or LocalBindRetry if shorter). Without
	// ExitOnForwardFailure a failed local bind is retried for as long as
	// Run runs.
	LocalBindRetry time.Duration
	// ProbeInterval, if positive, makes each LocalForward check its
	// destination end to end every ProbeInterval while the link is up: a
	// channel to the destination is opened through the server and closed
	// at once. A forward whose destination cannot be reached is marked
	// down with the error (the tunnel and the listener stay), and
	// listening again once a probe gets through.
	ProbeInterval time.Duration
	// WaitWhileDown is how long a connection accepted on a local or
	// dynamic forward while the link is down waits for it before being
	// closed (15 s).
	WaitWhileDown time.Duration
	// Dial connects to the server (the first jump host with ProxyJump),
	// given an IP address and port; default a net.Dialer. It must give up
	// when ctx ends: attempts that lost the race, ran out of time or were
	// abandoned on Retry are cancelled that way.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ResolveJump returns the settings of a ProxyJump host (ssh -G); it
	// is needed only when the Spec has ProxyJump. Jump hosts are resolved
	// on the first connection attempt that needs them and then kept.
	ResolveJump Resolver
	// StandbyAfter is how late a keepalive reply may be before a standby
	// connection is dialled beside the silent one, to take over if it
	// answers first (see DefaultStandbyAfter; never later than
	// ServerAliveInterval). Negative: no standby, a silent connection is
	// kept until its keepalives run out.
	StandbyAfter time.Duration
	// rebindGrace replaces RemoteRebindGrace when positive (tests).
	rebindGrace time.Duration
	// Streams, if set, is told when a forwarded connection starts
	// streaming (its reads fill the copy buffer: a transfer, not a
	// conversation) and when it stops; see package gcpace.
	Streams Streams
	// OnChange, if set, is called after the Status changed: urgent for a
	// tunnel or forward state change, not urgent for a new keepalive RTT,
	// connection count or per-connection error. It is called without locks held and must not block.
	OnChange func(urgent bool)
}

// Streams is told when forwarded connections start and stop streaming.
type Streams interface {
	Begin()
	End()
}

// Status is a snapshot of a tunnel.
type Status struct {
	Host         string          `json:"host"`
	State        State           `json:"state"`
	Since        time.Time       `json:"since"`
	LastError    string          `json:"last_error,omitempty"` // the error that ended the last connection or attempt
	KeepaliveRTT time.Duration   `json:"keepalive_rtt_ns"`
	Reconnects   int             `json:"reconnects"` // times the link came back up after it was lost
	Handovers    int             `json:"handovers"`  // times a standby connection took over from a silent one
	Forwards     []ForwardStatus `json:"forwards"`
}

// ForwardStatus is a snapshot of one forward.
type ForwardStatus struct {
	Forward   Forward   `json:"forward"`
	State     State     `json:"state"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"` // last bind or per-connection error
	Conns     int       `json:"conns"`                // connections carried so far
}

// Tunnel keeps one Host's forwards alive. Make it with New.
type Tunnel struct {
	spec  Spec
	opt   Options
	clk   clock.Clock
	log   *slog.Logger
	keys  *hostKeys
	retry chan struct{}
	dial  *dialer
	names *lookup

	hopsMu sync.Mutex
	hops   []hop // resolved on first use

	life context.Context // Run's; bounds background lookups

	mu        sync.Mutex
	st        Status
	everUp    bool
	cur       *link         // the connection new forwarded ones take
	ready     chan struct{} // closed when cur is set
	drainStop func()        // closes the connection draining now, if any
}

// New returns a Tunnel for spec; nothing happens until Run.
func New(spec Spec, opt Options) *Tunnel {
	if opt.Clock == nil {
		opt.Clock = clock.Real{}
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.AgentSocket == "" {
		opt.AgentSocket = os.Getenv("SSH_AUTH_SOCK")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opt.BackoffMin, 250*time.Millisecond)
	def(&opt.BackoffMax, 10*time.Second)
	def(&opt.HealthyAfter, 30*time.Second)
	def(&opt.RemoteBindRetry, 5*time.Second)
	def(&opt.LocalBindRetry, 5*time.Second)
	def(&opt.WaitWhileDown, 15*time.Second)
	def(&opt.DialInterval, DefaultDialInterval)
	def(&opt.rebindGrace, RemoteRebindGrace)
	if opt.StandbyAfter == 0 {
		opt.StandbyAfter = DefaultStandbyAfter
	}
	if opt.Dial == nil {
		opt.Dial = (&net.Dialer{}).DialContext
	}
	if opt.Lookup == nil {
		opt.Lookup = func(ctx context.Context, host string) ([]net.IP, error) {
			return net.DefaultResolver.LookupIP(ctx, "ip", host)
		}
	}
	d := &dialer{clk: opt.Clock, dial: opt.Dial, interval: opt.DialInterval, attempt: dialAttemptTimeout, budget: defaultDialBudget}
	if ct := spec.ConnectTimeout; ct > 0 {
		d.attempt, d.budget = min(ct, d.attempt), ct
	}
	t := &Tunnel{
		spec:  spec,
		opt:   opt,
		clk:   opt.Clock,
		log:   opt.Logger.With(keyHost, spec.Host),
		keys:  newHostKeys(spec),
		retry: make(chan struct{}, 1),
		dial:  d,
		names: &lookup{resolve: opt.Lookup, last: map[string][]net.IP{}, inFlight: map[string]bool{}},
		ready: make(chan struct{}),
	}
	t.st = Status{Host: spec.Host, State: StateConnecting, Since: t.clk.Now()}
	for _, f := range spec.Forwards {
		st := StateDown
		t.st.Forwards = append(t.st.Forwards, ForwardStatus{Forward: f, State: st, Since: t.st.Since})
	}
	return t
}

// Retry makes the tunnel check its link now (connwatch tunnel wires
// SIGUSR1 and network changes to it). In backoff, the wait is cut short.
// While connecting, the attempt in progress (dial or handshake) is
// abandoned and a fresh one starts at once. While up, a keepalive is sent
// at once with a short reply deadline (at most a second); a healthy
// connection is left alone; for one that does not answer in time a
// standby connection is dialled at once (see standby.go), or, with
// standbys off, it is closed and a new connection attempted without a
// backoff wait.
func (t *Tunnel) Retry() {
	select {
	case t.retry <- struct{}{}:
	default:
	}
}

// changed tells Options.OnChange.
func (t *Tunnel) changed(urgent bool) {
	if t.opt.OnChange != nil {
		t.opt.OnChange(urgent)
	}
}

// Status returns a snapshot.
func (t *Tunnel) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.st
	st.Forwards = append([]ForwardStatus(nil), t.st.Forwards...)
	return st
}

func (t *Tunnel) setState(s State, err error, attrs ...any) {
	t.mu.Lock()
	changed := t.st.State != s
	t.st.State = s
	t.st.Since = t.clk.Now()
	if err != nil {
		t.st.LastError = err.Error()
	}
	if s == StateUp {
		if t.everUp {
			t.st.Reconnects++
		}
		t.everUp = true
	}
	t.mu.Unlock()
	t.changed(true)
	if changed || err != nil {
		attrs = append([]any{keyState, s}, attrs...)
		if err != nil {
			attrs = append(attrs, keyErr, err)
			t.log.Warn("tunnel state", attrs...)
		} else {
			t.log.Info("tunnel state", attrs...)
		}
	}
}

func (t *Tunnel) setForward(i int, s State, err error) { t.setForwardIf(i, nil, s, err) }

// setForwardIf is setForward done only if cond, when not nil, holds for
// the forward's current state (checked and set under one lock).
func (t *Tunnel) setForwardIf(i int, cond func(State) bool, s State, err error) {
	t.mu.Lock()
	fs := &t.st.Forwards[i]
	if cond != nil && !cond(fs.State) {
		t.mu.Unlock()
		return
	}
	changed := fs.State != s
	fs.State = s
	if changed {
		fs.Since = t.clk.Now()
	}
	if err != nil {
		fs.LastError = err.Error()
	}
	t.mu.Unlock()
	if changed || err != nil {
		t.changed(true)
	}
	if changed {
		if err != nil {
			t.log.Warn("forward state", keyForward, fs.Forward.String(), keyState, s, keyErr, err)
		} else {
			t.log.Info("forward state", keyForward, fs.Forward.String(), keyState, s)
		}
	}
}

// forwardEvent records one carried connection or a per-connection error.
func (t *Tunnel) forwardEvent(i int, err error) {
	if errors.Is(err, errGaveUp) { // the client's doing, not a failure
		t.log.Debug("forwarded connection dropped", keyForward, t.spec.Forwards[i].String(), keyErr, err)
		return
	}
	t.mu.Lock()
	fs := &t.st.Forwards[i]
	if err != nil {
		fs.LastError = err.Error()
	} else {
		fs.Conns++
	}
	f := fs.Forward
	t.mu.Unlock()
	t.changed(false) // counters and per-connection errors can be frequent
	if err != nil {
		t.log.Warn("forwarded connection failed", keyForward, f.String(), keyErr, err)
	}
}

// Run connects and keeps every forward alive until ctx ends, reconnecting
// for as long as it runs: at once (within a DialInterval or two) after a
// network failure, with backoff after one that retrying soon will not
// fix. It returns nil when ctx is cancelled; an error only when a local
// forward cannot bind and ExitOnForwardFailure is set.
func (t *Tunnel) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel: deferred calls run last first
	defer t.names.wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t.life = ctx
	for i, f := range t.spec.Forwards {
		if f.Kind == Remote {
			continue
		}
		ln, err := net.Listen("tcp", f.BindAddr())
		if err != nil {
			t.setForward(i, StateBindFailed, err)
			if t.spec.ExitOnForwardFailure {
				return fmt.Errorf("listen for %s: %w", f, err)
			}
			wg.Go(func() { t.retryBind(ctx, &wg, i) })
			continue
		}
		t.listening(ctx, &wg, i, ln)
	}
	bo := backoff.Backoff{Policy: backoff.Policy{Min: t.opt.BackoffMin, Max: t.opt.BackoffMax}}
	for {
		t.setState(StateConnecting, nil)
		client, conn, retried, err := t.attempt(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if retried {
			t.log.Info("connection attempt abandoned on retry; starting a fresh one", keyErr, err)
			continue
		}
		if err == nil {
			upAt := t.clk.Now()
			t.setState(StateUp, nil, "addr", t.spec.Addr())
			l := newLink(client, conn)
			for l != nil {
				l, err = t.session(ctx, &wg, l)
				if l != nil {
					t.handedOver(l)
				}
			}
			if ctx.Err() != nil {
				return nil
			}
			if t.clk.Now().Sub(upAt) >= t.opt.HealthyAfter {
				bo.Reset()
			}
			if errors.Is(err, ErrProbe) { // Retry found the link dead: no wait
				t.setState(StateConnecting, err)
				continue
			}
		}
		if errors.Is(err, errRoundOver) { // the next round, in step
			t.setState(StateConnecting, err)
			continue
		}
		d := t.dial.gap() // the network's failure: try again at once
		if isSlow(err) {
			d = bo.Next()
		}
		t.setState(StateBackoff, err, keyRetryIn, d)
		if !t.wait(ctx, d) {
			return nil
		}
	}
}

// listening serves a bound local or dynamic forward until ctx ends.
func (t *Tunnel) listening(ctx context.Context, wg *sync.WaitGroup, i int, ln net.Listener) {
	t.setForward(i, StateListening, nil)
	context.AfterFunc(ctx, func() { ln.Close() })
	wg.Go(func() { t.serveLocal(ctx, wg, i, ln) })
}

// retryBind binds a local or dynamic forward whose port was taken, with
// backoff up to LocalBindRetry, until it succeeds or ctx ends.
func (t *Tunnel) retryBind(ctx context.Context, wg *sync.WaitGroup, i int) {
	f := t.spec.Forwards[i]
	bo := backoff.Backoff{Policy: backoff.Policy{Min: min(500*time.Millisecond, t.opt.LocalBindRetry), Max: t.opt.LocalBindRetry}}
	for t.sleep(ctx, bo.Next()) {
		ln, err := net.Listen("tcp", f.BindAddr())
		if err != nil {
			t.setForward(i, StateBindFailed, err)
			continue
		}
		if ctx.Err() != nil {
			ln.Close()
			return
		}
		t.listening(ctx, wg, i, ln)
		return
	}
}

// sleep waits d on the clock; false when ctx ended. Unlike wait it
// leaves Retry alone.
func (t *Tunnel) sleep(ctx context.Context, d time.Duration) bool {
	tm := t.clk.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// wait waits d on the clock, or until Retry; false when ctx ended.
func (t *Tunnel) wait(ctx context.Context, d time.Duration) bool {
	tm := t.clk.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C():
		return true
	case <-t.retry:
		return true
	case <-ctx.Done():
		return false
	}
}

// attempt runs connect, abandoning it when Retry is called meanwhile:
// retried is then true (and err the attempt's error).
func (t *Tunnel) attempt(ctx context.Context) (client *ssh.Client, conn net.Conn, retried bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-t.retry:
			retried = true
			cancel()
		case <-done:
		}
	})
	client, conn, err = t.connect(actx)
	close(done)
	wg.Wait()
	if err == nil {
		return client, conn, false, nil // done before the Retry could stop it: fresh anyway
	}
	return nil, nil, retried && ctx.Err() == nil, err
}

// hop is one server on the way: the jump hosts, then the tunnel's own.
type hop struct {
	spec Spec
	keys *hostKeys
}

// chain returns the hops to the server, resolving jump hosts once.
func (t *Tunnel) chain(ctx context.Context) ([]hop, error) {
	t.hopsMu.Lock()
	defer t.hopsMu.Unlock()
	if t.hops != nil {
		return t.hops, nil
	}
	specs, err := resolveChain(ctx, t.spec, t.opt.ResolveJump, 0)
	if err != nil {
		return nil, err
	}
	hops := make([]hop, len(specs))
	for i, sp := range specs {
		hops[i] = hop{spec: sp, keys: newHostKeys(sp)}
	}
	hops[len(hops)-1].keys = t.keys
	t.hops = hops
	return hops, nil
}

// connect dials and shakes hands within ConnectTimeout (per hop when
// going through jump hosts: each next hop is a direct-tcpip channel of
// the one before). The returned net.Conn is the TCP connection to the
// first hop: closing it ends the whole chain.
func (t *Tunnel) connect(ctx context.Context) (*ssh.Client, net.Conn, error) {
	hops, err := t.chain(ctx)
	if err != nil {
		return nil, nil, slow(err)
	}
	first := hops[0].spec
	life := t.life
	if life == nil {
		life = ctx
	}
	addrs, err := t.names.addrs(ctx, life, first.HostName, first.Port)
	if err != nil {
		return nil, nil, err
	}
	conn, err := t.dial.race(ctx, addrs)
	if err != nil {
		return nil, nil, err
	}
	// A real deadline: the handshakes are bounded by the kernel's clock.
	// Through jump hosts every hop rides on this connection.
	hs := defaultHandshakeTimeout
	if t.spec.ConnectTimeout > 0 {
		hs = t.spec.ConnectTimeout
	}
	_ = conn.SetDeadline(time.Now().Add(hs * time.Duration(len(hops))))
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	var client *ssh.Client
	// Only the first hop reads a socket; the later ones ride on channels,
	// which x/crypto/ssh buffers itself.
	hc := readAhead(conn)
	for i, h := range hops {
		if i > 0 {
			next := h.spec.Addr()
			hc, err = client.Dial("tcp", next)
			if err != nil {
				stop()
				conn.Close()
				return nil, nil, slow(fmt.Errorf("connect to %s through %s: %w", next, hops[i-1].spec.Addr(), err))
			}
		}
		client, err = t.handshake(h, hc)
		if err != nil {
			stop()
			conn.Close()
			return nil, nil, slow(err)
		}
	}
	if !stop() { // cancelled meanwhile: conn is closed or being closed
		conn.Close()
		return nil, nil, fmt.Errorf("connect to %s: %w", t.spec.Addr(), ctx.Err())
	}
	_ = conn.SetDeadline(time.Time{})
	return client, conn, nil
}

// handshake runs the SSH handshake with one hop over conn.
func (t *Tunnel) handshake(h hop, conn net.Conn) (*ssh.Client, error) {
	addr := h.spec.Addr()
	signers, closeAgent, err := h.spec.signers(t.opt.AgentSocket)
	if err != nil {
		return nil, err
	}
	defer closeAgent()
	cfg := &ssh.ClientConfig{
		Config:            ssh.Config{Ciphers: ciphers},
		User:              h.spec.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   h.keys.check,
		HostKeyAlgorithms: h.keys.algorithms(addr, conn.RemoteAddr(), h.spec.HostKeyAlgorithms),
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("ssh handshake with %s: %w", addr, err)
	}
	return ssh.NewClient(c, chans, reqs), nil
}

// session serves the connection l until it dies or ctx ends, or until
// a standby connection takes over (see standby.go): that one is returned,
// and l drains in the background.
func (t *Tunnel) session(ctx context.Context, wg *sync.WaitGroup, l *link) (*link, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	l.ctx = sctx
	client, conn := l.client, l.conn
	context.AfterFunc(sctx, func() { client.Close(); conn.Close() })
	// What only the current connection does: serve the remote forwards,
	// probe, answer Retry, dial a standby.
	fctx, stopServing := context.WithCancel(sctx)
	t.mu.Lock()
	t.cur = l
	close(t.ready)
	t.mu.Unlock()
	detach := func() {
		t.mu.Lock()
		t.cur = nil
		t.ready = make(chan struct{})
		t.mu.Unlock()
		close(l.gone)
	}

	var swg sync.WaitGroup
	swg.Go(func() {
		if err := t.keepalive(sctx, l); err != nil {
			cancel(err) // the cause first: closing makes client.Wait return
			conn.Close()
		}
	})
	swg.Go(func() { // Retry while up: probe at once
		for {
			select {
			case <-fctx.Done():
				return
			case <-t.retry:
			}
			if err := t.probe(fctx, l); err != nil {
				cancel(err)
				conn.Close()
				return
			}
		}
	})
	for i, f := range t.spec.Forwards {
		switch {
		case f.Kind == Remote:
			swg.Go(func() {
				if err := t.serveRemote(fctx, wg, i, l); err != nil {
					cancel(err)
				}
			})
		case f.Kind == Local && t.opt.ProbeInterval > 0:
			swg.Go(func() { t.probeForward(fctx, i, client) })
		}
	}
	handover := make(chan *link, 1)
	if t.opt.StandbyAfter > 0 {
		swg.Go(func() { t.standby(fctx, l, handover) })
	}
	closed := make(chan struct{})
	var err error
	go func() {
		err = client.Wait()
		close(closed)
	}()

	select {
	case next := <-handover:
		detach()
		stopServing()
		slot := t.takeDrainSlot()
		wg.Go(func() {
			t.drain(l, closed, slot, cancel, func() {
				cancel(nil)
				swg.Wait()
				<-closed
			})
		})
		return next, nil
	case <-closed:
	}
	detach()
	cancel(nil)
	stopServing()
	swg.Wait()
	select {
	case next := <-handover: // ready as the old one died: take it
		return next, nil
	default:
	}
	for i, f := range t.spec.Forwards {
		switch f.Kind {
		case Remote:
			t.setForward(i, StateDown, nil)
		case Local: // a probe's verdict holds only while the link is up
			t.setForwardIf(i, isState(StateDown), StateListening, nil)
		}
	}
	if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return nil, cause
	}
	if err == nil {
		err = errors.New("closed")
	}
	return nil, fmt.Errorf("connection lost: %w", err)
}

// handedOver records that the standby l took over.
func (t *Tunnel) handedOver(l *link) {
	t.mu.Lock()
	t.st.Handovers++
	t.st.KeepaliveRTT = l.rtt
	t.mu.Unlock()
	t.changed(true)
	t.log.Info("standby connection took over; the silent one drains", "addr", l.conn.RemoteAddr().String())
}

func isState(want State) func(State) bool { return func(s State) bool { return s == want } }

// probeForward checks LocalForward i end to end every ProbeInterval
// until ctx ends: down with the error when its destination cannot be
// reached through the server, listening again when it can. A forward
// whose listener is not bound (bind-failed) is left alone.
func (t *Tunnel) probeForward(ctx context.Context, i int, client *ssh.Client) {
	dest := t.spec.Forwards[i].DestAddr()
	tick := t.clk.NewTicker(t.opt.ProbeInterval)
	defer tick.Stop()
	for {
		c, err := client.Dial("tcp", dest)
		if ctx.Err() != nil {
			if err == nil {
				c.Close()
			}
			return
		}
		if err != nil {
			t.setForwardIf(i, isState(StateListening), StateDown, fmt.Errorf("probe %s: %w", dest, err))
		} else {
			c.Close()
			t.setForwardIf(i, isState(StateDown), StateListening, nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C():
		}
	}
}

// keepalive sends keepalive@openssh.com on l every ServerAliveInterval
// and waits at most an interval for each reply; l is marked late while a
// reply is StandbyAfter overdue, and again on time once one comes. After
// ServerAliveCountMax missed replies in a row the connection must go
// (SendRequest alone would block forever on a dead link): it returns
// ErrKeepalive and the caller closes the underlying net.Conn.
func (t *Tunnel) keepalive(ctx context.Context, l *link) error {
	iv := t.spec.ServerAliveInterval
	tick := t.clk.NewTicker(iv)
	defer tick.Stop()
	misses := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C():
		}
		sent := t.clk.Now()
		reply := sendKeepalive(l.client)
		tm := t.clk.NewTimer(iv)
		lateC, stopLate := t.lateTimer(iv)
		var (
			err    error
			missed bool
		)
	wait:
		select {
		case err = <-reply:
		case <-lateC:
			l.setLate(true)
			lateC = nil
			goto wait
		case <-tm.C():
			missed = true
		case <-ctx.Done():
			tm.Stop()
			stopLate()
			return nil
		}
		tm.Stop()
		stopLate()
		switch {
		case missed:
			misses++
			l.setLate(true)
			t.log.Warn("keepalive unanswered", "missed", misses, "max", t.spec.ServerAliveCountMax)
			if misses >= t.spec.ServerAliveCountMax {
				return fmt.Errorf("%w: %d × %s", ErrKeepalive, misses, iv)
			}
		case err != nil:
			return nil // the connection is gone; client.Wait says why
		default:
			misses = 0
			t.answered(l, sent)
		}
	}
}

// answered records the reply to a keepalive sent on l at sent: l is on
// time, and the round trip is the tunnel's if l is the current
// connection. It returns the round trip.
func (t *Tunnel) answered(l *link, sent time.Time) time.Duration {
	l.setLate(false)
	rtt := t.clk.Now().Sub(sent)
	t.mu.Lock()
	cur := t.cur == l
	if cur {
		t.st.KeepaliveRTT = rtt
	}
	t.mu.Unlock()
	if cur {
		t.changed(false)
	}
	return rtt
}

// lateTimer returns a channel that fires when a keepalive reply is
// StandbyAfter late (nil when that is off or not sooner than iv, the
// reply's deadline), and a func that stops it.
func (t *Tunnel) lateTimer(iv time.Duration) (<-chan time.Time, func()) {
	sa := t.opt.StandbyAfter
	if sa <= 0 || sa >= iv {
		return nil, func() {}
	}
	lt := t.clk.NewTimer(sa)
	return lt.C(), func() { lt.Stop() }
}

// probe sends one keepalive on l, on Retry, and waits at most
// probeTimeout (or ServerAliveInterval if shorter) for the reply. With
// standbys on, a probe left unanswered marks l late, which dials a
// standby at once, and its reply, even a later one, marks l on time
// again; with them off it is ErrProbe, and l goes.
func (t *Tunnel) probe(ctx context.Context, l *link) error {
	d := probeTimeout
	if iv := t.spec.ServerAliveInterval; iv > 0 && iv < d {
		d = iv
	}
	sent := t.clk.Now()
	reply := sendKeepalive(l.client)
	answer := func(err error) {
		if err == nil { // else the connection is gone; client.Wait says why
			t.log.Debug("retry probe answered", keyRTT, t.answered(l, sent))
		}
	}
	tm := t.clk.NewTimer(d)
	defer tm.Stop()
	select {
	case err := <-reply:
		answer(err)
	case <-tm.C():
		if t.opt.StandbyAfter <= 0 {
			return fmt.Errorf("%w within %s", ErrProbe, d)
		}
		t.log.Info("retry probe unanswered", "within", d)
		l.setLate(true)
		l.nudge()   // a standby waiting to try again tries now
		go func() { // until the reply, or the link's end
			select {
			case err := <-reply:
				answer(err)
			case <-l.ctx.Done():
			}
		}()
	case <-ctx.Done():
	}
	return nil
}

// waitClient returns the current connection, waiting at most
// WaitWhileDown for one.
func (t *Tunnel) waitClient(ctx context.Context) (*link, error) {
	var tm clock.Timer
	for {
		t.mu.Lock()
		l, ready := t.cur, t.ready
		t.mu.Unlock()
		if l != nil {
			if tm != nil {
				tm.Stop()
			}
			return l, nil
		}
		if tm == nil {
			tm = t.clk.NewTimer(t.opt.WaitWhileDown)
		}
		select {
		case <-ready:
		case <-tm.C():
			return nil, ErrLinkDown
		case <-ctx.Done():
			tm.Stop()
			return nil, ctx.Err()
		}
	}
}

// readAheadSize is how much one read from the server's connection may
// take. x/crypto/ssh reads through a 4 KiB bufio.Reader, which takes each
// 32 KiB packet in two reads and a copy; below it, this buffer takes
// what the socket holds (many packets) in one system call.
const readAheadSize = 256 << 10

// readAhead returns conn reading through a readAheadSize buffer.
func readAhead(conn net.Conn) net.Conn {
	return &bufferedConn{Conn: conn, r: bufio.NewReaderSize(conn, readAheadSize)}
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
