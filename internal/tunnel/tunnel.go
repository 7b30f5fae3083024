package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/connwatch/connwatch/internal/clock"
)

// State is the state of a tunnel or of one of its forwards.
type State string

// States. A tunnel is connecting, up or in backoff. A local or dynamic
// forward is listening (its listener stays open across reconnects) or
// bind-failed; a remote forward is up, remote-bind-failed (the server
// refused the bind; retried every few seconds while the link is up) or
// down (waiting for the link).
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
)

// Options tune a Tunnel; zero values pick the defaults.
type Options struct {
	Clock  clock.Clock  // default clock.Real
	Logger *slog.Logger // default slog.Default
	// AgentSocket is the ssh-agent socket; "" reads SSH_AUTH_SOCK.
	AgentSocket string
	// BackoffMin and BackoffMax bound the reconnect backoff (250 ms, 10 s).
	BackoffMin, BackoffMax time.Duration
	// HealthyAfter is how long a connection must stay up for the backoff
	// to start over from BackoffMin (30 s).
	HealthyAfter time.Duration
	// RemoteBindRetry is the longest wait between attempts to bind a
	// refused RemoteForward (5 s; the first retry is after 0.5 s).
	RemoteBindRetry time.Duration
	// WaitWhileDown is how long a connection accepted on a local or
	// dynamic forward while the link is down waits for it before being
	// closed (15 s).
	WaitWhileDown time.Duration
	// Dial connects to the server; default a net.Dialer with the Spec's
	// ConnectTimeout.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// OnChange, if set, is called after the Status changed: urgent for a
	// tunnel or forward state change, not urgent for a new keepalive RTT,
	// connection count or per-connection error. It is called without locks held and must not block.
	OnChange func(urgent bool)
}

// Status is a snapshot of a tunnel.
type Status struct {
	Host         string          `json:"host"`
	State        State           `json:"state"`
	Since        time.Time       `json:"since"`
	LastError    string          `json:"last_error,omitempty"` // the error that ended the last connection or attempt
	KeepaliveRTT time.Duration   `json:"keepalive_rtt_ns"`
	Reconnects   int             `json:"reconnects"` // times the link came back up after it was lost
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

	mu       sync.Mutex
	st       Status
	everUp   bool
	client   *ssh.Client
	clientCx context.Context // ends with the client's connection
	ready    chan struct{}   // closed when client is set
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
	def(&opt.WaitWhileDown, 15*time.Second)
	if opt.Dial == nil {
		d := &net.Dialer{Timeout: spec.ConnectTimeout}
		opt.Dial = d.DialContext
	}
	t := &Tunnel{
		spec:  spec,
		opt:   opt,
		clk:   opt.Clock,
		log:   opt.Logger.With(keyHost, spec.Host),
		keys:  newHostKeys(spec),
		retry: make(chan struct{}, 1),
		ready: make(chan struct{}),
	}
	t.st = Status{Host: spec.Host, State: StateConnecting, Since: t.clk.Now()}
	for _, f := range spec.Forwards {
		st := StateDown
		t.st.Forwards = append(t.st.Forwards, ForwardStatus{Forward: f, State: st, Since: t.st.Since})
	}
	return t
}

// Retry cuts a backoff wait short: the next connection attempt starts now
// (connwatch tunnel wires SIGUSR1 to it).
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

func (t *Tunnel) setForward(i int, s State, err error) {
	t.mu.Lock()
	fs := &t.st.Forwards[i]
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
// with backoff for as long as it runs. It returns nil when ctx is
// cancelled; an error only when a local forward cannot bind and
// ExitOnForwardFailure is set.
func (t *Tunnel) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
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
			continue
		}
		t.setForward(i, StateListening, nil)
		context.AfterFunc(ctx, func() { ln.Close() })
		wg.Go(func() { t.serveLocal(ctx, &wg, i, ln) })
	}
	bo := Backoff{Min: t.opt.BackoffMin, Max: t.opt.BackoffMax}
	for {
		t.setState(StateConnecting, nil)
		client, conn, err := t.connect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			upAt := t.clk.Now()
			select { // a Retry while up is stale
			case <-t.retry:
			default:
			}
			t.setState(StateUp, nil, "addr", t.spec.Addr())
			err = t.session(ctx, &wg, client, conn)
			if ctx.Err() != nil {
				return nil
			}
			if t.clk.Now().Sub(upAt) >= t.opt.HealthyAfter {
				bo.Reset()
			}
		}
		d := bo.Next()
		t.setState(StateBackoff, err, keyRetryIn, d)
		if !t.wait(ctx, d) {
			return nil
		}
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

// connect dials and shakes hands within ConnectTimeout.
func (t *Tunnel) connect(ctx context.Context) (*ssh.Client, net.Conn, error) {
	addr := t.spec.Addr()
	conn, err := t.opt.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if t.spec.ConnectTimeout > 0 {
		// A real deadline: the handshake is bounded by the kernel's clock.
		_ = conn.SetDeadline(time.Now().Add(t.spec.ConnectTimeout))
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	signers, closeAgent, err := t.spec.signers(t.opt.AgentSocket)
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	defer closeAgent()
	user := t.spec.User
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signers...)},
		HostKeyCallback:   t.keys.check,
		HostKeyAlgorithms: t.keys.algorithms(addr, conn.RemoteAddr(), t.spec.HostKeyAlgorithms),
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("ssh handshake with %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), conn, nil
}

// session serves one connection until it dies or ctx ends.
func (t *Tunnel) session(ctx context.Context, wg *sync.WaitGroup, client *ssh.Client, conn net.Conn) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	context.AfterFunc(sctx, func() { client.Close() })
	t.mu.Lock()
	t.client, t.clientCx = client, sctx
	close(t.ready)
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.client, t.clientCx = nil, nil
		t.ready = make(chan struct{})
		t.mu.Unlock()
	}()

	var swg sync.WaitGroup
	swg.Go(func() {
		if err := t.keepalive(sctx, client); err != nil {
			cancel(err) // the cause first: closing makes client.Wait return
			conn.Close()
		}
	})
	for i, f := range t.spec.Forwards {
		if f.Kind == Remote {
			swg.Go(func() {
				if err := t.serveRemote(sctx, wg, i, client); err != nil {
					cancel(err)
				}
			})
		}
	}
	err := client.Wait()
	cancel(nil)
	swg.Wait()
	for i, f := range t.spec.Forwards {
		if f.Kind == Remote {
			t.setForward(i, StateDown, nil)
		}
	}
	if cause := context.Cause(sctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if err == nil {
		err = errors.New("closed")
	}
	return fmt.Errorf("connection lost: %w", err)
}

// keepalive sends keepalive@openssh.com every ServerAliveInterval and
// waits at most an interval for each reply. After ServerAliveCountMax
// missed replies in a row the connection must go (SendRequest alone
// would block forever on a dead link): it returns ErrKeepalive and the
// caller closes the underlying net.Conn.
func (t *Tunnel) keepalive(ctx context.Context, client *ssh.Client) error {
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
		reply := make(chan error, 1)
		go func() {
			_, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
			reply <- err
		}()
		tm := t.clk.NewTimer(iv)
		select {
		case err := <-reply:
			tm.Stop()
			if err != nil {
				return nil // the connection is gone; client.Wait says why
			}
			misses = 0
			rtt := t.clk.Now().Sub(sent)
			t.mu.Lock()
			t.st.KeepaliveRTT = rtt
			t.mu.Unlock()
			t.changed(false)
		case <-tm.C():
			misses++
			t.log.Warn("keepalive unanswered", "missed", misses, "max", t.spec.ServerAliveCountMax)
			if misses >= t.spec.ServerAliveCountMax {
				return fmt.Errorf("%w: %d × %s", ErrKeepalive, misses, iv)
			}
		case <-ctx.Done():
			tm.Stop()
			return nil
		}
	}
}

// waitClient returns the current connection, waiting at most
// WaitWhileDown for one.
func (t *Tunnel) waitClient(ctx context.Context) (*ssh.Client, context.Context, error) {
	var tm clock.Timer
	for {
		t.mu.Lock()
		c, cctx, ready := t.client, t.clientCx, t.ready
		t.mu.Unlock()
		if c != nil {
			if tm != nil {
				tm.Stop()
			}
			return c, cctx, nil
		}
		if tm == nil {
			tm = t.clk.NewTimer(t.opt.WaitWhileDown)
		}
		select {
		case <-ready:
		case <-tm.C():
			return nil, nil, ErrLinkDown
		case <-ctx.Done():
			tm.Stop()
			return nil, nil, ctx.Err()
		}
	}
}
