package connect

import (
	"errors"
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// maxSplice and minSplice bound what one splice(2) call is offered;
// pipeSize is the size asked for ssh's pipe (Linux allows unprivileged
// users 1 MiB).
const (
	maxSplice = 1 << 20
	minSplice = 4 << 10
	pipeSize  = 1 << 20
)

// pipeToSocket moves src to dst with splice(2) when src is a pollable
// pipe (ssh's standard input, made pollable by PollableStdin) and dst a
// TCP connection: Go splices socket to pipe by itself, not pipe to
// socket, which costs a read and a write per 64 KiB. handled is false
// when it did nothing and io.Copy must do the work.
func pipeToSocket(dst net.Conn, src io.Reader) (handled bool, err error) {
	f, ok := src.(*os.File)
	tc, ok2 := dst.(*net.TCPConn)
	if !ok || !ok2 || !isFIFO(f) || f.SetReadDeadline(noDeadline) != nil {
		return false, nil
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return false, nil
	}
	dc, err := tc.SyscallConn()
	if err != nil {
		return false, nil
	}
	// A larger pipe means fewer wake-ups for ssh and for us.
	sc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	// Wait for the pipe holding nothing but the pipe, and for room in the
	// socket holding nothing else: Splice's conn.Close waits for the
	// socket's users, and must not wait for one that waits for ssh.
	chunk := maxSplice
	for {
		var moved int64 // 0 at the end of the pipe
		var serr, werr error
		rerr := sc.Read(func(sfd uintptr) bool {
			werr = dc.Write(func(dfd uintptr) bool {
				moved, serr = spliceOnce(int(sfd), int(dfd), chunk)
				if serr != unix.EAGAIN {
					return true
				}
				// The socket is full: wait for room. Offering it more
				// than about half its buffer at a time makes each wait
				// long (whole 64 KiB skbs must be acknowledged before
				// the kernel calls it writable), so follow the buffer.
				if sb, err := unix.GetsockoptInt(int(dfd), unix.SOL_SOCKET, unix.SO_SNDBUF); err == nil {
					chunk = max(minSplice, min(maxSplice, sb/2))
				}
				return false
			})
			return werr != nil || serr != errPipeEmpty // empty: wait for bytes
		})
		switch {
		case rerr != nil:
			return true, rerr
		case werr != nil:
			return true, werr
		case serr != nil:
			return true, &os.SyscallError{Syscall: "splice", Err: serr}
		case moved == 0:
			return true, nil // end of file
		}
	}
}

// errPipeEmpty: splice found nothing to move; wait for the pipe.
var errPipeEmpty = errors.New("pipe empty")

// spliceOnce moves what the pipe sfd holds to the socket dfd, both non-
// blocking. splice says EAGAIN both when the pipe is empty and when the
// socket is full; the poller is edge-triggered, so waiting for the wrong
// one can wait for ever. The pipe's byte count tells them apart: an
// EAGAIN while the pipe held bytes before the call is the socket's (and
// the kernel then wakes the poller when it has room again).
func spliceOnce(sfd, dfd, chunk int) (int64, error) {
	held := false
	for {
		n, err := unix.Splice(sfd, nil, dfd, nil, chunk, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case err == unix.EINTR:
			continue
		case err != unix.EAGAIN:
			return n, err
		case held:
			return 0, unix.EAGAIN // the socket is full
		}
		avail, ierr := unix.IoctlGetInt(sfd, unix.TIOCINQ) // FIONREAD
		switch {
		case ierr != nil:
			return 0, ierr
		case avail == 0:
			return 0, errPipeEmpty
		}
		held = true // bytes came in, or the socket is full: try again
	}
}

func isFIFO(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeNamedPipe != 0
}

// PollableStdin returns standard input for Splice. A pipe, which is what
// ssh gives a ProxyCommand, is switched to non-blocking mode so that Go's
// poller can wait on it: Splice can then move it to the socket with
// splice(2) and stop reading it when the server closes. Anything else (a
// terminal, a file) is returned as it is: a terminal left non-blocking
// would trouble the shell after us.
func PollableStdin() *os.File {
	in := os.Stdin
	if !isFIFO(in) || in.SetReadDeadline(noDeadline) == nil {
		return in // not a pipe, or pollable already
	}
	fd := int(in.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		return in
	}
	// NewFile sees a non-blocking descriptor and registers it with the
	// poller. It shares descriptor 0 with os.Stdin: neither is closed
	// before the process ends.
	return os.NewFile(uintptr(fd), in.Name())
}
