package openvpn

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// DefaultQueryTimeout bounds a management query whose context has no
// deadline.
const DefaultQueryTimeout = 5 * time.Second

// Management interface errors.
var (
	// ErrBadPassword: the management interface rejected the password.
	ErrBadPassword = errors.New("management password rejected")
	// ErrPasswordRequired: the management interface asks for a password
	// and none was given.
	ErrPasswordRequired = errors.New("management interface asks for a password and none is configured")
	// ErrManagement: the management interface answered with an error or
	// with something that is not its protocol.
	ErrManagement = errors.New("management interface error")
)

// Management protocol texts.
const (
	passwordPrompt  = "ENTER PASSWORD:"
	passwordOK      = "SUCCESS: password is correct"
	passwordBad     = "ERROR: bad password"
	bannerPrefix    = ">INFO:"
	maxStatusBytes  = 64 << 20
	maxGreetingLine = 4 << 10
)

// ParseAddr splits a management address into a network and an address
// for net.Dial: "unix:/path" (or a bare absolute path) is a unix socket,
// "tcp:host:port" and "host:port" are TCP.
func ParseAddr(addr string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		network, address = "unix", strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, "/"):
		network, address = "unix", addr
	case strings.HasPrefix(addr, "tcp:"):
		network, address = "tcp", strings.TrimPrefix(addr, "tcp:")
	default:
		network, address = "tcp", addr
	}
	if network == "unix" {
		if !strings.HasPrefix(address, "/") {
			return "", "", fmt.Errorf("management address %q: want unix:/absolute/path", addr)
		}
		return network, address, nil
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil || host == "" || port == "" {
		return "", "", fmt.Errorf("management address %q: want unix:/path, tcp:host:port or host:port", addr)
	}
	return network, address, nil
}

// Query asks the OpenVPN management interface at addr (see ParseAddr) for
// its status. It answers the password prompt when there is one (password
// may then not be empty), skips the ">INFO:" banner and every other
// real-time ">" line, sends "status 3", reads to END, sends "quit" and
// disconnects. Those two commands are all it ever sends: it never
// enables --management-client-auth, holds, kills or changes anything on
// the server.
//
// OpenVPN serves one management client at a time and leaves others
// waiting unanswered, so Query connects for one status only, and a query
// made while someone else is connected times out. Every step is bounded
// by ctx's deadline, DefaultQueryTimeout when it has none.
func Query(ctx context.Context, addr, password string) (*Status, error) {
	raw, err := QueryRaw(ctx, addr, password)
	if err != nil {
		return nil, err
	}
	st, err := ParseStatusIn(bytes.NewReader(raw), time.Local)
	if err != nil {
		return nil, fmt.Errorf("parse status from %s: %w", addr, err)
	}
	return st, nil
}

// QueryRaw is Query returning the status text (version 3, lines ending
// in "\n", real-time ">" lines removed) instead of parsing it.
func QueryRaw(ctx context.Context, addr, password string) ([]byte, error) {
	network, address, err := ParseAddr(addr)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultQueryTimeout)
		defer cancel()
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("connect to management interface %s: %w", addr, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("set deadline on management connection %s: %w", addr, err)
	}
	// Cancellation closes the connection, ending a blocked read or write.
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	m := &mgmtConn{conn: conn, r: bufio.NewReader(conn), addr: addr}
	raw, err := m.status(password)
	if err == nil {
		return raw, nil
	}
	ctxErr := ctx.Err()
	if ctxErr == nil && isTimeout(err) {
		// The connection's deadline is the context's: it may fire first.
		ctxErr = context.DeadlineExceeded
	}
	if ctxErr == nil {
		return nil, err
	}
	// The deadline or the cancellation ended the read or write: say so
	// rather than "i/o timeout" or "use of closed network connection".
	hint := ""
	if !m.greeted && errors.Is(ctxErr, context.DeadlineExceeded) {
		hint = " (OpenVPN serves one management client at a time: is another one connected?)"
	}
	return nil, fmt.Errorf("wait for %s from management interface %s: %w%s", m.step, addr, ctxErr, hint)
}

type mgmtConn struct {
	conn net.Conn
	r    *bufio.Reader
	addr string
	// read counts the bytes read, for the size bound.
	read int
	// greeted is set once the banner came.
	greeted bool
	// step is what the client waits for.
	step string
}

func (m *mgmtConn) send(cmd string) error {
	if _, err := io.WriteString(m.conn, cmd+"\n"); err != nil {
		return fmt.Errorf("send to management interface %s: %w", m.addr, err)
	}
	return nil
}

// line reads a line without its line ending. The password prompt, which
// has none, is returned as soon as it is complete.
func (m *mgmtConn) line(limit int, what string) (string, error) {
	var b []byte
	for {
		c, err := m.r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if len(b) > 0 {
				return "", fmt.Errorf("read %s from management interface %s after %q: %w", what, m.addr, clip(string(b)), err)
			}
			return "", fmt.Errorf("read %s from management interface %s: %w", what, m.addr, err)
		}
		m.read++
		if c == '\n' {
			return strings.TrimSuffix(string(b), "\r"), nil
		}
		b = append(b, c)
		if len(b) == len(passwordPrompt) && string(b) == passwordPrompt {
			return passwordPrompt, nil
		}
		if len(b) > limit || m.read > maxStatusBytes {
			return "", fmt.Errorf("read %s from management interface %s: %w: line longer than %d bytes", what, m.addr, ErrManagement, limit)
		}
	}
}

// status runs the session: greeting, status 3, quit.
func (m *mgmtConn) status(password string) ([]byte, error) {
	m.step = "the greeting"
	sentPassword := false
greeting:
	for {
		l, err := m.line(maxGreetingLine, "greeting")
		if err != nil {
			if sentPassword && errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("log in to management interface %s: %w (connection closed)", m.addr, ErrBadPassword)
			}
			return nil, err
		}
		switch {
		case l == passwordPrompt:
			if password == "" {
				return nil, fmt.Errorf("log in to management interface %s: %w", m.addr, ErrPasswordRequired)
			}
			if sentPassword {
				return nil, fmt.Errorf("log in to management interface %s: %w", m.addr, ErrBadPassword)
			}
			if err := m.send(password); err != nil {
				return nil, err
			}
			sentPassword = true
		case strings.HasPrefix(l, passwordBad):
			return nil, fmt.Errorf("log in to management interface %s: %w", m.addr, ErrBadPassword)
		case strings.HasPrefix(l, bannerPrefix):
			m.greeted = true
			break greeting
		case strings.HasPrefix(l, passwordOK), strings.HasPrefix(l, ">"), l == "":
		case strings.HasPrefix(l, "ERROR"):
			return nil, fmt.Errorf("log in to management interface %s: %w: %q", m.addr, ErrManagement, clip(l))
		default:
			return nil, fmt.Errorf("log in to management interface %s: %w: unexpected %q", m.addr, ErrManagement, clip(l))
		}
	}
	m.step = "the status"
	if err := m.send("status 3"); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for {
		l, err := m.line(maxLine, "status")
		if err != nil {
			return nil, err
		}
		switch {
		case strings.HasPrefix(l, ">"):
			continue // real-time notification
		case out.Len() == 0 && strings.HasPrefix(l, "ERROR"):
			return nil, fmt.Errorf("status from management interface %s: %w: %q", m.addr, ErrManagement, clip(l))
		}
		out.WriteString(l)
		out.WriteByte('\n')
		if l == "END" {
			break
		}
	}
	// The status is complete: a failed goodbye does not spoil it.
	_ = m.send("quit")
	return out.Bytes(), nil
}

// isTimeout tells whether err is a deadline that ran out.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
