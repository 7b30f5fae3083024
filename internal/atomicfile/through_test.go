package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

func write(t *testing.T, path, text string, perm fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // past the umask
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// noTemporaries fails when a temporary file is left in one of dirs.
func noTemporaries(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.Contains(e.Name(), ".tmp") {
				t.Errorf("temporary file %s left in %s", e.Name(), d)
			}
		}
	}
}

// TestWriteThroughLinks: a link stays a link and the file it leads to
// gets the content, with its mode, whatever the shape of the link: a
// relative one, an absolute one, a chain of two, one whose relative
// target goes through a linked directory.
func TestWriteThroughLinks(t *testing.T) {
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dots := filepath.Join(root, "dotfiles")
	ssh := filepath.Join(root, "home", ".ssh")
	for _, d := range []string{dots, ssh, filepath.Join(root, "elsewhere", "deep")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(dots, "ssh_config")
	// root/linked -> root/elsewhere/deep: "../../dotfiles/ssh_config" from
	// there is root/dotfiles/ssh_config only when resolved physically.
	symlink(t, filepath.Join(root, "elsewhere", "deep"), filepath.Join(root, "linked"))
	tests := []struct {
		name  string
		setup func(link string)
	}{
		{"relative", func(link string) { symlink(t, "../../dotfiles/ssh_config", link) }},
		{"absolute", func(link string) { symlink(t, target, link) }},
		{"chain of two", func(link string) {
			symlink(t, target, filepath.Join(ssh, "middle"))
			symlink(t, "middle", link)
		}},
		{"through a linked directory", func(link string) {
			// root/linked/../../dotfiles is root/dotfiles only physically.
			symlink(t, "../../dotfiles/ssh_config", filepath.Join(root, "elsewhere", "deep", "link"))
			symlink(t, filepath.Join(root, "linked", "link"), link)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			link := filepath.Join(ssh, "config")
			os.Remove(link)
			os.Remove(filepath.Join(ssh, "middle"))
			os.Remove(filepath.Join(root, "elsewhere", "deep", "link"))
			write(t, target, "old\n", 0o640)
			tt.setup(link)
			before, _ := os.Readlink(link)
			got, err := WriteThrough(link, []byte("new\n"), 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if got != target {
				t.Errorf("wrote %s, want %s", got, target)
			}
			fi, err := os.Lstat(link)
			if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
				t.Fatalf("%s is no longer a link: %v %v", link, fi.Mode(), err)
			}
			if after, _ := os.Readlink(link); after != before {
				t.Errorf("link now points to %q, was %q", after, before)
			}
			if b, _ := os.ReadFile(target); string(b) != "new\n" {
				t.Errorf("target holds %q", b)
			}
			if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o640 {
				t.Errorf("target mode %v, want 0640 kept", fi.Mode().Perm())
			}
			noTemporaries(t, dots, ssh)
		})
	}
}

func TestWriteThroughDanglingAndNew(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "config")
	symlink(t, "missing/ssh_config", link)
	_, err := WriteThrough(link, []byte("x"), 0o600)
	if !errors.Is(err, ErrDanglingLink) || !strings.Contains(err.Error(), link) || !strings.Contains(err.Error(), "missing/ssh_config") {
		t.Errorf("dangling link: %v, want ErrDanglingLink naming the link and its target", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("something was created for a dangling link: %v", err)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&fs.ModeSymlink == 0 {
		t.Error("the dangling link was replaced")
	}

	// A loop is an error too.
	symlink(t, "loop2", filepath.Join(dir, "loop1"))
	symlink(t, "loop1", filepath.Join(dir, "loop2"))
	if _, err := WriteThrough(filepath.Join(dir, "loop1"), []byte("x"), 0o600); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("loop: %v, want ELOOP", err)
	}

	// A link to a directory is not written through.
	symlink(t, dir, filepath.Join(dir, "todir"))
	if _, err := WriteThrough(filepath.Join(dir, "todir"), []byte("x"), 0o600); !errors.Is(err, ErrNotRegular) {
		t.Errorf("link to a directory: %v, want ErrNotRegular", err)
	}

	// A file that does not exist yet is made with perm.
	p := filepath.Join(dir, "new")
	if got, err := WriteThrough(p, []byte("x"), 0o640); err != nil || got != filepath.Join(mustEval(t, dir), "new") {
		t.Fatalf("new file: %s, %v", got, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("new file mode %v", fi.Mode().Perm())
	}
}

func mustEval(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestWriteThroughKeepsOwner: root writing a user's file through the
// user's link leaves the file the user's; a link the user owns to a file
// of root's is refused; a link of root's to the user's file is fine.
func TestWriteThroughKeepsOwner(t *testing.T) {
	u := testproc.HostileUser(t)
	dir := t.TempDir()
	// The user must reach the directory (t.TempDir's parent is 0700).
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(dir, "ssh_config")
	write(t, target, "old\n", 0o600)
	u.Chown(t, target)
	link := filepath.Join(dir, "config")
	symlink(t, "ssh_config", link)
	u.Chown(t, link)

	if _, err := WriteThrough(link, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if uid, gid := testproc.Owner(t, target); uid != u.UID || gid != u.GID {
		t.Errorf("target owned by %d:%d, want %d:%d", uid, gid, u.UID, u.GID)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 kept", fi.Mode().Perm())
	}
	// The user can still edit their file.
	if out := u.Run(t, "echo more >> "+target+" && cat "+target); out != "new\nmore\n" {
		t.Errorf("user's file reads %q", out)
	}

	// The user's link to a file of root's: refused, nothing written.
	rootFile := filepath.Join(dir, "roots")
	write(t, rootFile, "root's\n", 0o644)
	trap := filepath.Join(dir, "trap")
	symlink(t, rootFile, trap)
	u.Chown(t, trap)
	if _, err := WriteThrough(trap, []byte("pwned\n"), 0o644); !errors.Is(err, ErrForeignLink) {
		t.Errorf("user's link to root's file: %v, want ErrForeignLink", err)
	}
	if b, _ := os.ReadFile(rootFile); string(b) != "root's\n" {
		t.Errorf("root's file now holds %q", b)
	}

	// Root's link to the user's file: fine.
	rootLink := filepath.Join(dir, "rootlink")
	symlink(t, target, rootLink)
	if _, err := WriteThrough(rootLink, []byte("again\n"), 0o644); err != nil {
		t.Errorf("root's link to the user's file: %v", err)
	}
	if uid, _ := testproc.Owner(t, target); uid != u.UID {
		t.Errorf("target owned by %d after root's link", uid)
	}

	// WriteAs gives a new file (the backup) to the user.
	bak := filepath.Join(dir, "config.bak")
	if err := WriteAs(bak, []byte("old\n"), 0o600, int(u.UID), int(u.GID)); err != nil {
		t.Fatal(err)
	}
	if uid, gid := testproc.Owner(t, bak); uid != u.UID || gid != u.GID {
		t.Errorf("backup owned by %d:%d", uid, gid)
	}
	noTemporaries(t, dir)
}

// TestReplaceRefusesSwaps: with the directory opened without following
// links, a linked directory on the way is refused, and a file replaced
// between resolution and writing is not written.
func TestReplaceRefusesSwaps(t *testing.T) {
	dir := mustEval(t, t.TempDir())
	real := filepath.Join(dir, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, real, filepath.Join(dir, "swapped"))
	if err := replace(filepath.Join(dir, "swapped", "f"), []byte("x"), 0o600, nil, nil, true); !errors.Is(err, syscall.ENOTDIR) && !errors.Is(err, syscall.ELOOP) {
		t.Errorf("linked directory: %v, want ENOTDIR or ELOOP", err)
	}
	if _, err := os.Stat(filepath.Join(real, "f")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("written through a linked directory: %v", err)
	}

	a, b := filepath.Join(real, "a"), filepath.Join(real, "b")
	write(t, a, "a", 0o600)
	write(t, b, "b", 0o600)
	fiB, _ := os.Lstat(b)
	if err := replace(a, []byte("x"), 0o600, nil, fiB, true); !errors.Is(err, ErrChanged) {
		t.Errorf("another file in place: %v, want ErrChanged", err)
	}
	if got, _ := os.ReadFile(a); string(got) != "a" {
		t.Errorf("a now holds %q", got)
	}
	noTemporaries(t, real)
}
