package testproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// User is a real local account for tests.
type User struct {
	Name     string
	UID, GID uint32
	Home     string
}

// HostileUserName is the unprivileged account the trust-boundary tests
// act as: a local user who wants to blind, crash, fool or hurry the
// agent.
const HostileUserName = "cwhostile"

// EnsureUser returns the local account name, creating it with useradd
// (needs root) when missing. Test binaries running at once take a lock
// file so they do not race on /etc/passwd.
func EnsureUser(t testing.TB, harness, name string) User {
	t.Helper()
	if u, err := lookup(name); err == nil {
		return u
	}
	Require(t, harness, "root to create user "+name, os.Geteuid() == 0)
	RequireBinary(t, harness, "useradd")
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "connwatch-useradd.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("%s: open useradd lock: %v", harness, err)
	}
	defer lock.Close() // closing releases the lock
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s: lock %s: %v", harness, lock.Name(), err)
	}
	if u, err := lookup(name); err == nil {
		return u // another test binary made it meanwhile
	}
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/bash", name).CombinedOutput(); err != nil {
		t.Fatalf("%s: useradd %s: %v: %s", harness, name, err, out)
	}
	t.Logf("%s: created user %s", harness, name)
	u, err := lookup(name)
	if err != nil {
		t.Fatalf("%s: %v", harness, err)
	}
	return u
}

// HostileUser returns the unprivileged account HostileUserName, creating
// it when missing. Without root (nobody to act as) the test skips, or
// fails under CI=true.
func HostileUser(t testing.TB) User {
	t.Helper()
	Require(t, "testproc", "root, to act as an unprivileged user", os.Geteuid() == 0)
	return EnsureUser(t, "testproc", HostileUserName)
}

func lookup(name string) (User, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return User{}, fmt.Errorf("look up user %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return User{}, fmt.Errorf("look up user %s: non-numeric ids %s:%s", name, u.Uid, u.Gid)
	}
	return User{Name: name, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}, nil
}

// Command returns cmd set to run as u (no supplementary groups), in u's
// home directory.
func (u User) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}}}
	cmd.Dir = u.Home
	cmd.Env = []string{"HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name, "PATH=/usr/local/bin:/usr/bin:/bin"}
	return cmd
}

// Run runs a shell script as u and fails the test when it fails.
func (u User) Run(t testing.TB, script string) string {
	t.Helper()
	out, err := u.Command("/bin/sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("run as %s: %s: %v: %s", u.Name, script, err, out)
	}
	return string(out)
}

// Chown gives path to u (as root), as if u had created it.
func (u User) Chown(t testing.TB, path string) {
	t.Helper()
	if err := os.Lchown(path, int(u.UID), int(u.GID)); err != nil {
		t.Fatalf("chown %s to %s: %v", path, u.Name, err)
	}
}

// Owner returns the uid and gid of path itself (a link is not followed).
func Owner(t testing.TB, path string) (uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

// ShareableTestBinary copies the running test binary into a directory of
// its own that every user may read and enter (mode 0755), so that a test
// can run it as an unprivileged User (go test builds it under a
// directory only its owner can enter), and returns its path. The copy
// goes when the test ends.
func ShareableTestBinary(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "connwatch-test-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}
