// Package memtrim gives back the pages of connwatch's own executable that
// a long-running process mapped while it started and no longer runs.
//
// A Go process runs every linked package's init before main, and main
// then parses flags and config and builds its parts: code and read-only
// data spread across the whole binary, each fault mapping a run of pages
// around it (64 KiB of fault-around, or a whole large folio on kernels
// that map those at once). The agent and `connwatch tunnel` would keep
// some 15 MB of such pages mapped for their whole life, though their
// steady work touches a few MB. Executable drops this process's mappings
// of the executable's read-only segments with MADV_DONTNEED: what the
// process still runs faults back in from the page cache at once, the rest
// stays in the page cache like any file's unmapped pages (shared with
// other connwatch processes, reclaimable under memory pressure) instead of
// counting in this process's RSS and being held as mapped.
//
// Only mappings of the executable's own inode that are not writable are
// touched: its data and bss, the heap and stacks are left alone. It is
// called once after start-up (and after a config reload), so a debugger's
// breakpoint or a uprobe set later is not affected; one set before it
// would be dropped with the page it patched.
package memtrim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// mapsLimit bounds how much of /proc/self/maps is read: a Go process has
// a few dozen mappings, far below this.
const mapsLimit = 4 << 20

// Result is what one Executable call did.
type Result struct {
	Ranges int   // mappings advised
	Bytes  int64 // their total length
	// RSSBefore and RSSAfter are the process's resident set (VmRSS, in
	// bytes) just before and just after, 0 when unknown.
	RSSBefore, RSSAfter int64
}

// Executable drops this process's mappings of the read-only segments of
// its executable (MADV_DONTNEED) and reports what it did.
func Executable() (Result, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return Result{}, fmt.Errorf("stat executable: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return Result{}, fmt.Errorf("read mappings: %w", err)
	}
	defer f.Close()
	ranges, err := readOnlyMappings(io.LimitReader(f, mapsLimit), uint64(st.Dev), st.Ino)
	if err != nil {
		return Result{}, fmt.Errorf("read mappings: %w", err)
	}
	if len(ranges) == 0 {
		return Result{}, errors.New("read mappings: no read-only mapping of the executable")
	}
	res := Result{Ranges: len(ranges), RSSBefore: rss()}
	for _, r := range ranges {
		// The raw call: the range is a mapping, not Go memory to make a
		// slice of.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED); errno != 0 {
			return res, fmt.Errorf("madvise %#x-%#x: %w", r.start, r.end, errno)
		}
		res.Bytes += int64(r.end - r.start)
	}
	res.RSSAfter = rss()
	return res, nil
}

type span struct{ start, end uintptr }

// readOnlyMappings parses /proc/PID/maps text and returns the mappings of
// the file dev:ino that are neither writable nor shared. Lines look like
//
//	00400000-00b83000 r-xp 00000000 fe:01 1234567   /usr/bin/connwatch
func readOnlyMappings(r io.Reader, dev, ino uint64) ([]span, error) {
	var out []span
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 6 {
			continue // anonymous
		}
		perms := fields[1]
		if len(perms) != 4 || perms[1] == 'w' || perms[3] != 'p' {
			continue
		}
		if n, err := strconv.ParseUint(string(fields[4]), 10, 64); err != nil || n != ino {
			continue
		}
		if !sameDev(string(fields[3]), dev) {
			continue
		}
		start, end, ok := bytes.Cut(fields[0], []byte{'-'})
		if !ok {
			return nil, fmt.Errorf("bad address range %q", fields[0])
		}
		s, err1 := strconv.ParseUint(string(start), 16, 64)
		e, err2 := strconv.ParseUint(string(end), 16, 64)
		if err1 != nil || err2 != nil || e <= s {
			return nil, fmt.Errorf("bad address range %q", fields[0])
		}
		out = append(out, span{uintptr(s), uintptr(e)})
	}
	return out, sc.Err()
}

// sameDev tells whether a maps "major:minor" (hex) is dev.
func sameDev(field string, dev uint64) bool {
	maj, min, ok := bytes.Cut([]byte(field), []byte{':'})
	if !ok {
		return false
	}
	a, err1 := strconv.ParseUint(string(maj), 16, 32)
	b, err2 := strconv.ParseUint(string(min), 16, 32)
	return err1 == nil && err2 == nil && uint32(a) == unix.Major(dev) && uint32(b) == unix.Minor(dev)
}

// rss returns VmRSS of this process in bytes, 0 when unknown.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := bytes.Fields(b)
	if len(fields) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(string(fields[1]), 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(syscall.Getpagesize())
}
