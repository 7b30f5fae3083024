package sshd

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"time"

	"github.com/prometheus/procfs"
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
	pfs, err := procfs.NewFS(root)
	if err != nil {
		return nil, fmt.Errorf("open procfs %s: %w", root, err)
	}
	tab := tcpTable{}
	v4, err4 := pfs.NetTCP()
	v6, err6 := pfs.NetTCP6()
	if err4 != nil && err6 != nil {
		return nil, fmt.Errorf("read %s/net/tcp: %w", root, err4)
	}
	// tcp6 is absent on kernels without IPv6: that is not an error.
	if err6 != nil && !errors.Is(err6, fs.ErrNotExist) && err4 == nil {
		return nil, fmt.Errorf("read %s/net/tcp6: %w", root, err6)
	}
	for _, lines := range []procfs.NetTCP{v4, v6} {
		for _, l := range lines {
			tab[l.Inode] = tcpConn{
				localAddr:  unmapV4(l.LocalAddr),
				localPort:  int(l.LocalPort),
				remoteAddr: unmapV4(l.RemAddr),
				remotePort: int(l.RemPort),
				state:      l.St,
			}
		}
	}
	return tab, nil
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
