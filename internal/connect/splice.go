package connect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// aLongTimeAgo is a read deadline that has passed: it wakes a blocked
// read at once. noDeadline clears one.
var (
	aLongTimeAgo = time.Unix(1, 0)
	noDeadline   time.Time
)

// Splice copies in to conn and conn to out until the server closes the
// connection, then closes conn. It is what a ProxyCommand does: when in
// ends (ssh closed its side), conn's write side is shut (a TCP
// half-close), so the server sees end of file and still sends what it
// has left; when the server closes, Splice returns at once, without
// waiting for in to end, as ssh expects. If in can take a read deadline
// (a pollable *os.File, a net.Conn), Splice stops reading it before it
// returns and clears the deadline again; otherwise a read of in may still
// be pending, which only matters to a caller that goes on living.
//
// On Linux the bytes move with splice(2), without a copy through user
// space, where in or out is a pipe (see PollableStdin) and conn a
// *net.TCPConn. Go sets TCP_NODELAY on TCP connections.
func Splice(ctx context.Context, conn net.Conn, in io.Reader, out io.Writer) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	up := make(chan error, 1)
	go func() {
		handled, err := pipeToSocket(conn, in)
		if !handled {
			_, err = io.Copy(conn, in)
		}
		if err == nil {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		} else {
			conn.Close() // standard input is broken: so is the session
		}
		up <- err
	}()

	_, downErr := io.Copy(out, conn)
	conn.Close() // also ends a write to conn that the server no longer reads

	var upErr error
	if d, ok := in.(interface{ SetReadDeadline(time.Time) error }); ok && d.SetReadDeadline(aLongTimeAgo) == nil {
		upErr = <-up
		d.SetReadDeadline(noDeadline)
	} else {
		select {
		case upErr = <-up:
		default:
		}
	}

	switch {
	case ctx.Err() != nil:
		return interrupted(ctx)
	case downErr != nil && errors.Is(downErr, net.ErrClosed) && upErr != nil:
		return fmt.Errorf("splice: %w", upErr)
	case downErr != nil:
		return fmt.Errorf("splice: %w", downErr)
	}
	return nil
}
