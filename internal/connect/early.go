package connect

import (
	"context"
	"net"
	"net/netip"

	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/safefile"
)

// A connect remembers, per instance id, the address it last reached the
// instance at (INSTANCE.addr in the lock directory). The next connect to
// that id dials it while DescribeInstances is on its way, and uses that
// connection only if the instance runs and still has that address; any
// other connection is closed unused, nothing sent on it. Over a network
// with round trips of tens of milliseconds to the instance and to the
// EC2 endpoint, the dial then costs no time of its own.

// maxAddrFile bounds what is read of an address file: "[v6]:port" fits.
const maxAddrFile = 64

// lastAddr returns the address remembered for id on port, or "" when
// there is none that is usable: a missing file, anything but a regular
// file of one link (safefile), anything that is not an IP address and
// this port. It is also what remember compares with.
func (r *run) lastAddr(id string) string {
	path, err := instanceFile(r.LockDir, id, ".addr")
	if err != nil || !r.lockDirOK() {
		return ""
	}
	b, _, err := safefile.Read(path, maxAddrFile)
	if err != nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(string(b))
	if err != nil || int(ap.Port()) != r.Port {
		return ""
	}
	return ap.String()
}

// remember records hostport as where id answered, unless it is known:
// what lastAddr read.
func (r *run) remember(id, hostport, known string) {
	path, err := instanceFile(r.LockDir, id, ".addr")
	if err != nil || hostport == known || !r.lockDirOK() {
		return
	}
	_ = atomicfile.Write(path, []byte(hostport), 0o600)
}

// early is a dial started before the address was confirmed.
type early struct {
	hostport string
	cancel   context.CancelFunc
	done     chan struct{}
	conn     net.Conn
	err      error
}

// dialEarly starts dialling hostport, bounded by DialTimeout.
func (r *run) dialEarly(ctx context.Context, hostport string) *early {
	dctx, cancel := context.WithTimeout(ctx, r.DialTimeout)
	e := &early{hostport: hostport, cancel: cancel, done: make(chan struct{})}
	go func() {
		e.conn, e.err = r.Dial(dctx, "tcp", hostport)
		close(e.done)
	}()
	return e
}

// take waits for the dial and hands over its connection (nil if it
// failed): drop then leaves it open.
func (e *early) take() net.Conn {
	<-e.done
	e.cancel()
	conn := e.conn
	e.conn = nil
	return conn
}

// drop abandons the dial and closes its connection unused.
func (e *early) drop() {
	if e == nil {
		return
	}
	e.cancel()
	<-e.done // cancelled: returns at once
	if e.conn != nil {
		e.conn.Close()
	}
}
