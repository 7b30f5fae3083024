package sshd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

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
// again on every walk until a read finds it older than youngAge (so also
// when walks are further apart than that), and every process is read
// again at every pass the caller asks to read all (Source: every
// fullEvery, or eventRereadEvery while process events come).
//
// sshd processes themselves are remembered too, to read only their
// title (which changes) and not their stat (which does not, but for the
// parent after a reparenting): a remembered one is read whole again when
// its title is gone or no longer an sshd title (exit, exec), and when its
// parent's /proc directory is not the one it had.
type procWalker struct {
	reader
	// insp answers what processes run (verify.go).
	insp  inspector
	dirs  map[string]bool
	dents []byte
	known map[int]knownProc
	cands map[int]candProc
	// seen maps the PIDs of this walk to their /proc directory inodes.
	seen    map[int]uint64
	lastAll time.Time
	// todo and done are a walk's processes to read whole and what the
	// reads found; helpers are the readers of the goroutines that share
	// a long list (a first walk reads every process).
	todo    []dent
	done    []readResult
	helpers []reader
	// kids holds a children file; queue and under are rescan's work list
	// and the PIDs it found below a verified process.
	kids  []byte
	queue []int
	under map[int]bool
	// noChildren is set when the kernel has no children files
	// (CONFIG_PROC_CHILDREN): rescan cannot find new processes.
	noChildren bool
}

// reader reads files of /proc with one reused buffer; one goroutine
// uses it at a time.
type reader struct {
	buf []byte
	// path builds the NUL-terminated relative paths of openat, so that
	// reading a process allocates nothing.
	path []byte
	// kept holds the processes of interest that readRange found.
	kept []proc
}

func newReader() reader { return reader{buf: make([]byte, readBufSize), path: make([]byte, 0, 64)} }

// dent is a process directory of a walk.
type dent struct {
	pid int
	ino uint64
}

// readResult is what readProc found out about a process of w.todo: for
// one of interest (keep), the process is kept[k] of the reader that read
// it (0: the walker's own, i: helpers[i-1]); else its start time.
type readResult struct {
	start uint64
	err   error
	keep  bool
	r     uint8
	k     int32
}

// candProc is a remembered sshd process.
type candProc struct {
	ino       uint64
	parentIno uint64
	p         proc
}

// knownProc is a remembered process that is of no interest. settled:
// it was older than youngAge when it was read, so it is not read again
// until the next pass that reads every process.
type knownProc struct {
	ino     uint64
	settled bool
}

const (
	readBufSize = 8 << 10
	youngAge    = 10 * time.Second
	fullEvery   = time.Minute
)

func newProcWalker(insp inspector) *procWalker {
	return &procWalker{reader: newReader(), insp: insp, dirs: map[string]bool{}, dents: make([]byte, 64<<10),
		known: map[int]knownProc{}, cands: map[int]candProc{}, seen: map[int]uint64{}, under: map[int]bool{}}
}

// walk lists the processes under root that matter to sshd detection. now
// and uptime decide which remembered processes are old enough to skip;
// every fullEvery every process is read again. uptime is the time since
// boot (for the live /proc, CLOCK_BOOTTIME, which wall-clock steps do
// not move).
func (w *procWalker) walk(root string, now time.Time, uptime, fullEvery time.Duration) (procTable, error) {
	var tab procTable
	dirfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return tab, fmt.Errorf("open proc root %s: %w", root, err)
	}
	defer unix.Close(dirfd)
	full := now.Sub(w.lastAll) >= fullEvery || now.Before(w.lastAll)
	if full {
		w.lastAll = now
	}
	// Directory checks are believed for one walk and the rescans after it.
	clear(w.dirs)
	clear(w.seen)
	// Ticks after boot before which a process is old enough to trust.
	oldTicks := uint64(0)
	if age := uptime - youngAge; age > 0 {
		oldTicks = uint64(age / (time.Second / userHZ))
	}
	var name [24]byte
	var fast []int // indexes in tab.procs read by title only
	w.todo = w.todo[:0]
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
			if k, ok := w.known[pid]; ok && !full && k.ino == ino && k.settled {
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
			w.todo = append(w.todo, dent{pid, ino})
		}
	}
	// The processes to read whole: every process on a first walk, so
	// goroutines share a long list.
	w.readAll(dirfd)
	for i, d := range w.todo {
		pid, ino, r := d.pid, d.ino, w.done[i]
		if r.err != nil {
			if isPermission(r.err) {
				tab.unreadable++
			}
			delete(w.known, pid)
			delete(w.cands, pid)
			continue
		}
		if !r.keep {
			w.known[pid] = knownProc{ino: ino, settled: r.start < oldTicks}
			delete(w.cands, pid)
			continue
		}
		rd := &w.reader
		if r.r > 0 {
			rd = &w.helpers[r.r-1]
		}
		p := rd.kept[r.k]
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
	// A process whose parent's /proc directory changed may have been
	// reparented: read its stat again.
	for _, i := range fast {
		p := tab.procs[i]
		c := w.cands[p.pid]
		if w.seen[p.ppid] == c.parentIno {
			continue
		}
		np, keep, err := w.readProc(dirfd, p.pid, strconv.AppendInt(name[:0], int64(p.pid), 10))
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
	// In PID order, as /proc lists them.
	slices.SortFunc(tab.procs, func(a, b proc) int { return a.pid - b.pid })
	if cap(w.todo) > parallelFrom {
		// A first walk's lists are not kept between scans: the next
		// walks read a few processes.
		w.todo, w.done, w.helpers = nil, nil, nil
	}
	w.verify(dirfd, &tab)
	return tab, nil
}

// parallelFrom is the length of a walk's list of processes to read from
// which goroutines share it.
const parallelFrom = 1024

// readAll reads the processes of w.todo into w.done: on this goroutine
// for a short list, else on up to 4 (GOMAXPROCS), each with a reader of
// its own (a first walk of 10,000 processes is 30,000 system calls).
func (w *procWalker) readAll(dirfd int) {
	w.done = slices.Grow(w.done[:0], len(w.todo))[:len(w.todo)]
	w.kept = w.kept[:0]
	workers := min(runtime.GOMAXPROCS(0), 4)
	if len(w.todo) < parallelFrom || workers < 2 {
		w.readRange(&w.reader, 0, dirfd, 0, len(w.todo))
		return
	}
	for len(w.helpers) < workers-1 {
		w.helpers = append(w.helpers, newReader())
	}
	per := (len(w.todo) + workers - 1) / workers
	var wg sync.WaitGroup
	for i := range workers - 1 {
		from, to := (i+1)*per, min((i+2)*per, len(w.todo))
		if from >= to {
			break
		}
		h := &w.helpers[i]
		h.kept = h.kept[:0]
		wg.Go(func() { w.readRange(h, uint8(i+1), dirfd, from, to) })
	}
	w.readRange(&w.reader, 0, dirfd, 0, min(per, len(w.todo)))
	wg.Wait()
}

// readRange reads w.todo[from:to] with reader r, number ri.
func (w *procWalker) readRange(r *reader, ri uint8, dirfd, from, to int) {
	var name [24]byte
	for i := from; i < to; i++ {
		d := w.todo[i]
		p, keep, err := r.readProc(dirfd, d.pid, strconv.AppendInt(name[:0], int64(d.pid), 10))
		res := readResult{start: p.start, err: err, keep: keep && err == nil, r: ri}
		if res.keep {
			res.k = int32(len(r.kept))
			r.kept = append(r.kept, p)
		}
		w.done[i] = res
	}
}

// errNoChildren: the kernel has no /proc/PID/task/TID/children files
// (CONFIG_PROC_CHILDREN), so rescan cannot find new processes.
var errNoChildren = errors.New("no children files in procfs")

// rescan lists the same processes as walk, looking only at the sshd
// process trees instead of every process of the machine: the remembered
// sshd processes (of the last walk or rescan) and, read from their
// /proc/PID/task/PID/children, the children of the verified ones, and of
// the sshd processes found below them, down the trees. A new connection
// is a child of its listener and its processes are children of its
// monitor, so a rescan finds them; what it cannot find is a process that
// no verified sshd process forked: a listener started since the last
// walk, an inetd or socket-activated "sshd -i", an impostor. The caller
// walks for those, on a slower schedule.
func (w *procWalker) rescan(root string) (procTable, error) {
	var tab procTable
	if w.noChildren {
		return tab, errNoChildren
	}
	dirfd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return tab, fmt.Errorf("open proc root %s: %w", root, err)
	}
	defer unix.Close(dirfd)
	w.queue = w.queue[:0]
	for pid := range w.cands {
		w.queue = append(w.queue, pid)
	}
	slices.Sort(w.queue)
	clear(w.seen)
	clear(w.under)
	var name [24]byte
	for i := 0; i < len(w.queue); i++ {
		pid := w.queue[i]
		if _, done := w.seen[pid]; done {
			continue
		}
		w.seen[pid] = 0
		pname := strconv.AppendInt(name[:0], int64(pid), 10)
		c, known := w.cands[pid]
		p, keep, perr := w.readProc(dirfd, pid, pname)
		if perr != nil || !keep {
			// Exited, or exec'd something else: forgotten (a walk reads
			// it again, and remembers it, if it is still there).
			if perr != nil && isPermission(perr) {
				tab.unreadable++
			}
			delete(w.cands, pid)
			continue
		}
		if known {
			keepVerdict(&p, c.p)
			if p.start != c.p.start {
				c.ino = 0 // a reused PID: not the directory the walk saw
			}
		}
		// Down the tree only through verified sshd processes: a process
		// a user named sshd under their session is no sshd's, and its
		// children are nobody's business.
		descend := !p.zombie && p.comm != "sftp-server" && (p.v.ok || w.under[pid])
		c.p = p
		w.cands[pid] = c
		if descend {
			w.check(dirfd, &p, p.needs()) // updates w.cands
			descend = p.v.ok
		}
		tab.procs = append(tab.procs, p)
		if p.unreadableTitle {
			tab.unreadable++
		}
		if !descend {
			continue
		}
		kids, err := w.children(dirfd, pname)
		if err != nil {
			if errors.Is(err, unix.ENOENT) && w.exists(dirfd, pname) {
				w.noChildren = true
				return tab, errNoChildren
			}
			continue // exited meanwhile
		}
		for len(kids) > 0 {
			var f []byte
			if sp := bytes.IndexByte(kids, ' '); sp >= 0 {
				f, kids = kids[:sp], kids[sp+1:]
			} else {
				f, kids = kids, nil
			}
			if kid, ok := atoiPID(bytes.TrimSpace(f)); ok {
				w.under[kid] = true
				w.queue = append(w.queue, kid)
			}
		}
	}
	w.verify(dirfd, &tab)
	return tab, nil
}

// children reads /proc/PID/task/PID/children: the PIDs of the children of
// the process's main thread (sshd processes have no other), separated by
// spaces. The text lives in w.kids until the next call.
func (w *procWalker) children(dirfd int, pname []byte) ([]byte, error) {
	if w.kids == nil {
		w.kids = make([]byte, 1<<10)
	}
	w.path = append(append(append(append(w.path[:0], pname...), "/task/"...), pname...), "/children"...)
	rel := string(w.path) // a handful of processes a scan: allocating is fine
	for {
		n, err := w.readInto(dirfd, nil, rel, w.kids)
		if err != nil {
			return nil, err
		}
		if n < len(w.kids) {
			return w.kids[:n], nil
		}
		// A listener with thousands of connections: read it all again.
		w.kids = make([]byte, 2*len(w.kids))
	}
}

// exists reports whether process pname's /proc directory is there.
func (w *procWalker) exists(dirfd int, pname []byte) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirfd, string(pname), &st, 0) == nil
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
	if level == rootChecked {
		var name [24]byte
		n, err := w.readAt(dirfd, strconv.AppendInt(name[:0], int64(p.pid), 10), "/status")
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
	n, err := w.readAt(dirfd, pname, "/cmdline")
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
func (w *reader) readProc(dirfd, pid int, pname []byte) (p proc, keep bool, err error) {
	n, err := w.readAt(dirfd, pname, "/stat")
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
		if n, err := w.readAt(dirfd, pname, "/cmdline"); err == nil {
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

// openAt opens the file name ("/stat") of process pname ("1234")
// relative to dirfd. Unlike unix.Openat it allocates nothing: it is
// called for every process of the machine on a full pass.
func (w *reader) openAt(dirfd int, pname []byte, name string) (int, error) {
	w.path = append(append(append(w.path[:0], pname...), name...), 0)
	for {
		fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, uintptr(dirfd), uintptr(unsafe.Pointer(&w.path[0])),
			uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
		switch errno {
		case 0:
			return int(fd), nil
		case unix.EINTR:
			continue
		}
		return -1, errno
	}
}

// readAt reads the small file name of process pname into w.buf.
func (w *reader) readAt(dirfd int, pname []byte, name string) (int, error) {
	return w.readInto(dirfd, pname, name, w.buf)
}

// readInto reads the file name of process pname into buf, as much as
// fits.
func (w *reader) readInto(dirfd int, pname []byte, name string, buf []byte) (int, error) {
	fd, err := w.openAt(dirfd, pname, name)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	total := 0
	for total < len(buf) {
		n, err := unix.Read(fd, buf[total:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, err
		}
		total += n
		// A short read is the end of a /proc file: skip the extra read
		// that would return 0 (syscalls dominate a scan's cost).
		if n == 0 || total < len(buf) {
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
