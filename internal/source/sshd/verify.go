package sshd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A process title is text its process chose: any user can run
// `exec -a 'sshd: root [priv]' ./sshd` (a copy of sleep, named so that its
// comm starts with "sshd"). So a title is believed only for a process the
// kernel says runs a real sshd, as root:
//
//   - the monitor of a connection and the listener run as root: real and
//     effective uid 0 in /proc/PID/status. (The pre-authentication child
//     and the user child drop privileges; they are not checked, they are
//     believed as children of a verified monitor, which only sshd forks.)
//   - their executable, stat(2) of /proc/PID/exe (the running file even
//     after it was deleted), is a regular file owned by root and writable
//     by nobody else, whose name (the link text, less the " (deleted)" an
//     upgrade leaves) is one of sshdPrograms, in a directory owned by root
//     and writable by nobody else. Only root can have put such a file
//     there; a copy in a user's directory, or a root-owned file hard-linked
//     into one, fails.
//
// A process titled as a monitor or listener that fails is reported in an
// unverified_sshd warning and never counted. Without root the executable
// of root's processes cannot be read (EACCES); the uid check still holds,
// and the snapshot says that executables were not checked.

// sshdPrograms are the file names of OpenSSH's server programs: sshd, and
// from 9.8 the per-connection sshd-session and from 10.0 sshd-auth.
var sshdPrograms = []string{"sshd", "sshd-session", "sshd-auth"}

// deletedSuffix is what the kernel appends to /proc/PID/exe's link text
// when the file was deleted (or replaced by a package upgrade).
const deletedSuffix = " (deleted)"

// fileInfo is the part of stat(2) that verification uses.
type fileInfo struct {
	uid  uint32
	mode uint32 // st_mode: type and permission bits
}

func (f fileInfo) regular() bool { return f.mode&unix.S_IFMT == unix.S_IFREG }
func (f fileInfo) dir() bool     { return f.mode&unix.S_IFMT == unix.S_IFDIR }

// rootOnly reports whether only root can change the file: owned by root,
// not writable by group or others.
func (f fileInfo) rootOnly() bool { return f.uid == 0 && f.mode&0o022 == 0 }

// inspector is the OS boundary of verification: what a process runs, and
// directories on the host. Live, the kernel answers; for a procfs-shaped
// fixture tree, the recorded files in it do.
type inspector interface {
	// exe returns /proc/PID/exe's link text and the stat of the file it
	// leads to.
	exe(pid int) (link string, fi fileInfo, err error)
	// dir returns lstat(2) of a directory of the host.
	dir(path string) (fileInfo, error)
}

// liveInspector reads a real procfs mounted at root.
type liveInspector struct{ root string }

func (l liveInspector) exe(pid int) (string, fileInfo, error) {
	p := l.root + "/" + strconv.Itoa(pid) + "/exe"
	link, err := os.Readlink(p)
	if err != nil {
		return "", fileInfo{}, err
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return "", fileInfo{}, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	return link, fileInfo{uid: st.Uid, mode: st.Mode}, nil
}

func (liveInspector) dir(p string) (fileInfo, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fileInfo{}, &fs.PathError{Op: "lstat", Path: p, Err: err}
	}
	return fileInfo{uid: st.Uid, mode: st.Mode}, nil
}

// HostFilesName is the file of a procfs-shaped fixture tree that stands in
// for stat(2) of the host files its exe links name: one line per file,
// "MODE UID PATH" (MODE: st_mode in octal, with the type bits). A
// process's executable is looked up by its exe link text (which may end
// in " (deleted)"), a directory by its path. scripts/record-proc.sh
// writes it.
const HostFilesName = "host-files"

// fixtureInspector reads a procfs-shaped fixture tree: exe links are
// symlinks whose text is the recorded link, and HostFilesName has the
// stat of the files they name. The file is read at the first lookup.
type fixtureInspector struct {
	root   string
	loaded bool
	files  map[string]fileInfo
	err    error
}

func (x *fixtureInspector) load() {
	if x.loaded {
		return
	}
	x.loaded = true
	x.files = map[string]fileInfo{}
	f, err := os.Open(x.root + "/" + HostFilesName)
	if errors.Is(err, fs.ErrNotExist) {
		return // nothing recorded: no executable verifies
	}
	if err != nil {
		x.err = fmt.Errorf("read %s: %w", HostFilesName, err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		var mode, uid uint64
		var err1, err2 error
		if len(f) == 3 {
			mode, err1 = strconv.ParseUint(f[0], 8, 32)
			uid, err2 = strconv.ParseUint(f[1], 10, 32)
		}
		if len(f) != 3 || err1 != nil || err2 != nil {
			x.err = fmt.Errorf("parse %s: bad line %q", HostFilesName, line)
			return
		}
		x.files[f[2]] = fileInfo{uid: uint32(uid), mode: uint32(mode)}
	}
	if err := sc.Err(); err != nil {
		x.err = fmt.Errorf("read %s: %w", HostFilesName, err)
	}
}

func (x *fixtureInspector) exe(pid int) (string, fileInfo, error) {
	x.load()
	if x.err != nil {
		return "", fileInfo{}, x.err
	}
	link, err := os.Readlink(x.root + "/" + strconv.Itoa(pid) + "/exe")
	if err != nil {
		return "", fileInfo{}, err
	}
	fi, ok := x.files[link]
	if !ok {
		return "", fileInfo{}, fmt.Errorf("stat %s: not in the tree's %s", link, HostFilesName)
	}
	return link, fi, nil
}

func (x *fixtureInspector) dir(p string) (fileInfo, error) {
	x.load()
	if x.err != nil {
		return fileInfo{}, x.err
	}
	fi, ok := x.files[p]
	if !ok {
		return fileInfo{}, &fs.PathError{Op: "lstat", Path: p, Err: fs.ErrNotExist}
	}
	return fi, nil
}

// verdict is what verification found out about one process.
type verdict struct {
	// ok: the process may be believed.
	ok bool
	// unchecked: ok, but its executable could not be read (not root).
	unchecked bool
	// gone: the process vanished while being looked at.
	gone bool
	// uid is the real uid (-1: unknown); exe the executable's link text.
	uid int
	exe string
	// why says what failed.
	why string
}

// exeVerdict checks a process's executable (not its uids): see the rule
// at the top of this file. dirs caches directory checks for one walk.
func exeVerdict(in inspector, pid int, names []string, dirs map[string]bool) verdict {
	v := verdict{uid: -1}
	link, fi, err := in.exe(pid)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		v.gone, v.why = true, "no executable (exited)"
		return v
	case isPermission(err):
		v.ok, v.unchecked = true, true
		return v
	default:
		v.why = "executable unreadable: " + err.Error()
		return v
	}
	v.exe = link
	p := strings.TrimSuffix(link, deletedSuffix)
	switch {
	case !path.IsAbs(p):
		v.why = "executable " + link + " has no path"
	case !fi.regular():
		v.why = "executable " + link + " is not a regular file"
	case !fi.rootOnly():
		v.why = fmt.Sprintf("executable %s is owned by uid %d or writable by others", link, fi.uid)
	case !isOneOf(path.Base(p), names):
		v.why = "executable " + link + " is not " + strings.Join(names, ", ")
	default:
		d := path.Dir(p)
		ok, seen := dirs[d]
		if !seen {
			di, err := in.dir(d)
			ok = err == nil && di.dir() && di.rootOnly()
			dirs[d] = ok
		}
		if !ok {
			v.why = "directory " + d + " of executable " + link + " is not root's alone"
			return v
		}
		v.ok = true
	}
	return v
}

// rootVerdict checks a process that must run as root with an sshd
// executable (a monitor or a listener). status is /proc/PID/status.
func rootVerdict(in inspector, pid int, status []byte, dirs map[string]bool) verdict {
	real, eff, ok := statusUIDs(status)
	if !ok {
		return verdict{uid: -1, why: "no uids in /proc/PID/status"}
	}
	v := exeVerdict(in, pid, sshdPrograms, dirs)
	v.uid = real
	if v.ok && (real != 0 || eff != 0) {
		v.ok, v.unchecked = false, false
		v.why = fmt.Sprintf("runs as uid %d (effective %d), not root", real, eff)
	}
	return v
}

// statusUIDs returns the real and effective uid of a /proc/PID/status
// text ("Uid:\treal\teffective\tsaved\tfs").
func statusUIDs(b []byte) (real, eff int, ok bool) {
	i := bytes.Index(b, []byte("\nUid:"))
	if i < 0 {
		return 0, 0, false
	}
	line := b[i+len("\nUid:"):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := strings.Fields(string(line))
	if len(f) < 2 {
		return 0, 0, false
	}
	r, err1 := strconv.Atoi(f[0])
	e, err2 := strconv.Atoi(f[1])
	return r, e, err1 == nil && err2 == nil
}

func isOneOf(s string, set []string) bool {
	for _, x := range set {
		if s == x {
			return true
		}
	}
	return false
}
