package connect

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/safefile"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// Ten connects at once to a stopped instance make one StartInstances
// call and all connect. The fake holds the start back until all ten
// have seen the instance stopped, so all ten go for the lock.
func TestConcurrentConnectsStartOnce(t *testing.T) {
	const n = 10
	clk := clock.NewFake(t0) // never advanced: nothing may wait on it
	s := newSSHD(t)
	in := &fakeInstance{id: id, state: types.InstanceStateNameStopped, public: s.host}
	f := newFake(clk, in)
	allSeen := make(chan struct{})
	var once sync.Once
	f.onDescribe = func() {
		// n first looks, and the lock holder's second one.
		if f.count("DescribeInstances") >= n+1 {
			once.Do(func() { close(allSeen) })
		}
	}
	f.onStart = func() {
		select {
		case <-allSeen:
		case <-time.After(10 * time.Second): // a safety net, not a wait
			t.Error("the connects did not all look at the instance before the start")
		}
	}
	o, progress := setup(t, f, s, clk, id)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			conn, err := Dial(t.Context(), o)
			if err != nil {
				errs <- err
				return
			}
			readBanner(t, conn)
			conn.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Dial: %v", err)
	}
	if got := f.count("StartInstances"); got != 1 {
		t.Errorf("%d StartInstances, want 1", got)
	}
	if s.count() != n {
		t.Errorf("%d connections, want %d", s.count(), n)
	}
	out := progress.String()
	if c := strings.Count(out, "connwatch: starting "+id); c != 1 {
		t.Errorf("%d 'starting' lines, want 1:\n%s", c, out)
	}
	// Usually n-1 wait for the lock; one that was slow to reach it may
	// find it free and the instance running.
	t.Logf("%d of %d waited for the lock", strings.Count(out, "waiting for another connwatch that is starting "+id), n)
	if c := strings.Count(out, "running after"); c != n {
		t.Errorf("%d 'running after' lines, want %d:\n%s", c, n, out)
	}
}

// A connect waiting for the lock gives up when the timeout runs out,
// says on what, and lets go of the lock once it gets it.
func TestLockWaitTimesOut(t *testing.T) {
	clk := clock.NewFake(t0)
	s := newSSHD(t)
	f := newFake(clk, &fakeInstance{id: id, state: types.InstanceStateNameStopped, public: s.host})
	o, progress := setup(t, f, s, clk, id)
	o.Timeout = time.Minute
	held, err := openLock(o.LockDir, id)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := tryFlock(held); !ok || err != nil {
		t.Fatalf("tryFlock: %v %v", ok, err)
	}
	done := make(chan error, 1)
	go func() {
		conn, err := Dial(t.Context(), o)
		if conn != nil {
			conn.Close()
		}
		done <- err
	}()
	waitTimer(t, clk)
	clk.Advance(time.Minute)
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Dial did not time out")
	}
	if !errors.Is(err, ErrTimeout) || !strings.Contains(err.Error(), "waiting for another connwatch to start "+id+" (lock "+filepath.Join(o.LockDir, id+".lock")+")") {
		t.Errorf("Dial: %v", err)
	}
	if !strings.Contains(progress.String(), "waiting for another connwatch that is starting "+id) {
		t.Errorf("progress %q", progress)
	}
	if f.count("StartInstances") != 0 {
		t.Errorf("started while another held the lock")
	}
	// Once we let go, the abandoned waiter takes the lock and drops it.
	held.Close()
	again, err := openLock(o.LockDir, id)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	got := make(chan error, 1)
	go func() { got <- flock(again) }()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the abandoned waiter kept the lock") // its goroutine stays blocked
	}
}

// waitTimer returns once the code under test has a timer on clk.
func waitTimer(t *testing.T, clk *clock.Fake) {
	t.Helper()
	testproc.WaitFor(t, "a timer on the clock", 10*time.Second, func() bool { _, ok := clk.NextDeadline(); return ok })
}

// The lock directory must be this user's alone.
func TestLockDirRefused(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(base, link); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{open, link} {
		if _, err := openLock(dir, id); !errors.Is(err, safefile.ErrUntrusted) {
			t.Errorf("openLock(%s): %v, want untrusted", dir, err)
		}
	}
	fine := filepath.Join(base, "new", "connwatch")
	f, err := openLock(fine, id)
	if err != nil {
		t.Fatalf("openLock(%s): %v", fine, err)
	}
	f.Close()
	if st, err := os.Stat(fine); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("lock directory: %v, %v; want mode 0700", st.Mode(), err)
	}
	// A lock file that is a symlink is not followed.
	if err := os.Symlink("/dev/null", filepath.Join(fine, "i-0000000000000000a.lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := openLock(fine, "i-0000000000000000a"); err == nil {
		t.Errorf("openLock followed a symlink")
	}
}

func TestDefaultLockDir(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/1000")
	if got := DefaultLockDir(); got != "/run/user/1000/connwatch" {
		t.Errorf("with XDG_RUNTIME_DIR: %s", got)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("TMPDIR", "/var/tmp")
	if got, want := DefaultLockDir(), filepath.Join("/var/tmp", "connwatch-"+strconv.Itoa(os.Geteuid())); got != want {
		t.Errorf("without: %s, want %s", got, want)
	}
}
