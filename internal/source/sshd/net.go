package sshd

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tcpConn is one TCP socket from a /proc/net/tcp table.
type tcpConn struct {
	localAddr  net.IP
	localPort  int
	remoteAddr net.IP
	remotePort int
	state      uint64
}

const tcpEstablished = 1

// tcpTable maps socket inodes to TCP connections.
type tcpTable map[uint64]tcpConn

// readTCPTable reads net/tcp and net/tcp6 below root (a procfs mount, or
// one process's directory for its network namespace).
func readTCPTable(root string) (tcpTable, error) {
	tab := tcpTable{}
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(root + "/net/" + name)
		if err != nil {
			if name == "tcp6" && errors.Is(err, fs.ErrNotExist) {
				continue // a kernel without IPv6
			}
			return nil, fmt.Errorf("read TCP table: %w", err)
		}
		err = parseNetTCP(f, tab)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s/net/%s: %w", root, name, err)
		}
	}
	return tab, nil
}

// parseNetTCP adds the rows of a /proc/net/tcp or tcp6 text to tab:
// "sl local_address rem_address st ... uid timeout inode", addresses as
// hex words in host byte order followed by a hex port.
func parseNetTCP(r io.Reader, tab tcpTable) error {
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first {
			first = false // header
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		la, lp, err1 := parseHexAddr(f[1])
		ra, rp, err2 := parseHexAddr(f[2])
		st, err3 := strconv.ParseUint(f[3], 16, 8)
		ino, err4 := strconv.ParseUint(f[9], 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return fmt.Errorf("parse line %q: %w", sc.Text(), err)
		}
		tab[ino] = tcpConn{localAddr: unmapV4(la), localPort: lp, remoteAddr: unmapV4(ra), remotePort: rp, state: st}
	}
	return sc.Err()
}

// parseHexAddr parses "0100007F:0016" (IPv4) or 32 hex digits and a port
// (IPv6): each 32-bit word is in host (little-endian) byte order.
func parseHexAddr(s string) (net.IP, int, error) {
	addr, port, ok := strings.Cut(s, ":")
	if !ok || (len(addr) != 8 && len(addr) != 32) {
		return nil, 0, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(addr)
	if err != nil {
		return nil, 0, fmt.Errorf("bad address %q: %w", s, err)
	}
	for i := 0; i < len(raw); i += 4 {
		binary.BigEndian.PutUint32(raw[i:], binary.LittleEndian.Uint32(raw[i:]))
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("bad port in %q: %w", s, err)
	}
	return net.IP(raw), int(p), nil
}

// unmapV4 shows IPv4-mapped IPv6 addresses (::ffff:1.2.3.4) as IPv4.
func unmapV4(ip net.IP) net.IP {
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

// connFor picks the connection's own socket among a process's sockets:
// the first established TCP socket in fd order (sshd opens forwarded
// connections later, at higher fds), else the first TCP socket at all.
func (t tcpTable) connFor(inodes []uint64) (tcpConn, uint64, bool) {
	var fallback uint64
	for _, ino := range inodes {
		c, ok := t[ino]
		if !ok {
			continue
		}
		if c.state == tcpEstablished {
			return c, ino, true
		}
		if fallback == 0 {
			fallback = ino
		}
	}
	if fallback != 0 {
		return t[fallback], fallback, true
	}
	return tcpConn{}, 0, false
}

// TCPActivity reports, per socket inode, how long ago data was last
// received on a TCP connection.
type TCPActivity interface {
	LastDataRecv() (map[uint64]time.Duration, error)
}

// SockDiag reads tcp_info through NETLINK_SOCK_DIAG (INET_DIAG_INFO) for
// every TCP socket in the caller's network namespace. It needs no
// privileges.
type SockDiag struct{}

var _ TCPActivity = SockDiag{}

// LastDataRecv implements TCPActivity.
func (SockDiag) LastDataRecv() (map[uint64]time.Duration, error) {
	out := map[uint64]time.Duration{}
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		resps, err := netlink.SocketDiagTCPInfo(fam)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			if fam == unix.AF_INET6 && len(out) > 0 {
				continue // no IPv6
			}
			return nil, fmt.Errorf("sock_diag dump: %w", err)
		}
		for _, r := range resps {
			if r.InetDiagMsg == nil || r.TCPInfo == nil {
				continue
			}
			out[uint64(r.InetDiagMsg.INode)] = time.Duration(r.TCPInfo.Last_data_recv) * time.Millisecond
		}
	}
	return out, nil
}
