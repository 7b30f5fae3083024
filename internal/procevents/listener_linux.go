//go:build linux

package procevents

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// ackTimeout bounds the wait for the kernel's reply to a subscription. The
// reply is queued before sendto returns on current kernels; no reply means
// the subscription was ignored.
const ackTimeout = time.Second

// recvBufBytes is the socket receive buffer asked for (root may exceed
// net.core.rmem_max). Each queued event costs about 1 KiB of it, so this
// absorbs a burst of some thousands of events while the reader is
// descheduled. Variable so that tests can measure smaller buffers.
var recvBufBytes = 4 << 20

// readBufBytes holds one datagram; the kernel sends one 76-byte message
// per datagram, and 8 KiB is what netlink(7) recommends.
const readBufBytes = 8192

// longAgo is a read deadline in the past: it makes a blocked read return.
var longAgo = time.Unix(1, 0)

// Listener is a subscription to the kernel's process events.
type Listener struct {
	f     *os.File
	rc    syscall.RawConn
	nonce uint32 // cn_msg.ack of our requests; the kernel replies with nonce+1
	lost  atomic.Uint64
	ran   atomic.Bool

	// pending holds what arrived while Listen waited for the kernel's
	// reply; Run delivers it first.
	pending []Event

	mu         sync.Mutex
	subscribed bool
	closed     bool
}

// Listen opens a netlink connector socket, joins the process events group
// and subscribes, waiting up to a second for the kernel to confirm. It fails
// with ErrPermission where the kernel wants CAP_NET_ADMIN and the process
// lacks it (depending on the kernel, also for unprivileged users and user
// namespaces), and with ErrUnavailable where the kernel offers no process
// events to this process.
func Listen() (*Listener, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("open netlink connector socket: %w", classify(err))
	}
	setRecvBuf(fd, recvBufBytes)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("join process events group: %w", classify(err))
	}
	// The socket is non-blocking, so the file uses the runtime poller and
	// read deadlines can interrupt a blocked read.
	f := os.NewFile(uintptr(fd), "netlink-connector-proc")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open netlink connector socket: %w", err)
	}
	l := &Listener{f: f, rc: rc, nonce: rand.Uint32()}
	if err := l.subscribe(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// setRecvBuf sets the socket's receive buffer to n bytes, or as near as
// net.core.rmem_max allows without CAP_NET_ADMIN. Best effort: a smaller
// buffer only means overruns come sooner.
func setRecvBuf(fd, n int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, n)
	}
}

// classify adds our sentinel to a socket error where one applies.
func classify(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%w (%w)", ErrPermission, err)
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT),
		errors.Is(err, unix.ECONNREFUSED):
		// No connector (ECONNREFUSED: the connector's kernel socket exists
		// only in the initial network namespace).
		return fmt.Errorf("%w (%w)", ErrUnavailable, err)
	}
	return err
}

// subscribe sends PROC_CN_MCAST_LISTEN and waits for the kernel's reply,
// then narrows the subscription to fork, exec and exit where the kernel
// can filter (Linux 6.6+; older kernels ignore the request).
func (l *Listener) subscribe() error {
	if err := l.send(request(procCnMcastListen, 0, l.nonce)); err != nil {
		return fmt.Errorf("subscribe to process events: %w", classify(err))
	}
	l.mu.Lock()
	l.subscribed = true // even unconfirmed: Close must undo it
	l.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	restore := l.interruptOn(ctx)
	defer restore()
	buf := make([]byte, readBufBytes)
	for {
		n, err := l.recv(buf)
		switch {
		case err == nil:
		case errors.Is(err, unix.ENOBUFS):
			l.overrun(&l.pending)
			continue
		case ctx.Err() != nil:
			return fmt.Errorf("subscribe to process events: %w: no reply from the kernel within %v (kernel without CONFIG_PROC_EVENTS, or not in the initial PID and user namespaces)", ErrUnavailable, ackTimeout)
		default:
			return fmt.Errorf("subscribe to process events: %w", err)
		}
		var (
			replied bool
			errno   syscall.Errno
			perr    error
		)
		l.pending, perr = appendEvents(l.pending, buf[:n], func(a ack) {
			if a.ack == l.nonce+1 {
				replied, errno = true, a.errno
			}
		})
		if perr != nil {
			l.overrun(&l.pending)
		}
		if !replied {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("subscribe to process events: %w", classify(errno))
		}
		// The reply to this one is filtered out by the filter it sets.
		if err := l.send(request(procCnMcastListen, procEventsWanted, l.nonce+2)); err != nil {
			return fmt.Errorf("filter process events: %w", err)
		}
		return nil
	}
}

// Run delivers events to out until ctx is done, then unsubscribes and
// returns ctx.Err(). A full socket buffer is not an error: Run sends
// Overrun and counts it in Lost. Run blocks while out is full, and the
// kernel drops events meanwhile; out should be buffered. Run may be called
// once; call Close afterwards.
func (l *Listener) Run(ctx context.Context, out chan<- Event) error {
	if !l.ran.CompareAndSwap(false, true) {
		return errors.New("run process events listener: already run")
	}
	defer l.unsubscribe()
	restore := l.interruptOn(ctx)
	defer restore()

	evs := l.pending
	l.pending = nil
	buf := make([]byte, readBufBytes)
	for {
		for _, ev := range evs {
			select {
			case out <- ev:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		evs = evs[:0]

		n, err := l.recv(buf)
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, unix.ENOBUFS):
			l.overrun(&evs)
			continue
		case l.isClosed():
			return fmt.Errorf("read process events: %w", os.ErrClosed)
		default:
			return fmt.Errorf("read process events: %w", err)
		}
		var perr error
		if evs, perr = appendEvents(evs, buf[:n], nil); perr != nil {
			// Not from a kernel we understand: as good as lost.
			l.overrun(&evs)
		}
	}
}

// Lost returns how many times events were lost: kernel buffer overruns
// (ENOBUFS) and datagrams that could not be decoded. Each one was also
// delivered as an Overrun event.
func (l *Listener) Lost() uint64 { return l.lost.Load() }

// Close unsubscribes if Run has not, and closes the socket. A Run still
// reading returns an error wrapping os.ErrClosed.
func (l *Listener) Close() error {
	uerr := l.unsubscribe()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	if err := errors.Join(uerr, l.f.Close()); err != nil {
		return fmt.Errorf("close process events listener: %w", err)
	}
	return nil
}

// overrun counts a loss and queues one Overrun event, unless the last
// queued event already is one.
func (l *Listener) overrun(evs *[]Event) {
	l.lost.Add(1)
	if n := len(*evs); n > 0 && (*evs)[n-1].Kind == Overrun {
		return
	}
	*evs = append(*evs, Event{Kind: Overrun})
}

// unsubscribe sends PROC_CN_MCAST_IGNORE once, so that the kernel stops
// sending to this socket and, with no listener left, stops producing
// events at all.
func (l *Listener) unsubscribe() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.subscribed || l.closed {
		return nil
	}
	l.subscribed = false
	return l.send(request(procCnMcastIgnore, 0, l.nonce+4))
}

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// interruptOn makes reads fail once ctx is done, until restore is called.
func (l *Listener) interruptOn(ctx context.Context) (restore func()) {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = l.f.SetReadDeadline(longAgo)
		close(fired)
	})
	return func() {
		if !stop() {
			<-fired
			_ = l.f.SetReadDeadline(time.Time{})
		}
	}
}

// send writes one request to the kernel.
func (l *Listener) send(b []byte) error {
	var serr error
	err := l.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("send to process events connector: %w", err)
	}
	return nil
}

// recv reads one datagram sent by the kernel, waiting in the runtime
// poller. Datagrams from other sockets are skipped.
func (l *Listener) recv(buf []byte) (int, error) {
	var (
		n    int
		rerr error
	)
	err := l.rc.Read(func(fd uintptr) bool {
		for {
			var from unix.Sockaddr
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			switch {
			case rerr == unix.EINTR:
				continue
			case rerr == unix.EAGAIN:
				return false
			case rerr != nil:
				return true
			}
			if sa, ok := from.(*unix.SockaddrNetlink); ok && sa.Pid == 0 {
				return true
			}
			// Not from the kernel: drop it and read on.
		}
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// Filter asks the kernel to deliver only fork events whose parent, exec
// events whose process, and exit events whose process or parent is one of
// pids (process ids, not thread ids); other processes' events are dropped
// before they are queued, so they cost this process nothing. Overrun
// events still come. An empty list drops every fork, exec and exit; nil
// removes the filter: every event is delivered again. More pids than
// MaxFiltered remove the filter and return ErrFilterTooLarge. Events
// already queued were filtered when they arrived. Safe to call while Run
// runs.
func (l *Listener) Filter(pids []int) error {
	if pids == nil {
		return l.detachFilter()
	}
	prog, err := filterProgram(pids)
	if err != nil {
		return errors.Join(err, l.detachFilter())
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("filter process events: %w", err)
	}
	fp := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		fp[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	var serr error
	err = l.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(fp)), Filter: &fp[0]})
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("filter process events: %w", err)
	}
	return nil
}

// detachFilter removes the socket filter, if any.
func (l *Listener) detachFilter() error {
	var serr error
	err := l.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	})
	if err == nil && !errors.Is(serr, unix.ENOENT) {
		err = serr // ENOENT: there was none
	}
	if err != nil {
		return fmt.Errorf("remove process events filter: %w", err)
	}
	return nil
}
