// Package safefile reads files and trusts directories that users other
// than root may have had a hand in. The agent runs as root: a file in a
// shared directory may be a symlink to /dev/zero or to a root-only file,
// a FIFO that blocks the reader for good, a hard link to someone else's
// file, or endless; a directory may belong to another user who can swap
// its files. Read and ReadDir refuse all of these without blocking and
// without reading more than a cap.
package safefile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrUntrusted marks a file or directory that is not what it must be to
// be trusted: not a regular file or directory, a symlink, a hard link,
// too large, or owned or writable by another user.
var ErrUntrusted = errors.New("untrusted")

// Info is what Open and Read learned of the file.
type Info struct {
	UID, GID uint32
	Mode     uint32
	Size     int64
	Nlink    uint64
}

// Open opens path for reading if it is a regular file. It never follows
// a symlink in the last component, never blocks on a FIFO, and never
// opens anything but a regular file (a device's open may have effects:
// /dev/watchdog arms on open): it looks before it opens, and checks that
// what it opened is what it looked at. Owner, mode, links and size are
// for the caller to judge.
func Open(path string) (*os.File, Info, error) {
	var pre unix.Stat_t
	if err := unix.Lstat(path, &pre); err != nil {
		return nil, Info{}, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "lstat", Path: path, Err: err})
	}
	if err := isRegular(path, &pre); err != nil {
		return nil, Info{}, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, Info{}, fmt.Errorf("open %s: a symlink: %w", path, ErrUntrusted)
		}
		return nil, Info{}, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, Info{}, fmt.Errorf("open %s: %w", path, err)
	}
	if st.Dev != pre.Dev || st.Ino != pre.Ino {
		f.Close()
		return nil, Info{}, fmt.Errorf("open %s: replaced while being opened: %w", path, ErrUntrusted)
	}
	return f, Info{UID: st.Uid, GID: st.Gid, Mode: st.Mode, Size: st.Size, Nlink: uint64(st.Nlink)}, nil
}

// Read reads path if Open opens it and it has one link and at most max
// bytes, and returns its content and owner.
func Read(path string, max int64) ([]byte, Info, error) {
	f, info, err := Open(path)
	if err != nil {
		return nil, Info{}, err
	}
	defer f.Close()
	switch {
	case info.Nlink != 1:
		return nil, Info{}, fmt.Errorf("read %s: %d hard links: %w", path, info.Nlink, ErrUntrusted)
	case info.Size > max:
		return nil, Info{}, fmt.Errorf("read %s: %d bytes, more than %d: %w", path, info.Size, max, ErrUntrusted)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, Info{}, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > max {
		return nil, Info{}, fmt.Errorf("read %s: larger than %d bytes: %w", path, max, ErrUntrusted)
	}
	return b, info, nil
}

func isRegular(path string, st *unix.Stat_t) error {
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return fmt.Errorf("open %s: a symlink: %w", path, ErrUntrusted)
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("open %s: not a regular file (%s): %w", path, kind(st.Mode), ErrUntrusted)
	}
	return nil
}

func kind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFLNK:
		return "a symlink"
	}
	return fmt.Sprintf("mode %o", mode&unix.S_IFMT)
}

// TrustDir reports whether dir can be trusted by a process running as
// uid: it and every directory above it (symlinks resolved) must be owned
// by uid or root, and none writable by group or others, except for a
// parent with the sticky bit (like /tmp), where others cannot replace
// what they do not own. The error names the first directory that fails.
func TrustDir(dir string, uid uint32) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("trust directory %s: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return fmt.Errorf("trust directory %s: %w", dir, err)
	}
	for p, last := real, true; ; p, last = filepath.Dir(p), false {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return fmt.Errorf("trust directory %s: %w", dir, &os.PathError{Op: "lstat", Path: p, Err: err})
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("trust directory %s: %s is %s: %w", dir, p, kind(st.Mode), ErrUntrusted)
		}
		if st.Uid != uid && st.Uid != 0 {
			return fmt.Errorf("trust directory %s: %s belongs to uid %d, not %s: %w", dir, p, st.Uid, owners(uid), ErrUntrusted)
		}
		writable := st.Mode&(unix.S_IWGRP|unix.S_IWOTH) != 0
		if writable && (last || st.Mode&unix.S_ISVTX == 0) {
			return fmt.Errorf("trust directory %s: %s is writable by group or others (mode %o): %w", dir, p, st.Mode&0o7777, ErrUntrusted)
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}

func owners(uid uint32) string {
	if uid == 0 {
		return "root"
	}
	return fmt.Sprintf("root or uid %d", uid)
}

// OpenAppend opens path for appending, creating it with perm, as a file
// that only the caller's user (or root) owns: never through a symlink,
// never a FIFO or device, never a hard link to another file. A root
// agent writing its events file in a directory a user can write would
// otherwise append to whatever the user pointed the name at.
func OpenAppend(path string, perm os.FileMode) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, uint32(perm.Perm()))
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("open %s: a symlink: %w", path, ErrUntrusted)
		}
		return nil, fmt.Errorf("open %s: %w", path, &os.PathError{Op: "open", Path: path, Err: err})
	}
	f := os.NewFile(uintptr(fd), path)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		err = fmt.Errorf("open %s: not a regular file (%s): %w", path, kind(st.Mode), ErrUntrusted)
	case st.Nlink != 1:
		err = fmt.Errorf("open %s: %d hard links: %w", path, st.Nlink, ErrUntrusted)
	case st.Uid != euid && st.Uid != 0:
		err = fmt.Errorf("open %s: belongs to uid %d: %w", path, st.Uid, ErrUntrusted)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
