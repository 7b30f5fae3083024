package tunnel

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/backoff"
)

// acceptPause is the pause after an Accept error that is not a closed
// listener (e.g. EMFILE), so the loop does not spin.
const acceptPause = 100 * time.Millisecond

// socksTimeout bounds the SOCKS5 greeting and request of a client.
const socksTimeout = 10 * time.Second

// serveLocal accepts on a LocalForward or DynamicForward listener until
// it is closed. Connections accepted while the link is down wait for it
// (Options.WaitWhileDown) and are then closed.
func (t *Tunnel) serveLocal(ctx context.Context, wg *sync.WaitGroup, i int, ln net.Listener) {
	f := t.spec.Forwards[i]
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			t.setForward(i, StateListening, err)
			if !t.sleep(ctx, acceptPause) {
				return
			}
			continue
		}
		wg.Go(func() {
			var err error
			if f.Kind == Dynamic {
				err = t.handleSOCKS(ctx, i, c)
			} else {
				err = t.handleLocal(ctx, i, c, f.DestAddr())
			}
			t.forwardEvent(i, err)
		})
	}
}

func (t *Tunnel) handleLocal(ctx context.Context, i int, c net.Conn, dest string) error {
	l, r, err := t.open(ctx, dest, c)
	if err != nil {
		c.Close()
		if noAnswer(err) {
			return fmt.Errorf("forward to %s: %w", dest, err)
		}
		return fmt.Errorf("open channel to %s: %w", dest, err)
	}
	defer l.carry()()
	t.pipe(l.ctx, c, r)
	return nil
}

// RemoteRebindGrace is how long, on a connection made after the link
// was lost, a refused RemoteForward is retried under
// ExitOnForwardFailure before the connection is dropped: the server's
// session from before the outage may hold the port until its own
// keepalives (ClientAliveInterval) end it, and the other forwards need
// not wait for that.
const RemoteRebindGrace = time.Minute

// serveRemote binds a RemoteForward on the server over l and carries
// what arrives to its destination, until ctx ends (the connection ends
// or hands over; what it carries lasts as long as l). A refused bind is
// retried with a short backoff (or, with ExitOnForwardFailure, ends the
// connection so that it is retried with the tunnel's backoff; after
// RemoteRebindGrace on a reconnection or handover).
func (t *Tunnel) serveRemote(ctx context.Context, wg *sync.WaitGroup, i int, l *link) error {
	f := t.spec.Forwards[i]
	bind := f.BindAddr()
	if f.BindHost == "*" {
		bind = net.JoinHostPort("0.0.0.0", strconv.Itoa(f.BindPort))
	}
	bo := backoff.Backoff{Policy: backoff.Policy{Min: 500 * time.Millisecond, Max: t.opt.RemoteBindRetry}}
	// After a lost link the server often still holds the port for the
	// session it has not yet noticed is dead; ExitOnForwardFailure then
	// gives it that long before the connection goes.
	// By the elapsed time, which wall-clock steps do not move.
	var graceEnd time.Duration
	if st := t.Status(); st.Reconnects > 0 || st.Handovers > 0 {
		graceEnd = t.clk.Elapsed() + t.opt.rebindGrace
	}
	for ctx.Err() == nil {
		ln, err := l.client.Listen("tcp", bind)
		if ctx.Err() != nil { // handed over or lost meanwhile: not this one's to report
			if err == nil {
				go ln.Close() // asks the server; returns when it answers or the link closes
			}
			return nil
		}
		if err != nil {
			err = fmt.Errorf("remote listen on %s: %w", bind, err)
			t.setForward(i, StateRemoteBindFailed, err)
			if t.spec.ExitOnForwardFailure && t.clk.Elapsed() >= graceEnd {
				return slow(err)
			}
			if !t.sleep(ctx, bo.Next()) {
				return nil
			}
			continue
		}
		bo.Reset()
		t.setForward(i, StateUp, nil)
		stop := context.AfterFunc(ctx, func() { ln.Close() })
		for {
			c, err := ln.Accept()
			if err != nil {
				break
			}
			done := l.carry()
			wg.Go(func() {
				defer done()
				var d net.Dialer
				dc, err := d.DialContext(l.ctx, "tcp", f.DestAddr())
				if err != nil {
					c.Close()
					t.forwardEvent(i, fmt.Errorf("connect to %s: %w", f.DestAddr(), err))
					return
				}
				t.pipe(l.ctx, c, dc)
				t.forwardEvent(i, nil)
			})
		}
		stop()
		ln.Close()
	}
	return nil
}

// handleSOCKS serves one SOCKS5 client: no authentication, CONNECT only.
func (t *Tunnel) handleSOCKS(ctx context.Context, i int, c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(socksTimeout))
	dest, err := socksRequest(c)
	if err != nil {
		c.Close()
		return fmt.Errorf("socks: %w", err)
	}
	l, r, err := t.open(ctx, dest, c)
	if err != nil {
		code := byte(5) // connection refused
		if noAnswer(err) {
			code = 1 // general failure
		}
		socksReply(c, code)
		c.Close()
		return fmt.Errorf("socks connect to %s: %w", dest, err)
	}
	defer l.carry()()
	if err := socksReply(c, 0); err != nil {
		c.Close()
		r.Close()
		return fmt.Errorf("socks reply: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	t.pipe(l.ctx, c, r)
	return nil
}

// socksRequest reads a SOCKS5 greeting and CONNECT request and returns
// the destination host:port.
func socksRequest(c io.ReadWriter) (string, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return "", fmt.Errorf("read greeting: %w", err)
	}
	if hdr[0] != 5 {
		return "", fmt.Errorf("version %d is not SOCKS5", hdr[0])
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return "", fmt.Errorf("read methods: %w", err)
	}
	ok := false
	for _, m := range methods {
		ok = ok || m == 0
	}
	if !ok {
		_, _ = c.Write([]byte{5, 0xff})
		return "", errors.New("client offers no unauthenticated method")
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return "", fmt.Errorf("write method: %w", err)
	}
	var req [4]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return "", fmt.Errorf("read request: %w", err)
	}
	if req[0] != 5 || req[1] != 1 {
		socksReply(c, 7) // command not supported
		return "", fmt.Errorf("command %d not supported", req[1])
	}
	var host string
	switch req[3] {
	case 1, 4:
		ip := make(net.IP, map[byte]int{1: 4, 4: 16}[req[3]])
		if _, err := io.ReadFull(c, ip); err != nil {
			return "", fmt.Errorf("read address: %w", err)
		}
		host = ip.String()
	case 3:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return "", fmt.Errorf("read name: %w", err)
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return "", fmt.Errorf("read name: %w", err)
		}
		host = string(name)
	default:
		socksReply(c, 8) // address type not supported
		return "", fmt.Errorf("address type %d not supported", req[3])
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return "", fmt.Errorf("read port: %w", err)
	}
	return net.JoinHostPort(host, strconv.Itoa(int(binary.BigEndian.Uint16(port[:])))), nil
}

func socksReply(w io.Writer, code byte) error {
	_, err := w.Write([]byte{5, code, 0, 1, 0, 0, 0, 0, 0, 0})
	return err
}

// noAnswer reports whether open failed without the server answering the
// channel open: no link, stopping, or the client gone.
func noAnswer(err error) bool {
	return errors.Is(err, ErrLinkDown) || errors.Is(err, context.Canceled) || errors.Is(err, errGaveUp)
}

// errGaveUp drops a forwarded connection whose client closed it while
// it waited for the link.
var errGaveUp = errors.New("client closed the connection while it waited for the link")

// peerClosed reports whether the peer of c has closed it, or reset it:
// the TCP connection is no longer established (TCP_INFO; it reads
// nothing). A client that sent a request and then gave up waiting has
// usually closed it with the request still unread, so this does not
// look for the end of the stream. It cannot tell a close from a
// half-close (shutdown(SHUT_WR), then waiting for the answer), which is
// taken for a close too. False when unsure.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = rc.Control(func(fd uintptr) {
		ti, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		closed = err == nil && ti.State != unix.BPF_TCP_ESTABLISHED
	})
	return closed
}

type closeWriter interface{ CloseWrite() error }

// A copy reads through a buffer of smallCopy, its own for the life of the
// connection, and while reads fill it (a transfer, not a conversation)
// through one of bigCopy borrowed from a pool, given back at the first
// read that would have fitted the small one. A write to the TCP side then
// takes every SSH packet the channel holds up to bigCopy in one system
// call, and a read from it as much (io.Copy wrote each 32 KiB packet on
// its own), while an idle connection keeps only its small buffers.
const (
	smallCopy = 32 << 10
	bigCopy   = 256 << 10
)

var bigCopies = sync.Pool{New: func() any { b := make([]byte, bigCopy); return &b }}

// copyConn copies src to dst until src ends (nil) or either fails;
// streams, if not nil, is told while it copies through a big buffer.
func copyConn(dst io.Writer, src io.Reader, streams Streams) error {
	small := make([]byte, smallCopy)
	var big *[]byte
	defer func() {
		if big != nil {
			bigCopies.Put(big)
			if streams != nil {
				streams.End()
			}
		}
	}()
	for {
		buf := small
		if big != nil {
			buf = *big
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
		switch {
		case big == nil && n == len(small):
			big = bigCopies.Get().(*[]byte)
			if streams != nil {
				streams.Begin()
			}
		case big != nil && n < len(small):
			bigCopies.Put(big)
			big = nil
			if streams != nil {
				streams.End()
			}
		}
	}
}

// pipe copies both ways, passing half-closes on, until both directions
// are done or ctx ends; then it closes both.
func (t *Tunnel) pipe(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { a.Close(); b.Close() })
	defer stop()
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		_ = copyConn(dst, src, t.opt.Streams)
		if cw, ok := dst.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Go(func() { cp(a, b) })
	wg.Go(func() { cp(b, a) })
	wg.Wait()
	a.Close()
	b.Close()
}
