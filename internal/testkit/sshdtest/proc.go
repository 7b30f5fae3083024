package sshdtest

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// This file reads /proc with the standard library only, on purpose: the
// harness is an independent oracle for the code under test, which reads
// /proc through its own parsers.

// Proc is one process of a Server's tree as /proc shows it.
type Proc struct {
	PID   int
	PPID  int
	State string // "R", "S", "T", "Z", ... from /proc/PID/stat
	Title string // /proc/PID/cmdline as ps -o args shows it (setproctitle)
	start uint64 // start time in clock ticks, tells a reused pid apart
}

// procStat is the part of /proc/PID/stat the harness needs.
type procStat struct {
	pid, ppid, sid int
	state          string
	start          uint64
}

// readStat reads /proc/PID/stat. The comm field may hold spaces and
// parentheses, so fields are counted from its last ')'.
func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return procStat{}, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse stat of %d: no comm", pid)
	}
	// After ")": state(3) ppid(4) pgrp(5) session(6) ... starttime(22).
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return procStat{}, fmt.Errorf("parse stat of %d: %d fields", pid, len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, fmt.Errorf("parse ppid of %d: %w", pid, err)
	}
	sid, err := strconv.Atoi(f[3])
	if err != nil {
		return procStat{}, fmt.Errorf("parse session of %d: %w", pid, err)
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse start time of %d: %w", pid, err)
	}
	return procStat{pid: pid, ppid: ppid, sid: sid, state: f[0], start: start}, nil
}

// readTitle reads /proc/PID/cmdline the way ps -o args shows it.
func readTitle(pid int) string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(bytes.TrimRight(b, "\x00")), "\x00", " "))
}

// allStats reads the stat of every process; processes that vanish while
// it reads are left out.
func allStats() (map[int]procStat, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	out := make(map[int]procStat, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		out[pid] = st
	}
	return out, nil
}

// descendants returns every descendant of root in stats, parents before
// children, root itself not included.
func descendants(stats map[int]procStat, root int) []procStat {
	children := map[int][]int{}
	for pid, st := range stats {
		children[st.ppid] = append(children[st.ppid], pid)
	}
	var out []procStat
	queue := []int{root}
	seen := map[int]bool{root: true}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if seen[c] {
				continue
			}
			seen[c] = true
			out = append(out, stats[c])
			queue = append(queue, c)
		}
	}
	return out
}

// same tells whether pid still names the process recorded in st.
func same(st procStat) (procStat, bool) {
	now, err := readStat(st.pid)
	if err != nil || now.start != st.start {
		return procStat{}, false
	}
	return now, true
}

var subreaperOnce sync.Once

// becomeSubreaper makes this (test) process adopt the orphans of its
// descendants, so that sshd children killed after their parent can be
// reaped here: PID 1 on the machines this runs on does not reap.
func becomeSubreaper() {
	subreaperOnce.Do(func() {
		// Best effort: without it, zombies are left to PID 1.
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	})
}

// reapAdopted reaps zombie children of this process that it provably
// did not fork: their session is neither this process's nor their own (a
// process forked here starts in this session and can only leave it by
// becoming a session leader). Such zombies are orphans adopted through
// the subreaper flag, e.g. sshd children whose monitor exited first, and
// no os/exec Wait is waiting for them.
func reapAdopted() {
	self := os.Getpid()
	mySID, err := unix.Getsid(0)
	if err != nil {
		return
	}
	stats, err := allStats()
	if err != nil {
		return
	}
	for pid, st := range stats {
		if st.ppid == self && st.state == "Z" && st.sid != mySID && st.sid != pid {
			var ws unix.WaitStatus
			_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// sessionLeftovers returns the live processes whose environment says they
// were started by an SSH session to addr:port (SSH_CONNECTION ends
// in " ADDR PORT"), in sshd's network namespace netNS: commands that
// outlived their connection, which sshd does not kill for sessions
// without a pty. For an sshd on every address (0.0.0.0, ::) any server
// address on port counts, but only in netNS, and only if it is known: a
// port alone would also match sessions of the machine's own sshd.
func sessionLeftovers(addr string, port int, netNS string) []procStat {
	wildcard := addr == "0.0.0.0" || addr == "::"
	if wildcard && netNS == "" {
		return nil
	}
	stats, err := allStats()
	if err != nil {
		return nil
	}
	portField := []byte(strconv.Itoa(port))
	var out []procStat
	for pid, st := range stats {
		if st.state == "Z" {
			continue
		}
		dir := filepath.Join("/proc", strconv.Itoa(pid))
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			v, ok := bytes.CutPrefix(kv, []byte("SSH_CONNECTION="))
			if !ok {
				continue
			}
			// CLIENT_ADDR CLIENT_PORT SERVER_ADDR SERVER_PORT
			f := bytes.Fields(v)
			if len(f) != 4 || !bytes.Equal(f[3], portField) || (!wildcard && string(f[2]) != addr) {
				break
			}
			if ns, _ := os.Readlink(filepath.Join(dir, "ns", "net")); netNS != "" && ns != netNS {
				break
			}
			out = append(out, st)
			out = append(out, descendants(stats, pid)...)
			break
		}
	}
	return out
}

// freezeTree stops root and all its descendants with SIGSTOP, rescanning
// until no new descendant appears (a stopped process cannot fork), and
// returns the descendants. Bounded to 50 rounds.
func freezeTree(root int) []procStat {
	_ = syscall.Kill(root, syscall.SIGSTOP)
	known := map[int]procStat{}
	var order []procStat
	for range 50 {
		stats, err := allStats()
		if err != nil {
			break
		}
		grew := false
		for _, st := range descendants(stats, root) {
			if _, ok := known[st.pid]; ok {
				continue
			}
			known[st.pid] = st
			order = append(order, st)
			_ = syscall.Kill(st.pid, syscall.SIGSTOP)
			grew = true
		}
		if !grew {
			break
		}
	}
	return order
}

// killAndReap sends SIGKILL to every process in procs that is still the
// recorded process, then polls (bounded by timeout) until each is gone or
// a zombie it cannot reap: zombies adopted by this process are reaped,
// zombies of PID 1 are left (expected where PID 1 does not reap). It
// returns a description of the processes still alive at the deadline.
func killAndReap(procs []procStat, timeout time.Duration) []string {
	self := os.Getpid()
	pending := append([]procStat(nil), procs...)
	if poll(timeout, func() bool {
		var next []procStat
		for _, st := range pending {
			now, ok := same(st)
			if !ok {
				continue
			}
			if now.state != "Z" {
				_ = syscall.Kill(st.pid, syscall.SIGKILL)
				next = append(next, st)
				continue
			}
			switch now.ppid {
			case self:
				var ws unix.WaitStatus
				if _, err := unix.Wait4(st.pid, &ws, unix.WNOHANG, nil); err != nil && !errors.Is(err, unix.ECHILD) {
					next = append(next, st)
				}
			case 1, 0:
				// Adopted by a PID 1 that does not reap: nothing to do.
			default:
				// Its parent (killed too) reaps it or hands it to us.
				next = append(next, st)
			}
		}
		pending = next
		return len(pending) == 0
	}) {
		return nil
	}
	var out []string
	for _, st := range pending {
		now, _ := same(st)
		out = append(out, fmt.Sprintf("%d (%s, parent %d) %q", st.pid, now.state, now.ppid, readTitle(st.pid)))
	}
	return out
}

// socketInodes returns the inodes of the sockets the processes hold open.
func socketInodes(pids []int) map[uint64]bool {
	out := map[uint64]bool{}
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			l, err := os.Readlink(filepath.Join(dir, e.Name()))
			if err != nil {
				continue
			}
			s, ok := strings.CutPrefix(l, "socket:[")
			if !ok {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
			if err == nil {
				out[ino] = true
			}
		}
	}
	return out
}

// tcpEntry is one row of /proc/net/tcp.
type tcpEntry struct {
	local, remote sockAddr
	state         int
	inode         uint64
}

type sockAddr struct {
	ip   net.IP
	port int
}

const (
	tcpEstablished = 0x01
	tcpListen      = 0x0A
)

// readTCP4 parses an IPv4 /proc/net/tcp table.
func readTCP4(path string) ([]tcpEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open tcp table: %w", err)
	}
	defer f.Close()
	var out []tcpEntry
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 10 {
			continue
		}
		local, err1 := parseAddr4(fl[1])
		remote, err2 := parseAddr4(fl[2])
		state, err3 := strconv.ParseInt(fl[3], 16, 32)
		ino, err4 := strconv.ParseUint(fl[9], 10, 64)
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("parse %s line %q: %w", path, sc.Text(), err)
		}
		out = append(out, tcpEntry{local: local, remote: remote, state: int(state), inode: ino})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// parseAddr4 parses "0100007F:1F90": the address is a 32-bit word in host
// byte order, the port is big-endian hex.
func parseAddr4(s string) (sockAddr, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok || len(h) != 8 {
		return sockAddr{}, fmt.Errorf("parse address %q: %w", s, errBadAddr)
	}
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return sockAddr{}, fmt.Errorf("parse address %q: %w", s, err)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return sockAddr{}, fmt.Errorf("parse port %q: %w", s, err)
	}
	ip := make(net.IP, 4)
	binary.NativeEndian.PutUint32(ip, uint32(v))
	return sockAddr{ip: ip, port: int(port)}, nil
}

var errBadAddr = errors.New("bad address")

// tcpOf returns the TCP rows, in pid's network namespace, of sockets the
// given processes hold.
func tcpOf(nsPID int, pids []int) ([]tcpEntry, error) {
	inodes := socketInodes(pids)
	rows, err := readTCP4(filepath.Join("/proc", strconv.Itoa(nsPID), "net", "tcp"))
	if err != nil {
		return nil, err
	}
	var out []tcpEntry
	for _, r := range rows {
		if inodes[r.inode] {
			out = append(out, r)
		}
	}
	return out, nil
}
