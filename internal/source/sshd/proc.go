package sshd

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// proc is one process of interest: an sshd process, or a process that
// tells a session's mode (sftp-server).
type proc struct {
	pid, ppid int
	zombie    bool
	// start is the process start time in clock ticks after boot.
	start uint64
	comm  string
	title Title
	// titled is false when the process has no sshd title.
	titled bool
}

// procTable is the result of one walk over a procfs tree.
type procTable struct {
	procs []proc
	// unreadable counts processes whose stat could not be read for lack of
	// permission (hidepid=1 or similar).
	unreadable int
}

// procWalker reads a procfs tree with one reused buffer and no per-file
// allocations beyond the path, so a scan of 10,000 processes stays cheap.
type procWalker struct {
	buf []byte
}

const readBufSize = 8 << 10

func newProcWalker() *procWalker {
	return &procWalker{buf: make([]byte, readBufSize)}
}

// walk lists the processes under root that matter to sshd detection.
func (w *procWalker) walk(root string) (procTable, error) {
	var tab procTable
	dir, err := os.Open(root)
	if err != nil {
		return tab, fmt.Errorf("open proc root: %w", err)
	}
	defer dir.Close()
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return tab, fmt.Errorf("list proc root %s: %w", root, err)
	}
	dirfd := int(dir.Fd())
	for _, name := range names {
		if !isDigits(name) {
			continue
		}
		n, err := w.readAt(dirfd, name+"/stat")
		if err != nil {
			if isPermission(err) {
				tab.unreadable++
			}
			// Gone since the listing: not an error.
			continue
		}
		comm, state, ppid, start, ok := parseStat(w.buf[:n])
		if !ok {
			continue
		}
		var p proc
		switch {
		case bytes.HasPrefix(comm, []byte("sshd")):
			p.comm = string(comm)
		case string(comm) == "sftp-server":
			p.comm = "sftp-server"
		default:
			continue
		}
		p.pid, _ = strconv.Atoi(name)
		p.ppid = ppid
		p.start = start
		p.zombie = state == 'Z' || state == 'X'
		if !p.zombie && p.comm != "sftp-server" {
			if n, err := w.readAt(dirfd, name+"/cmdline"); err == nil {
				p.title, p.titled = ParseTitle(cmdlineString(w.buf[:n]))
			} else if isPermission(err) {
				tab.unreadable++
			}
		}
		tab.procs = append(tab.procs, p)
	}
	return tab, nil
}

// readAt reads a small file relative to dirfd into w.buf.
func (w *procWalker) readAt(dirfd int, path string) (int, error) {
	fd, err := unix.Openat(dirfd, path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	total := 0
	for total < len(w.buf) {
		n, err := unix.Read(fd, w.buf[total:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total, nil
}

func isPermission(err error) bool {
	return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
}

// parseStat parses /proc/PID/stat: "PID (COMM) STATE PPID ... STARTTIME ...".
// COMM may contain spaces and parentheses, so it ends at the last ')'.
func parseStat(b []byte) (comm []byte, state byte, ppid int, start uint64, ok bool) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open || closing+2 >= len(b) {
		return nil, 0, 0, 0, false
	}
	comm = b[open+1 : closing]
	rest := b[closing+2:]
	// Fields after COMM, numbered from 0: 0 state, 1 ppid, ..., 19 starttime.
	for i := 0; i <= 19; i++ {
		sp := bytes.IndexByte(rest, ' ')
		var f []byte
		if sp < 0 {
			f, rest = rest, nil
		} else {
			f, rest = rest[:sp], rest[sp+1:]
		}
		switch i {
		case 0:
			if len(f) != 1 {
				return nil, 0, 0, 0, false
			}
			state = f[0]
		case 1:
			v, err := strconv.Atoi(string(f))
			if err != nil {
				return nil, 0, 0, 0, false
			}
			ppid = v
		case 19:
			v, err := strconv.ParseUint(string(bytes.TrimSpace(f)), 10, 64)
			if err != nil {
				return nil, 0, 0, 0, false
			}
			start = v
		}
		if rest == nil && i < 19 {
			return nil, 0, 0, 0, false
		}
	}
	return comm, state, ppid, start, true
}

// cmdlineString turns /proc/PID/cmdline into a title: setproctitle writes
// one NUL-terminated string; an untitled process has NUL-separated argv.
func cmdlineString(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	if bytes.IndexByte(b, 0) < 0 {
		return string(b)
	}
	return string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
}

// socketInodes returns the inodes of the sockets a process holds, in fd
// order.
func socketInodes(root string, pid int) ([]uint64, error) {
	fdDir := root + "/" + strconv.Itoa(pid) + "/fd"
	d, err := os.Open(fdDir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	type fdInode struct {
		fd    int
		inode uint64
	}
	var socks []fdInode
	buf := make([]byte, 64)
	for _, name := range names {
		fd, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		n, err := unix.Readlinkat(int(d.Fd()), name, buf)
		if err != nil {
			continue
		}
		if ino, ok := parseSocketLink(buf[:n]); ok {
			socks = append(socks, fdInode{fd, ino})
		}
	}
	// Insertion sort: a handful of fds.
	for i := 1; i < len(socks); i++ {
		for j := i; j > 0 && socks[j].fd < socks[j-1].fd; j-- {
			socks[j], socks[j-1] = socks[j-1], socks[j]
		}
	}
	out := make([]uint64, len(socks))
	for i, s := range socks {
		out[i] = s.inode
	}
	return out, nil
}

// parseSocketLink parses an fd link target "socket:[12345]".
func parseSocketLink(b []byte) (uint64, bool) {
	const prefix = "socket:["
	if !bytes.HasPrefix(b, []byte(prefix)) || b[len(b)-1] != ']' {
		return 0, false
	}
	v, err := strconv.ParseUint(string(b[len(prefix):len(b)-1]), 10, 64)
	return v, err == nil
}
