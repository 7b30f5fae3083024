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
// Only mappings of the executable's own inode that are not writable and
// hold no private copy of a page are touched. A private copy is a page
// changed since it was read from the file: in a position-independent
// build the read-only-after-relocation segment (RELRO), whose pointers
// the loader fixed up, and a page a debugger or uprobe patched. Dropping
// those would bring back the file's unpatched bytes, so such a mapping
// ("Anonymous:" above 0 in smaps) is left alone, as are data, bss, heap
// and stacks.
package memtrim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// smapsLimit bounds how much of /proc/self/smaps is read: a Go process
// has a few dozen mappings of some 25 lines each, far below this.
const smapsLimit = 4 << 20

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
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return Result{}, fmt.Errorf("read mappings: %w", err)
	}
	defer f.Close()
	ranges, err := cleanReadOnlyMappings(io.LimitReader(f, smapsLimit), uint64(st.Dev), st.Ino)
	if err != nil {
		return Result{}, fmt.Errorf("read mappings: %w", err)
	}
	if len(ranges) == 0 {
		return Result{}, errors.New("read mappings: no clean read-only mapping of the executable")
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

// cleanReadOnlyMappings parses /proc/PID/smaps text and returns the
// mappings of the file dev:ino that are neither writable nor shared and
// hold no private (changed) page. A mapping is a header line, like
//
//	00400000-00b83000 r-xp 00000000 fe:01 1234567   /usr/bin/connwatch
//
// followed by "Key: value" lines, among them "Anonymous: N kB".
func cleanReadOnlyMappings(r io.Reader, dev, ino uint64) ([]span, error) {
	var (
		out  []span
		cur  span
		want bool // cur is a candidate
		anon = -1 // cur's Anonymous kB, -1 until read
	)
	flush := func() {
		if want && anon == 0 {
			out = append(out, cur)
		}
		want, anon = false, -1
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) == 0 {
			continue
		}
		if key, ok := bytes.CutSuffix(fields[0], []byte{':'}); ok {
			if want && string(key) == "Anonymous" && len(fields) >= 2 {
				if n, err := strconv.Atoi(string(fields[1])); err == nil {
					anon = n
				}
			}
			continue
		}
		flush()
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
		cur, want = span{uintptr(s), uintptr(e)}, true
	}
	flush()
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
	p, err := procfs.Self()
	if err != nil {
		return 0
	}
	st, err := p.Statm()
	if err != nil {
		return 0
	}
	return int64(st.Resident) * int64(os.Getpagesize())
}
