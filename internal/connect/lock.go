package connect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/safefile"
)

// DefaultLockDir is where the lock files go: $XDG_RUNTIME_DIR/connwatch,
// else connwatch-UID in the temporary directory.
func DefaultLockDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "connwatch")
	}
	return filepath.Join(os.TempDir(), "connwatch-"+strconv.Itoa(os.Geteuid()))
}

// prepareLockDir creates dir (mode 0700) if it is missing and checks that
// it is a directory of this user that no one else can write: in a shared
// /tmp someone could have made it first.
func prepareLockDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lock directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("lock directory: %w", &os.PathError{Op: "lstat", Path: dir, Err: err})
	}
	euid := uint32(os.Geteuid())
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("lock directory %s: not a directory (a symlink?): %w", dir, safefile.ErrUntrusted)
	case st.Uid != euid:
		return fmt.Errorf("lock directory %s: belongs to uid %d, not %d: %w", dir, st.Uid, euid, safefile.ErrUntrusted)
	case st.Mode&(unix.S_IWGRP|unix.S_IWOTH) != 0:
		return fmt.Errorf("lock directory %s: writable by group or others (mode %o): %w", dir, st.Mode&0o7777, safefile.ErrUntrusted)
	}
	return nil
}

// openLock opens (creating) the lock file of instance id in dir.
func openLock(dir, id string) (*os.File, error) {
	if err := prepareLockDir(dir); err != nil {
		return nil, err
	}
	path, err := instanceFile(dir, id, ".lock")
	if err != nil {
		return nil, err
	}
	// flock takes a descriptor open for writing as well as any.
	f, err := safefile.OpenAppend(path, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	return f, nil
}

// instanceFile is the file of instance id with extension ext in dir,
// refused for anything that is not an instance id (it names a file: an
// id from an endpoint is checked like one from the command line).
func instanceFile(dir, id, ext string) (string, error) {
	if !isInstanceID(id) {
		return "", fmt.Errorf("instance id %q: %w", id, ErrBadTarget)
	}
	return filepath.Join(dir, id+ext), nil
}

// tryFlock takes f's lock if it is free; false when another holds it.
func tryFlock(f *os.File) (bool, error) {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		}
		return false, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
}

// flock waits for f's lock.
func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		return nil
	}
}
