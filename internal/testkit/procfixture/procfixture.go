// Package procfixture writes procfs-shaped directory trees for tests and
// benchmarks: /PID/stat, /PID/cmdline, /PID/status, /PID/exe (a symlink
// whose text is what the kernel's link would read), /PID/fd/N ->
// socket:[INODE], /PID/task/PID/children (the children's PIDs), net/tcp,
// net/tcp6 and stat (boot time), so code that
// reads /proc can be pointed at a recorded or generated machine state
// with --proc DIR. The host files that exe links name cannot be part of
// the tree (owners do not survive git): the file host-files stands in for
// their stat(2), one "MODE UID PATH" line each (MODE in octal with the
// type bits), for executables by link text and for their directories.
package procfixture

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Proc is one process.
type Proc struct {
	PID, PPID int
	// State is the stat state letter; default 'S'. 'Z' makes a zombie.
	State byte
	// Comm is the executable name (stat field 2).
	Comm string
	// Title is the cmdline text (setproctitle writes one string).
	Title string
	// StartTicks is the start time in clock ticks after boot.
	StartTicks uint64
	// Sockets maps fd numbers to socket inodes.
	Sockets map[int]uint64
	// UnreadableFDs makes the fd directory mode 0 (as for another user's
	// process without root).
	UnreadableFDs bool
	// UID is the real, effective, saved and filesystem uid in status;
	// default 0 (root).
	UID int
	// Exe is the text of the exe link. Empty: the Debian path of an
	// OpenSSH program named by Comm (sshd: /usr/sbin/sshd; sshd-session,
	// sshd-auth, sftp-server: /usr/lib/openssh/COMM), else no link.
	// "-": no link (a kernel thread, or a process that exited). Zombies
	// never have one.
	Exe string
}

// DefaultExe returns the executable Proc.Exe defaults to for a program
// name, "" for none.
func DefaultExe(comm string) string {
	switch comm {
	case "sshd":
		return "/usr/sbin/sshd"
	case "sshd-session", "sshd-auth", "sftp-server":
		return "/usr/lib/openssh/" + comm
	}
	return ""
}

// File is the stat(2) of a host file that an exe link names, or of its
// directory.
type File struct {
	// Mode is st_mode: type and permission bits (0o100755, 0o40755).
	Mode uint32
	UID  int
}

// RootBinary and RootDir are the files of a packaged program: owned by
// root and writable by root alone.
var (
	RootBinary = File{Mode: 0o100755, UID: 0}
	RootDir    = File{Mode: 0o40755, UID: 0}
)

// TCP is one row of net/tcp or net/tcp6.
type TCP struct {
	Local, Remote string // "127.0.0.1:22"; "[::1]:22" goes to tcp6
	State         int    // 1 established, 10 listen
	Inode         uint64
}

// Tree is a fixture machine.
type Tree struct {
	BootTime int64
	Procs    []Proc
	TCP      []TCP
	// MountInfo, when set, is written as self/mountinfo.
	MountInfo string
	// HostFiles are written to host-files, keyed by path (an exe link's
	// text, or a directory). The executables that Proc.Exe defaults to
	// and their directories are root's (RootBinary, RootDir) unless
	// listed here.
	HostFiles map[string]File
}

// HostFilesName is the file of a tree that stands in for stat(2) of the
// host files its exe links name.
const HostFilesName = "host-files"

// Write writes the tree below dir, which must exist.
func (t Tree) Write(dir string) error {
	procs := append([]Proc(nil), t.Procs...)
	sort.Slice(procs, func(i, j int) bool { return procs[i].PID < procs[j].PID })
	for _, p := range procs {
		if err := writeProc(dir, p); err != nil {
			return err
		}
	}
	// Each process is listed in its parent's children file, also when
	// the parent was written before (more processes written into a tree).
	for _, p := range procs {
		if err := addChild(dir, p.PPID, p.PID); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "net"), 0o755); err != nil {
		return err
	}
	var v4, v6 []TCP
	for _, c := range t.TCP {
		if strings.HasPrefix(c.Local, "[") {
			v6 = append(v6, c)
		} else {
			v4 = append(v4, c)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "net", "tcp"), tcpTable(v4, false), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "net", "tcp6"), tcpTable(v6, true), 0o644); err != nil {
		return err
	}
	stat := fmt.Sprintf("cpu  1 0 1 100 0 0 0 0 0 0\ncpu0 1 0 1 100 0 0 0 0 0 0\nintr 0\nctxt 0\nbtime %d\nprocesses %d\nprocs_running 1\nprocs_blocked 0\nsoftirq 0\n", t.BootTime, len(procs))
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		return err
	}
	// Writing more processes into a tree keeps the files it named.
	files, err := readHostFiles(filepath.Join(dir, HostFilesName))
	if err != nil {
		return err
	}
	for _, p := range procs {
		if p.Exe == "" && p.State != 'Z' {
			if exe := DefaultExe(p.Comm); exe != "" {
				files[exe] = RootBinary
				files[filepath.Dir(exe)] = RootDir
			}
		}
	}
	for path, f := range t.HostFiles {
		files[path] = f
	}
	paths := make([]string, 0, len(files))
	for path := range files {
		paths = append(paths, path)
	}
	sort.Strings(paths)
	var hf strings.Builder
	for _, path := range paths {
		fmt.Fprintf(&hf, "%o %d %s\n", files[path].Mode, files[path].UID, path)
	}
	if err := os.WriteFile(filepath.Join(dir, HostFilesName), []byte(hf.String()), 0o644); err != nil {
		return err
	}
	if t.MountInfo != "" {
		if err := os.MkdirAll(filepath.Join(dir, "self"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "self", "mountinfo"), []byte(t.MountInfo), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// readHostFiles reads a host-files file; a missing one is empty.
func readHostFiles(path string) (map[string]File, error) {
	files := map[string]File{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return files, nil
	}
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 {
			continue
		}
		mode, err1 := strconv.ParseUint(f[0], 8, 32)
		uid, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			files[f[2]] = File{Mode: uint32(mode), UID: uid}
		}
	}
	return files, nil
}

func writeProc(dir string, p Proc) error {
	pd := filepath.Join(dir, fmt.Sprint(p.PID))
	if err := os.MkdirAll(filepath.Join(pd, "fd"), 0o755); err != nil {
		return err
	}
	// Every process has a children file, empty without children.
	if err := os.MkdirAll(filepath.Join(pd, "task", fmt.Sprint(p.PID)), 0o755); err != nil {
		return err
	}
	if _, err := os.Stat(childrenFile(dir, p.PID)); errors.Is(err, fs.ErrNotExist) {
		if err := os.WriteFile(childrenFile(dir, p.PID), nil, 0o644); err != nil {
			return err
		}
	}
	state := p.State
	if state == 0 {
		state = 'S'
	}
	// Fields after comm: state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime cutime cstime priority nice
	// num_threads itrealvalue starttime vsize rss ...
	stat := fmt.Sprintf("%d (%s) %c %d %d %d 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 10000000 500 18446744073709551615 0 0 0 0 0 0 0 4096 81925 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
		p.PID, p.Comm, state, p.PPID, p.PID, p.PID, p.StartTicks)
	if err := os.WriteFile(filepath.Join(pd, "stat"), []byte(stat), 0o644); err != nil {
		return err
	}
	cmdline := ""
	if state != 'Z' && p.Title != "" {
		cmdline = p.Title + "\x00"
	}
	if err := os.WriteFile(filepath.Join(pd, "cmdline"), []byte(cmdline), 0o644); err != nil {
		return err
	}
	status := fmt.Sprintf("Name:\t%s\nUmask:\t0022\nState:\t%c\nTgid:\t%d\nPid:\t%d\nPPid:\t%d\nUid:\t%d\t%d\t%d\t%d\nGid:\t%d\t%d\t%d\t%d\n",
		p.Comm, state, p.PID, p.PID, p.PPID, p.UID, p.UID, p.UID, p.UID, p.UID, p.UID, p.UID, p.UID)
	if err := os.WriteFile(filepath.Join(pd, "status"), []byte(status), 0o644); err != nil {
		return err
	}
	exe := p.Exe
	if exe == "" {
		exe = DefaultExe(p.Comm)
	}
	if exe != "" && exe != "-" && state != 'Z' {
		link := filepath.Join(pd, "exe")
		os.Remove(link) // a tree written again over itself
		if err := os.Symlink(exe, link); err != nil {
			return err
		}
	}
	for fd, ino := range p.Sockets {
		if err := os.Symlink(fmt.Sprintf("socket:[%d]", ino), filepath.Join(pd, "fd", fmt.Sprint(fd))); err != nil {
			return err
		}
	}
	if p.UnreadableFDs {
		if err := os.Chmod(filepath.Join(pd, "fd"), 0); err != nil {
			return err
		}
	}
	return nil
}

// childrenFile is the kernel's list of a (single-threaded) process's
// children: /PID/task/PID/children.
func childrenFile(dir string, pid int) string {
	return filepath.Join(dir, fmt.Sprint(pid), "task", fmt.Sprint(pid), "children")
}

// addChild adds child to the children file of parent, when the tree has
// the parent's directory. The file reads as the kernel's: "PID PID ".
func addChild(dir string, parent, child int) error {
	if _, err := os.Stat(filepath.Join(dir, fmt.Sprint(parent))); err != nil {
		return nil // no such parent in the tree (init's parent 0, or not written)
	}
	path := childrenFile(dir, parent)
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	kids := []int{child}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != child {
			kids = append(kids, pid)
		}
	}
	sort.Ints(kids)
	var out strings.Builder
	for _, pid := range kids {
		fmt.Fprintf(&out, "%d ", pid)
	}
	return os.WriteFile(path, []byte(out.String()), 0o644)
}

func tcpTable(rows []TCP, v6 bool) []byte {
	var b strings.Builder
	if v6 {
		b.WriteString("  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
	} else {
		b.WriteString("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
	}
	for i, r := range rows {
		fmt.Fprintf(&b, "%4d: %s %s %02X 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 20 4 30 10 -1\n",
			i, hexAddr(r.Local, v6), hexAddr(r.Remote, v6), r.State, r.Inode)
	}
	return []byte(b.String())
}

// hexAddr encodes "ip:port" the way the kernel prints /proc/net/tcp:
// the address as host-order 32-bit words in hex, then the port.
func hexAddr(hostport string, v6 bool) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		panic(fmt.Sprintf("procfixture: bad address %q: %v", hostport, err))
	}
	var p int
	fmt.Sscan(port, &p)
	ip := net.ParseIP(host)
	var raw []byte
	if v6 {
		raw = ip.To16()
	} else {
		raw = ip.To4()
	}
	var b strings.Builder
	for i := 0; i < len(raw); i += 4 {
		fmt.Fprintf(&b, "%02X%02X%02X%02X", raw[i+3], raw[i+2], raw[i+1], raw[i])
	}
	return fmt.Sprintf("%s:%04X", b.String(), p)
}
