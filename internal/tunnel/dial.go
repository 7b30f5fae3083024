package tunnel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// Connecting again after an outage.
//
// A connect() to a server behind a dead link does not fail: its SYN goes
// unanswered and the kernel retransmits it after 1, 2, 4, 8, 16 s…, so a
// single attempt made during the outage sees the link come back only at
// its next retransmission, up to a minute later, and an exponential
// backoff between attempts adds its own wait on top. Instead, attempts
// are staggered: a new one starts every DialInterval (jittered up to
// twice that) while earlier ones still wait, each given at most
// dialAttemptTimeout, at most maxDialsInFlight at once, taking turns
// over the server's addresses; the first to connect wins and the others
// are cancelled (or closed, if they connect as well); with as many in
// flight as allowed, the oldest gives way to the new one, so a fresh SYN
// still goes out every interval. A SYN is cheap, so
// while the network is down attempts keep coming at sub-second intervals
// for as long as it takes, and the link's return is seen within one
// interval. Failures that retrying soon will not fix (the handshake:
// authentication, host keys; settings) wait on the slow Backoff instead,
// so a bad key does not hammer the server.
const (
	// DefaultDialInterval is the default Options.DialInterval.
	DefaultDialInterval = 250 * time.Millisecond
	// dialAttemptTimeout bounds one TCP connection attempt (or
	// ConnectTimeout, if shorter).
	dialAttemptTimeout = 3 * time.Second
	// maxDialsInFlight bounds the attempts waiting at once.
	maxDialsInFlight = 8
	// defaultDialBudget is how long one round of staggered attempts goes
	// on before it is reported as failed (ConnectTimeout when set); the
	// next round follows after one interval.
	defaultDialBudget = 10 * time.Second
	// defaultHandshakeTimeout bounds the SSH handshake when
	// ConnectTimeout is not set: a link that dies mid-handshake must not
	// hold the tunnel until TCP gives up.
	defaultHandshakeTimeout = 20 * time.Second
	// lookupTimeout bounds one DNS lookup of the server's name.
	lookupTimeout = 5 * time.Second
)

// errRoundOver ends a round of attempts that ran out of time; it is
// a network failure, and the next round starts at once (one interval
// after the last attempt, as within a round).
var errRoundOver = errors.New("no attempt connected")

// slowError marks a failure that retrying soon will not fix: it waits
// on the slow Backoff. Every other failure is the network's and is
// retried within a DialInterval or two.
type slowError struct{ err error }

func (e slowError) Error() string { return e.err.Error() }
func (e slowError) Unwrap() error { return e.err }

// slow marks err as a failure for the slow backoff (nil stays nil).
func slow(err error) error {
	if err == nil {
		return nil
	}
	return slowError{err}
}

// isSlow reports whether err waits on the slow backoff.
func isSlow(err error) bool {
	var s slowError
	return errors.As(err, &s)
}

// dialer makes staggered connection attempts on a clock.
type dialer struct {
	clk      clock.Clock
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	interval time.Duration // between attempts, jittered up to twice this
	attempt  time.Duration // one attempt's limit
	budget   time.Duration // one round's limit
	rand     func() float64
}

// gap returns the jittered wait before the next attempt: [interval,
// 2·interval).
func (d *dialer) gap() time.Duration {
	r := d.rand
	if r == nil {
		r = rand.Float64
	}
	return d.interval + time.Duration(r()*float64(d.interval))
}

// race connects to one of addrs (host:port, tried in turn) with
// staggered attempts, until one connects, the budget runs out or ctx
// ends. A round that runs out ends at the first attempt's turn after the
// budget (errRoundOver and the error of the last attempt that failed).
// Every attempt has ended when it returns.
func (d *dialer) race(ctx context.Context, addrs []string) (net.Conn, error) {
	if len(addrs) == 0 {
		return nil, errors.New("no address to connect to")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	type result struct {
		id  int
		c   net.Conn
		err error
	}
	results := make(chan result)
	type attempt struct {
		id     int
		cancel context.CancelFunc
	}
	var inFlight []attempt // oldest first
	started := 0
	launch := func(addr string) {
		actx, acancel := context.WithCancel(ctx)
		id := started
		started++
		inFlight = append(inFlight, attempt{id, acancel})
		tm := d.clk.NewTimer(d.attempt)
		done := make(chan struct{})
		wg.Go(func() { // the attempt's limit, on the clock
			select {
			case <-tm.C():
				acancel()
			case <-done:
			}
		})
		wg.Go(func() {
			c, err := d.dial(actx, "tcp", addr)
			close(done)
			tm.Stop()
			if err != nil && actx.Err() != nil && ctx.Err() == nil {
				err = fmt.Errorf("connect to %s: no answer in time", addr)
			} else if err != nil {
				err = fmt.Errorf("connect to %s: %w", addr, err)
			}
			acancel()
			select {
			case results <- result{id, c, err}:
			case <-ctx.Done():
				if c != nil {
					c.Close()
				}
			}
		})
	}
	launch(addrs[0])
	next := d.clk.NewTimer(d.gap())
	defer next.Stop()
	limit := d.clk.NewTimer(d.budget)
	defer limit.Stop()
	var last error
	over := false
	for {
		select {
		case r := <-results:
			inFlight = slices.DeleteFunc(inFlight, func(a attempt) bool { return a.id == r.id })
			if r.err == nil {
				return r.c, nil
			}
			last = r.err
		case <-next.C():
			if over {
				if last == nil {
					last = fmt.Errorf("connect to %s: no answer in time", addrs[0])
				}
				return nil, fmt.Errorf("%w in %s (%d attempts): %w", errRoundOver, d.budget, started, last)
			}
			if len(inFlight) >= maxDialsInFlight {
				inFlight[0].cancel() // the oldest gives way; its result still comes
				inFlight = inFlight[1:]
			}
			launch(addrs[started%len(addrs)])
			next.Reset(d.gap())
		case <-limit.C():
			over = true
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// lookup resolves the server's name for the dialer, remembering the last
// answer: when a name was resolved before, the remembered addresses are
// dialled at once while a fresh lookup runs in the background (one at a
// time), so a DNS server behind the same dead link costs no time once
// the link is back; the fresh answer serves the next round.
type lookup struct {
	resolve func(ctx context.Context, host string) ([]net.IP, error)

	mu       sync.Mutex
	last     map[string][]net.IP
	inFlight map[string]bool
	wg       sync.WaitGroup
}

// addrs returns host:port for each address of host; life bounds a
// background lookup.
func (l *lookup) addrs(ctx, life context.Context, host string, port int) ([]string, error) {
	p := strconv.Itoa(port)
	if net.ParseIP(host) != nil {
		return []string{net.JoinHostPort(host, p)}, nil
	}
	l.mu.Lock()
	known := l.last[host]
	refresh := known != nil && !l.inFlight[host]
	if refresh {
		l.inFlight[host] = true
	}
	l.mu.Unlock()
	if refresh {
		l.wg.Go(func() {
			_, _ = l.fresh(life, host)
			l.mu.Lock()
			delete(l.inFlight, host)
			l.mu.Unlock()
		})
	}
	ips := known
	if ips == nil {
		var err error
		if ips, err = l.fresh(ctx, host); err != nil {
			return nil, err
		}
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = net.JoinHostPort(ip.String(), p)
	}
	return out, nil
}

// fresh looks host up (within lookupTimeout) and remembers the answer.
func (l *lookup) fresh(ctx context.Context, host string) ([]net.IP, error) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ips, err := l.resolve(ctx, host)
	if err == nil && len(ips) == 0 {
		err = errors.New("no address")
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", host, err)
	}
	l.mu.Lock()
	l.last[host] = ips
	l.mu.Unlock()
	return ips, nil
}
