package hold

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/safefile"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// holdsDir makes a lock directory as the agent does (root, mode 1777) in
// a directory the hostile user can reach.
func holdsDir(t *testing.T) string {
	t.Helper()
	state := t.TempDir()
	for p := state; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	dir := filepath.Join(state, "holds")
	if err := EnsureDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

type rejections struct {
	mu  sync.Mutex
	got map[string]error
}

func (r *rejections) reject(name string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[name] = err
}

// A local user plants files in the world-writable lock directory: none
// stalls the agent, reads without bound, leaks a root-only file or holds
// the machine; each costs a warning. The user's own lock still works.
func TestHostileLockFiles(t *testing.T) {
	u := testproc.HostileUser(t)
	dir := holdsDir(t)
	secret := filepath.Join(t.TempDir(), "secret.json")
	os.WriteFile(secret, []byte(`{"id":"s","reason":"ROOT ONLY SECRET","pid":0,"created":"2026-11-21T12:00:00Z"}`), 0o600)
	sleeper := u.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	start, err := startTicks("/proc", sleeper.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	lock := func(pid int, start uint64) string {
		return fmt.Sprintf(`{"id":"x","reason":"my build","pid":%d,"pid_start":%d,"created":"2026-11-21T12:00:00Z"}`, pid, start)
	}
	u.Run(t, "cd "+dir+` &&
		mkfifo fifo.json &&
		ln -s /dev/zero zero.json &&
		ln -s `+secret+` secret.json &&
		echo '`+lock(1, 0)+`' > pid1.json &&
		echo '`+lock(sleeper.Process.Pid, start)+`' > mine.json`)

	rej := &rejections{got: map[string]error{}}
	s := Store{Dir: dir, Reject: rej.reject}
	done := make(chan struct{})
	var live []Lock
	go func() {
		defer close(done)
		live, _, err = s.List(t0)
	}()
	if !testproc.WaitClosed(done, 5*time.Second) {
		t.Fatal("List blocked on a planted file")
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != 1 || live[0].Reason != "my build" || live[0].PID != sleeper.Process.Pid {
		t.Errorf("live locks %+v; want only the user's own lock on its own process", live)
	}
	for _, l := range live {
		if strings.Contains(l.Reason, "SECRET") {
			t.Errorf("a root-only file's content leaked into a lock: %+v", l)
		}
	}
	for name, want := range map[string]error{"fifo.json": safefile.ErrUntrusted, "zero.json": safefile.ErrUntrusted,
		"secret.json": safefile.ErrUntrusted, "pid1.json": ErrForeignProcess} {
		if got := rej.got[name]; !errors.Is(got, want) {
			t.Errorf("rejection of %s: %v; want %v", name, got, want)
		}
	}
}

// A symlink planted where the lock directory goes is refused, not
// followed to make its target world-writable.
func TestEnsureDirRefusesSymlink(t *testing.T) {
	u := testproc.HostileUser(t)
	state := t.TempDir()
	target := filepath.Join(t.TempDir(), "root-dir")
	os.Mkdir(target, 0o700)
	os.Symlink(target, filepath.Join(state, "holds"))
	if err := EnsureDir(filepath.Join(state, "holds")); err == nil {
		t.Fatal("EnsureDir followed a symlink")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o700 {
		t.Errorf("the symlink's target is now mode %v", fi.Mode())
	}
	// A directory of another user's is refused too.
	theirs := filepath.Join(t.TempDir(), "holds")
	os.Mkdir(theirs, 0o755)
	u.Chown(t, theirs)
	if err := EnsureDir(theirs); !errors.Is(err, safefile.ErrUntrusted) {
		t.Errorf("EnsureDir(another user's directory) = %v", err)
	}
}
