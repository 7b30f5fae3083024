// Package atomicfile writes files so that readers and crashes see either
// the old content or the new, never half of it.
package atomicfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Errors of WriteThrough and Target.
var (
	// ErrDanglingLink: the path is a symbolic link to nothing.
	ErrDanglingLink = errors.New("symbolic link to a file that does not exist")
	// ErrForeignLink: a symbolic link on the way is owned by neither root
	// nor the owner of the file it leads to. Following it would let the
	// link's owner choose which of another user's files gets written (as
	// the kernel's protected_symlinks refuses in sticky directories).
	ErrForeignLink = errors.New("symbolic link owned by another user than its target")
	// ErrNotRegular: the path, or what it leads to, is not a regular file.
	ErrNotRegular = errors.New("not a regular file")
	// ErrChanged: the file was replaced between being resolved and
	// being written; nothing was written.
	ErrChanged = errors.New("file replaced while being written")
)

// maxLinks bounds a chain of symbolic links, as the kernel's ELOOP does.
const maxLinks = 40

// owner is who a replaced file belongs to.
type owner struct{ uid, gid int }

// Write replaces path with data: it writes a temporary file in the same
// directory, syncs it, renames it over path and syncs the directory. A
// symbolic link at path is replaced, not followed; the new file has perm
// and belongs to the caller.
func Write(path string, data []byte, perm fs.FileMode) error {
	if err := replace(path, data, perm, nil, nil, false); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteAs is Write for a file that belongs to uid and gid (changing the
// owner needs root, or uid being the caller's), such as root writing in a
// user's directory. The directory is resolved once and then opened
// without following links, so the user cannot swap it for a link to
// another directory while the file is written.
func WriteAs(path string, data []byte, perm fs.FileMode, uid, gid int) error {
	err := func() error {
		dir, err := canonicalDir(path)
		if err != nil {
			return err
		}
		return replace(filepath.Join(dir, filepath.Base(path)), data, perm, &owner{uid, gid}, nil, true)
	}()
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WriteThrough is Write for a path that may be a symbolic link, such as a
// ~/.ssh/config kept with the user's dotfiles: the file the link (or
// chain of links) leads to is replaced atomically, from a temporary file
// next to it, and the links stay as they are. An existing file keeps its
// permission bits, owner and group, so root writing a user's file leaves
// it the user's; perm is for a file that does not exist yet. A link to
// nothing is an error (ErrDanglingLink), and so is a link owned by
// neither root nor the owner of its target (ErrForeignLink). It returns
// the path of the file written.
func WriteThrough(path string, data []byte, perm fs.FileMode) (string, error) {
	target, fi, err := resolve(path)
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	var own *owner
	if fi != nil {
		perm = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			own = &owner{int(st.Uid), int(st.Gid)}
		}
	}
	if err := replace(target, data, perm, own, fi, true); err != nil {
		if target != path {
			return "", fmt.Errorf("write %s (link to %s): %w", path, target, err)
		}
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return target, nil
}

// Target returns the file WriteThrough would replace for path, and its
// FileInfo (nil when it does not exist yet), with the same errors.
func Target(path string) (string, fs.FileInfo, error) {
	target, fi, err := resolve(path)
	if err != nil {
		return "", nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	return target, fi, nil
}

// resolve follows path's chain of symbolic links to a regular file and
// returns its canonical path (no links left in it). A path that does not
// exist resolves to itself, in its canonical directory, with a nil
// FileInfo.
func resolve(path string) (string, fs.FileInfo, error) {
	p := path
	var linkOwners []uint32
	for hops := 0; ; hops++ {
		if hops > maxLinks {
			return "", nil, fmt.Errorf("follow symbolic links: %w", unix.ELOOP)
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			if hops > 0 {
				return "", nil, fmt.Errorf("%s: %w", p, ErrDanglingLink)
			}
			dir, err := canonicalDir(p)
			if err != nil {
				return "", nil, err
			}
			return filepath.Join(dir, filepath.Base(p)), nil, nil
		}
		if err != nil {
			return "", nil, err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			if !fi.Mode().IsRegular() {
				return "", nil, fmt.Errorf("%s: %w", p, ErrNotRegular)
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				for _, uid := range linkOwners {
					if uid != 0 && uid != st.Uid {
						return "", nil, fmt.Errorf("link owned by uid %d to %s owned by uid %d: %w", uid, p, st.Uid, ErrForeignLink)
					}
				}
			}
			dir, err := canonicalDir(p)
			if err != nil {
				return "", nil, err
			}
			return filepath.Join(dir, filepath.Base(p)), fi, nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			linkOwners = append(linkOwners, st.Uid)
		}
		dest, err := os.Readlink(p)
		if err != nil {
			return "", nil, err
		}
		if !filepath.IsAbs(dest) {
			// Relative to the link's real directory: a lexical join
			// would take ".." across a linked directory wrongly.
			dir, err := filepath.EvalSymlinks(filepath.Dir(p))
			if err != nil {
				return "", nil, fmt.Errorf("resolve directory of %s: %w", p, err)
			}
			dest = filepath.Join(dir, dest)
		}
		p = dest
	}
}

// canonicalDir returns the absolute directory of path with every link in
// it resolved.
func canonicalDir(path string) (string, error) {
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return "", err
	}
	dir, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("resolve directory: %w", err)
	}
	return dir, nil
}

// openDirNoFollow opens the absolute directory dir one component at a
// time, refusing any symbolic link on the way.
func openDirNoFollow(dir string) (*os.File, error) {
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	rel := strings.Trim(filepath.Clean(dir), "/")
	if rel != "" {
		parts := strings.Split(rel, "/")
		for i, part := range parts {
			// Components on the way need only be searchable (O_PATH).
			flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
			if i == len(parts)-1 {
				flags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
			}
			next, err := unix.Openat(fd, part, flags, 0)
			unix.Close(fd)
			if err != nil {
				return nil, fmt.Errorf("open directory %s without following links: %s: %w", dir, part, err)
			}
			fd = next
		}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// replace writes data to a new file in path's directory and renames it
// over path. The directory is opened once and everything after happens
// relative to it. With noFollow, path is canonical and its directory is
// opened without following links; when expect is set, the file renamed
// over must still be expect (same device and inode). So a link or
// directory swapped in meanwhile cannot redirect the write. The
// temporary file is given own's owner (before its mode: a change of
// owner clears set-id bits) and perm.
func replace(path string, data []byte, perm fs.FileMode, own *owner, expect fs.FileInfo, noFollow bool) error {
	dirPath, base := filepath.Dir(path), filepath.Base(path)
	var dir *os.File
	var err error
	if noFollow {
		dir, err = openDirNoFollow(dirPath)
	} else {
		dir, err = os.OpenFile(dirPath, os.O_RDONLY|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return err
	}
	defer dir.Close()
	dfd := int(dir.Fd())
	if want, ok := statOf(expect); ok {
		var st unix.Stat_t
		if err := unix.Fstatat(dfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("check %s: %w", path, err)
		}
		if st.Dev != want.Dev || st.Ino != want.Ino {
			return fmt.Errorf("%s: %w", path, ErrChanged)
		}
	}
	var tmp string
	var fd int
	for range 100 {
		tmp = "." + base + ".tmp" + strconv.FormatUint(uint64(rand.Uint32()), 10)
		fd, err = unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if !errors.Is(err, unix.EEXIST) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dirPath, tmp))
	ok := false
	defer func() {
		if !ok {
			f.Close()
			unix.Unlinkat(dfd, tmp, 0)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	// Without root, only a group of the caller's can be given: the file
	// is then the caller's, as any file it writes.
	if own != nil {
		if err := f.Chown(own.uid, own.gid); err != nil && (os.Geteuid() == 0 || !errors.Is(err, fs.ErrPermission)) {
			return fmt.Errorf("keep owner: %w", err)
		}
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := unix.Renameat(dfd, tmp, dfd, base); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	ok = true
	dir.Sync()
	return nil
}

func statOf(fi fs.FileInfo) (*syscall.Stat_t, bool) {
	if fi == nil {
		return nil, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return st, ok
}

// WriteJSON writes v as indented JSON with Write.
func WriteJSON(path string, v any, perm fs.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", path, err)
	}
	return Write(path, append(b, '\n'), perm)
}

// ReadJSON reads path into v. It returns an error wrapping fs.ErrNotExist
// when there is no file, so callers can tell "nothing saved yet" from a
// damaged file.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// IsNotExist reports whether err says the file does not exist.
func IsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
