package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/connwatch/connwatch/internal/backoff"
)

// Make before break.
//
// A connection whose keepalive reply is StandbyAfter late is not given
// up yet: a NAT or firewall that lost its state, a server that froze for
// a moment, or a path that changed under a flow all look like that, and
// some of them come back. Instead a standby connection is dialled beside
// it (the same staggered attempts and handshake as any connection) and
// must answer a keepalive of its own. Whichever answers first wins:
//   - the old one: the standby is abandoned (closed if it got that far);
//   - the standby: it becomes the tunnel's connection at once. New
//     forwarded connections go through it, the remote forwards are bound
//     on it, and the old one drains: the connections it carries stay on
//     it, and it is closed when its keepalives run out
//     (ServerAliveCountMax, as before), or once it answers again and
//     carries nothing, or when a later handover needs the slot (one
//     connection drains at a time).
//
// The tunnel stays up through a handover (Status.Handovers counts them).
// A total outage is unchanged: the standby cannot connect either, and the
// old connection goes when its keepalives run out.

// DefaultStandbyAfter is the default Options.StandbyAfter.
const DefaultStandbyAfter = 2 * time.Second

// errDrained closes a handed-over connection that has nothing left to
// carry, or whose drain slot a later handover took.
var errDrained = errors.New("handed over")

// link is one SSH connection and what rides on it.
type link struct {
	client *ssh.Client
	conn   net.Conn
	ctx    context.Context // ends when the connection is closed; set by session
	active atomic.Int64    // forwarded connections it carries now
	gone   chan struct{}   // closed when it stops being the current one
	rtt    time.Duration   // a standby's: its first keepalive's round trip

	mu     sync.Mutex
	late   bool          // a keepalive reply is StandbyAfter overdue
	change chan struct{} // closed (and replaced) when late changes
}

func newLink(client *ssh.Client, conn net.Conn) *link {
	return &link{client: client, conn: conn, change: make(chan struct{}), gone: make(chan struct{})}
}

// setLate records whether a keepalive reply is overdue.
func (l *link) setLate(v bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.late != v {
		l.late = v
		l.wakeLocked()
	}
}

// nudge wakes whoever waits on lateness without changing it: Retry on
// a link that is already late (a standby waiting to try again tries
// now).
func (l *link) nudge() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wakeLocked()
}

// wakeLocked closes the channel lateness handed out, for a fresh one;
// l.mu is held.
func (l *link) wakeLocked() {
	close(l.change)
	l.change = make(chan struct{})
}

// lateness returns whether a reply is overdue, and a channel closed at
// the next change (or nudge).
func (l *link) lateness() (bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.late, l.change
}

// carry counts one forwarded connection on l until the returned func.
func (l *link) carry() func() {
	l.active.Add(1)
	return func() { l.active.Add(-1) }
}

// sendKeepalive sends keepalive@openssh.com on client; the reply's error
// (nil for any reply, OpenSSH's failure included) arrives on the channel,
// or nothing until the connection closes.
func sendKeepalive(client *ssh.Client) <-chan error {
	reply := make(chan error, 1)
	go func() {
		_, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
		reply <- err
	}()
	return reply
}

// standby dials a standby connection each time old's keepalive reply is
// overdue, until one answers before old does; it sends that one on out
// (buffered) and returns. It returns when ctx ends. Between failed
// standbys it waits a DialInterval or two, or, after a failure retrying
// soon will not fix (the handshake: authentication, host key), the
// tunnel's backoff; a Retry (nudge) cuts either wait short.
func (t *Tunnel) standby(ctx context.Context, old *link, out chan<- *link) {
	bo := backoff.Backoff{Policy: backoff.Policy{Min: t.opt.BackoffMin, Max: t.opt.BackoffMax}}
	for {
		if late, _ := old.lateness(); !late {
			bo.Reset()
			if !waitLateness(ctx, old, true) {
				return
			}
		}
		t.log.Info("keepalive reply overdue; dialling a standby connection", "after", min(t.opt.StandbyAfter, t.spec.ServerAliveInterval))
		nl, err := t.standbyAttempt(ctx, old)
		switch {
		case nl != nil: // sent even if ctx ended meanwhile: session closes or takes it
			out <- nl
			return
		case ctx.Err() != nil:
			return
		case err != nil:
			d := t.dial.gap()
			if isSlow(err) {
				d = bo.Next()
			}
			t.log.Info("standby connection failed", keyErr, err, keyRetryIn, d)
			if !t.waitChange(ctx, old, d) {
				return
			}
		default:
			t.log.Info("keepalive answered; standby connection abandoned")
		}
	}
}

// waitLateness waits until l's lateness is want; false when ctx ended
// first.
func waitLateness(ctx context.Context, l *link, want bool) bool {
	for {
		late, change := l.lateness()
		if late == want {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-change:
		}
	}
}

// waitChange waits d, or until l's lateness changes or l is nudged;
// false when ctx ended.
func (t *Tunnel) waitChange(ctx context.Context, l *link, d time.Duration) bool {
	_, change := l.lateness()
	tm := t.clk.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C():
	case <-change:
	case <-ctx.Done():
		return false
	}
	return true
}

// standbyAttempt connects and waits for a keepalive reply on the new
// connection, giving up (nil, nil) as soon as old answers.
func (t *Tunnel) standbyAttempt(ctx context.Context, old *link) (*link, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	var answered atomic.Bool
	go func() { // old's reply cancels the attempt
		if waitLateness(actx, old, false) {
			answered.Store(true)
			cancel()
		}
	}()
	client, conn, err := t.connect(actx)
	if err != nil {
		if answered.Load() {
			return nil, nil
		}
		return nil, err
	}
	sent := t.clk.Now()
	tm := t.clk.NewTimer(t.spec.ServerAliveInterval)
	defer tm.Stop()
	select {
	case err = <-sendKeepalive(client):
		if err == nil && actx.Err() == nil {
			nl := newLink(client, conn)
			nl.rtt = t.clk.Now().Sub(sent)
			t.log.Debug("standby connection answered", keyRTT, nl.rtt)
			return nl, nil
		}
	case <-tm.C():
		err = errors.New("standby connection did not answer a keepalive")
	case <-actx.Done():
	}
	client.Close()
	conn.Close()
	if answered.Load() {
		return nil, nil
	}
	return nil, err
}

// takeDrainSlot makes l's the one connection that drains, closing the
// one that drained before; l's drain ends when stop is closed. Called
// by the session at the handover, so the slots go in handover order.
func (t *Tunnel) takeDrainSlot() (stop <-chan struct{}) {
	mine := make(chan struct{})
	t.mu.Lock()
	prev := t.drainStop
	t.drainStop = sync.OnceFunc(func() { close(mine) })
	t.mu.Unlock()
	if prev != nil {
		prev()
	}
	return mine
}

// drain keeps l, handed over to a newer connection, while what it
// carries may still need it (see the top of this file); then it closes
// l and waits for its session's goroutines (wait). closed is closed
// when l's connection is; mine when a later handover takes the slot.
func (t *Tunnel) drain(l *link, closed, mine <-chan struct{}, closeLink context.CancelCauseFunc, wait func()) {
	defer wait()
	tick := t.clk.NewTicker(max(t.spec.ServerAliveInterval, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-l.ctx.Done(): // keepalives ran out, or Run ended
			return
		case <-closed:
			t.log.Info("drained connection ended", "carrying", l.active.Load())
			return
		case <-mine:
			closeLink(errDrained)
			t.log.Info("drained connection closed: a newer handover took its place", "carrying", l.active.Load())
			return
		case <-tick.C():
			if late, _ := l.lateness(); !late && l.active.Load() == 0 {
				closeLink(errDrained)
				t.log.Info("drained connection closed: it answers again and carries nothing")
				return
			}
		}
	}
}

// waitGone waits until l stops being the current connection, at most
// WaitWhileDown; false if it did not, or ctx ended.
func (t *Tunnel) waitGone(ctx context.Context, l *link) bool {
	tm := t.clk.NewTimer(t.opt.WaitWhileDown)
	defer tm.Stop()
	select {
	case <-l.gone:
		return true
	case <-tm.C():
	case <-ctx.Done():
	}
	return false
}

// maxOpenTries bounds the connections one forwarded connection's channel
// is asked of (see open).
const maxOpenTries = 3

// open opens a channel to dest for the forwarded connection c, on the
// current connection. If c had to wait for the link (or for the next
// connection, below) and its client closed it meanwhile (an application
// that gave up and retried while the link was down), it is dropped
// (errGaveUp) without a channel, so the link's return does not open a
// burst of channels, and connections to the destination, for clients
// long gone, and no stale request replayed to the destination (see
// peerClosed: one that half-closed while it waited is dropped too). A
// channel asked of a connection that then stops
// being the current one (it was handed over, or it was lost) is asked
// of the next one as well, and the first to be confirmed is used: a
// forwarded connection accepted while the link was silent goes through
// whichever connection answers. The link returned carries the channel.
func (t *Tunnel) open(ctx context.Context, dest string, c net.Conn) (*link, net.Conn, error) {
	type opened struct {
		l   *link
		c   net.Conn
		err error
	}
	results := make(chan opened, maxOpenTries)
	pending, tries := 0, 0
	try := func(l *link) {
		pending++
		tries++
		go func() {
			c, err := l.client.Dial("tcp", dest)
			results <- opened{l, c, err}
		}()
	}
	// Losers that confirm later are closed.
	defer func() {
		if pending > 0 {
			go func(n int) {
				for range n {
					if r := <-results; r.err == nil {
						r.c.Close()
					}
				}
			}(pending)
		}
	}()
	t.mu.Lock()
	waited := t.cur == nil
	t.mu.Unlock()
	l, err := t.waitClient(ctx)
	if err != nil {
		return nil, nil, err
	}
	if waited && peerClosed(c) {
		return nil, nil, errGaveUp
	}
	try(l)
	var lastErr, refusal error
	waitMore := false // no next connection came: wait for the results
	for {
		gone := l.gone
		if tries >= maxOpenTries || waitMore {
			gone = nil
		}
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				return r.l, r.c, nil
			}
			lastErr = r.err
			var refused *ssh.OpenChannelError
			if errors.As(r.err, &refused) {
				refusal = r.err
			}
			if pending > 0 {
				continue
			}
			switch {
			case refusal != nil: // a live connection's answer
				return nil, nil, refusal
			case waitMore: // no next connection came within WaitWhileDown
				return nil, nil, fmt.Errorf("%w: %w", ErrLinkDown, lastErr)
			case tries >= maxOpenTries:
				return nil, nil, lastErr
			}
			// Its connection failed meanwhile: ask the next one, once
			// that one is gone (at most WaitWhileDown: an error on a
			// connection that stays is its answer).
			if !t.waitGone(ctx, r.l) {
				return nil, nil, lastErr
			}
			nl, err := t.waitClient(ctx)
			if err != nil {
				return nil, nil, err
			}
			if peerClosed(c) {
				return nil, nil, errGaveUp
			}
			l = nl
			try(l)
		case <-gone:
			nl, err := t.waitClient(ctx)
			if err != nil {
				if pending > 0 { // an earlier one may yet confirm
					waitMore = true
					continue
				}
				return nil, nil, err
			}
			if peerClosed(c) {
				return nil, nil, errGaveUp
			}
			l = nl
			try(l)
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
}
