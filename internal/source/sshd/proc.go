package sshd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"time"

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
	// unreadableTitle is set when the cmdline could not be read.
	unreadableTitle bool
	// rawTitle is kept for listeners only (their options matter).
	rawTitle string
	// v is what verification found (see verify.go); level says which
	// check it is the result of.
	v     verdict
	level checkLevel
}

// checkLevel is how far a process has been verified.
type checkLevel uint8

const (
	unchecked checkLevel = iota
	// exeChecked: its executable (any uid), for a child of a monitor.
	exeChecked
	// rootChecked: its executable and that it runs as root, for a
	// monitor or listener.
	rootChecked
)

// needs returns the check a process needs: monitors and listeners must
// be root's sshd.
func (p *proc) needs() checkLevel {
	if p.titled && (p.title.Role == RoleMonitor || p.title.Role == RoleListener) {
		return rootChecked
	}
	return exeChecked
}

// procTable is the result of one walk over a procfs tree.
type procTable struct {
	procs []proc
	// unreadable counts processes whose stat could not be read for lack of
	// permission (hidepid=1 or similar).
	unreadable int
	// trusted holds the verified sshd processes: root's monitors and
	// listeners, and the sshd and sftp-server processes under them.
	trusted map[int]struct{}
}

// procWalker reads a procfs tree with one reused buffer and no per-file
// allocations beyond the path, so a scan of 10,000 processes stays cheap.
//
// Between walks it remembers processes that are of no interest (neither
// sshd nor sftp-server), keyed by PID and the inode number of their /proc
// directory as reported by getdents: procfs gives a new process a new
// inode, so a PID that was reused is read again. A process can still
// change its name by exec without changing either; sshd processes are
// forked from sshd, so only an sshd started through exec by another
// program (inetd, systemd socket activation: "sshd -i") could be missed,
// and it execs right after its fork. Hence a remembered process is read
// again while it is younger than youngAge, and every process is read
// again at least every fullEvery.
//
// sshd processes themselves are remembered too, to read only their
// title (which changes) and not their stat (which does not, but for the
// parent after a reparenting): a remembered one is read whole again when
// its title is gone or no longer an sshd title (exit, exec), and when its
// parent's /proc directory is not the one it had.
type procWalker struct {
	// insp answers what processes run (verify.go).
	insp  inspector
	dirs  map[string]bool
	buf   []byte
	dents []byte
	known map[int]knownProc
	cands map[int]candProc
	// seen maps the PIDs of this walk to their /proc directory inodes.
	seen    map[int]uint64
	lastAll time.Time
}

// candProc is a remembered sshd process.
type candProc struct {
	ino       uint64
	parentIno uint64
	p         proc
}

// knownProc is a remembered process that is of no interest.
type knownProc struct {
	ino   uint64
	start uint64
}

const (
	readBufSize = 8 << 10
	youngAge    = 10 * time.Second
	fullEvery   = time.Minute
)

func newProcWalker(insp inspector) *procWalker {
	return &procWalker{insp: insp, dirs: map[string]bool{}, buf: make([]byte, readBufSize), dents: make([]byte, 64<<10), known: map[int]knownProc{}, cands: map[int]candProc{}, seen: map[int]uint64{}}
}

// walk lists the processes under root that matter to sshd detection. now
// and boot decide which remembered processes are old enough to skip.
// uptime is the time since boot (for the live /proc, CLOCK_BOOTTIME, which
// wall-clock steps do not move).
func (w *procWalker) walk(root string, now time.Time, uptime time.Duration) (procTable, error) {
	var tab procTable
	dirfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return tab, fmt.Errorf("open proc root %s: %w", root, err)
	}
	defer unix.Close(dirfd)
	full := now.Sub(w.lastAll) >= fullEvery || now.Before(w.lastAll)
	if full {
		w.lastAll = now
		clear(w.dirs)
	}
	clear(w.seen)
	// Ticks after boot before which a process is old enough to trust.
	oldTicks := uint64(0)
	if age := uptime - youngAge; age > 0 {
		oldTicks = uint64(age / (time.Second / userHZ))
	}
	var name [24]byte
	var fast []int // indexes in tab.procs read by title only
	for {
		n, err := unix.Getdents(dirfd, w.dents)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return tab, fmt.Errorf("list proc root %s: %w", root, err)
		}
		if n <= 0 {
			break
		}
		for off := 0; off+19 <= n; {
			ino := binary.NativeEndian.Uint64(w.dents[off:])
			reclen := int(binary.NativeEndian.Uint16(w.dents[off+16:]))
			if reclen == 0 || off+reclen > n {
				break
			}
			raw := w.dents[off+19 : off+reclen]
			off += reclen
			if i := bytes.IndexByte(raw, 0); i >= 0 {
				raw = raw[:i]
			}
			pid, ok := atoiPID(raw)
			if !ok {
				continue
			}
			w.seen[pid] = ino
			if k, ok := w.known[pid]; ok && !full && k.ino == ino && k.start < oldTicks {
				continue
			}
			pname := append(name[:0], raw...)
			if c, ok := w.cands[pid]; ok && c.ino == ino && c.p.zombie {
				// A zombie stays one until it is reaped and its
				// directory goes: nothing to read again.
				tab.procs = append(tab.procs, c.p)
				continue
			}
			if c, ok := w.cands[pid]; ok && !full && c.ino == ino && c.p.comm != "sftp-server" {
				if p, ok := w.retitle(dirfd, c.p, pname); ok {
					tab.procs = append(tab.procs, p)
					fast = append(fast, len(tab.procs)-1)
					continue
				}
			}
			p, keep, perr := w.readProc(dirfd, pid, pname)
			if perr != nil {
				if isPermission(perr) {
					tab.unreadable++
				}
				delete(w.known, pid)
				delete(w.cands, pid)
				continue
			}
			if !keep {
				w.known[pid] = knownProc{ino: ino, start: p.start}
				delete(w.cands, pid)
				continue
			}
			delete(w.known, pid)
			if c, ok := w.cands[pid]; ok && c.ino == ino {
				keepVerdict(&p, c.p)
			}
			w.cands[pid] = candProc{ino: ino, p: p}
			tab.procs = append(tab.procs, p)
			if p.unreadableTitle {
				tab.unreadable++
			}
		}
	}
	// A process whose parent's /proc directory changed may have been
	// reparented: read its stat again.
	for _, i := range fast {
		p := tab.procs[i]
		c := w.cands[p.pid]
		if w.seen[p.ppid] == c.parentIno {
			continue
		}
		pname := strconv.AppendInt(name[:0], int64(p.pid), 10)
		np, keep, err := w.readProc(dirfd, p.pid, pname)
		if err != nil || !keep {
			np.pid, np.zombie = p.pid, true // gone: count it as nothing
		}
		keepVerdict(&np, p)
		tab.procs[i] = np
		c.p = np
		w.cands[p.pid] = c
	}
	for pid, c := range w.cands {
		ino, ok := w.seen[pid]
		if !ok || ino != c.ino {
			delete(w.cands, pid)
			continue
		}
		c.parentIno = w.seen[c.p.ppid]
		w.cands[pid] = c
	}
	for pid := range w.known {
		if _, ok := w.seen[pid]; !ok {
			delete(w.known, pid)
		}
	}
	w.verify(dirfd, &tab)
	return tab, nil
}

// keepVerdict carries old's verdict over to p, a new read of the same
// /proc directory, when the process is still the one that was verified:
// same start time and program name (an exec changes the name), and a
// role that needs no more than was checked.
func keepVerdict(p *proc, old proc) {
	if p.start == old.start && p.comm == old.comm && !p.zombie {
		p.v, p.level = old.v, old.level
	}
}

// verify checks the processes the table's connections rest on: every
// monitor and listener must be root's sshd; the processes under them
// (net, PAM and user children, sftp servers) must run an sshd program or
// sftp-server to be watched (procTable.trusted). A verdict is kept for
// the life of the process (see keepVerdict); a process that vanished
// meanwhile is read again next time.
func (w *procWalker) verify(dirfd int, tab *procTable) {
	tab.trusted = make(map[int]struct{}, len(tab.procs))
	for i := range tab.procs {
		p := &tab.procs[i]
		if p.zombie || p.needs() != rootChecked {
			continue
		}
		w.check(dirfd, p, rootChecked)
		if p.v.ok {
			tab.trusted[p.pid] = struct{}{}
		}
	}
	// Children of trusted processes, down the tree: a connection is at
	// most four levels deep (listener, monitor, user child, its child),
	// so a pass per level over the few sshd processes is cheaper than
	// building an index.
	for changed := true; changed; {
		changed = false
		for i := range tab.procs {
			p := &tab.procs[i]
			if p.zombie || p.needs() == rootChecked {
				continue // monitors and listeners stand on their own
			}
			if _, ok := tab.trusted[p.pid]; ok {
				continue
			}
			if _, ok := tab.trusted[p.ppid]; !ok {
				continue
			}
			w.check(dirfd, p, exeChecked)
			if p.v.ok {
				tab.trusted[p.pid] = struct{}{}
				changed = true
			}
		}
	}
}

// childPrograms are what may run under a connection's monitor.
var childPrograms = append(append([]string(nil), sshdPrograms...), "sftp-server")

// check verifies p to level unless it already was, and remembers the
// verdict with the process.
func (w *procWalker) check(dirfd int, p *proc, level checkLevel) {
	if p.level >= level && !p.v.gone {
		return
	}
	pname := strconv.Itoa(p.pid)
	if level == rootChecked {
		n, err := w.readAt(dirfd, pname+"/status")
		switch {
		case err == nil:
			p.v = rootVerdict(w.insp, p.pid, w.buf[:n], w.dirs)
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH):
			p.v = verdict{uid: -1, gone: true}
		default:
			p.v = verdict{uid: -1, why: "status unreadable: " + err.Error()}
		}
	} else {
		p.v = exeVerdict(w.insp, p.pid, childPrograms, w.dirs)
	}
	p.level = level
	if c, ok := w.cands[p.pid]; ok && c.p.start == p.start {
		c.p = *p
		w.cands[p.pid] = c
	}
}

// retitle reads a remembered sshd process's title. It returns false when
// the process must be read whole: its title is gone (exited, zombie) or
// not an sshd title any more (it exec'd something else).
func (w *procWalker) retitle(dirfd int, p proc, pname []byte) (proc, bool) {
	n, err := w.readAt(dirfd, string(append(pname, "/cmdline"...)))
	if err != nil || n == 0 {
		return p, false
	}
	raw := cmdlineString(w.buf[:n])
	t, ok := ParseTitle(raw)
	if !ok {
		return p, false
	}
	if t.Role != p.title.Role || !p.titled {
		p.v, p.level = verdict{}, unchecked // a new role: check again
	}
	p.title, p.titled, p.rawTitle = t, true, ""
	if t.Role == RoleListener {
		p.rawTitle = raw
	}
	return p, true
}

// readProc reads one process. keep is false for processes of no interest.
func (w *procWalker) readProc(dirfd, pid int, pname []byte) (p proc, keep bool, err error) {
	n, err := w.readAt(dirfd, string(append(pname, "/stat"...)))
	if err != nil {
		return p, false, err
	}
	comm, state, ppid, start, ok := parseStat(w.buf[:n])
	if !ok {
		return p, false, fmt.Errorf("parse stat of %d", pid)
	}
	p.pid, p.ppid, p.start = pid, ppid, start
	switch {
	case bytes.HasPrefix(comm, []byte("sshd")):
		p.comm = string(comm)
	case string(comm) == "sftp-server":
		p.comm = "sftp-server"
	default:
		return p, false, nil
	}
	p.zombie = state == 'Z' || state == 'X'
	if !p.zombie && p.comm != "sftp-server" {
		if n, err := w.readAt(dirfd, string(append(pname, "/cmdline"...))); err == nil {
			raw := cmdlineString(w.buf[:n])
			p.title, p.titled = ParseTitle(raw)
			if p.titled && p.title.Role == RoleListener {
				p.rawTitle = raw
			}
		} else if isPermission(err) {
			p.unreadableTitle = true
		}
	}
	return p, true, nil
}

func atoiPID(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
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
		total += n
		// A short read is the end of a /proc file: skip the extra read
		// that would return 0 (syscalls dominate a scan's cost).
		if n == 0 || total < len(w.buf) {
			break
		}
	}
	return total, nil
}

func isPermission(err error) bool {
	return errors.Is(err, fs.ErrPermission) // EACCES and EPERM too
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
