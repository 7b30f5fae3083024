//go:build linux

package procevents

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

var measure = flag.Bool("procevents.measure", false, "run the CPU cost measurement (root)")

// childEnv makes the test binary act as a child process instead of
// running tests; see TestMain.
const childEnv = "PROCEVENTS_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "listen":
		childListen()
	case "drain":
		childDrain()
	default:
		fmt.Println("unknown child mode")
		os.Exit(2)
	}
}

// require skips the test with the reason, or fails it when CI=true, so
// that CI cannot go green by skipping.
func require(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("procevents: %s (CI=true, so this is a failure, not a skip)", reason)
	}
	t.Skipf("procevents: %s", reason)
}

// requireRoot requires uid 0, for tests that change credentials or
// namespaces.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		require(t, "requires root")
	}
}

// listen returns a Listener closed at the end of the test. Where the
// kernel refuses (no CAP_NET_ADMIN where the kernel wants it, a
// container) the test is skipped, or failed when CI=true.
func listen(t testing.TB) *Listener {
	t.Helper()
	l, err := Listen()
	if errors.Is(err, ErrPermission) || errors.Is(err, ErrUnavailable) {
		require(t, fmt.Sprintf("needs the netlink process events connector (run as root): %v", err))
	}
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return l
}

// kernelFiltersPerSocket probes whether the kernel keeps per-socket
// subscription state (the event filter of struct proc_input; kernels
// without it ignore the filter and deliver everything to every socket):
// it subscribes to forks only, runs two programs and looks whether the
// exec or exit of the first came through before the fork of the second.
func kernelFiltersPerSocket(t *testing.T) bool {
	t.Helper()
	l := listen(t)
	if err := l.send(request(procCnMcastListen, procEventFork, l.nonce+6)); err != nil {
		t.Fatalf("send filter: %v", err)
	}
	evs := run(t, l)
	first := exec.Command("true")
	if err := first.Run(); err != nil {
		t.Fatal(err)
	}
	second := exec.Command("true")
	if err := second.Run(); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e := <-evs:
			switch {
			case e.PID == first.Process.Pid && e.Kind != Fork:
				return false
			case e.PID == second.Process.Pid && e.Kind == Fork:
				return true
			}
		case <-timeout:
			t.Fatal("probe: the fork of a child never came")
		}
	}
}

// run runs l until the test ends and returns its events.
func run(t testing.TB, l *Listener) <-chan Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Event, 1<<16)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v, want context.Canceled", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return within 5s of cancel")
		}
	})
	return out
}

// collect reads events until done says it has seen enough, or fails after
// five seconds.
func collect(t testing.TB, events <-chan Event, done func(Event) bool) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if done(ev) {
				return
			}
		case <-timeout:
			t.Fatal("timed out after 5s waiting for process events")
		}
	}
}

// TestForkExecExit watches a shell that forks a 50 ms sleep.
func TestForkExecExit(t *testing.T) {
	l := listen(t)
	events := run(t, l)

	cmd := exec.Command("/bin/sh", "-c", "sleep 0.05 & wait")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	sh := cmd.Process.Pid
	me := os.Getpid()

	var shEvents, childEvents []Event
	child := 0
	collect(t, events, func(ev Event) bool {
		switch {
		case ev.PID == sh:
			shEvents = append(shEvents, ev)
		case ev.Kind == Fork && ev.ParentPID == sh:
			child = ev.PID
			fallthrough
		case child != 0 && ev.PID == child:
			childEvents = append(childEvents, ev)
		}
		return len(shEvents) > 0 && shEvents[len(shEvents)-1].Kind == Exit
	})

	kinds := func(evs []Event) []Kind {
		var k []Kind
		for _, ev := range evs {
			k = append(k, ev.Kind)
		}
		return k
	}
	if got, want := kinds(shEvents), []Kind{Fork, Exec, Exit}; !slices.Equal(got, want) {
		t.Fatalf("sh (pid %d) events %+v, want kinds %v", sh, shEvents, want)
	}
	if got, want := kinds(childEvents), []Kind{Fork, Exec, Exit}; !slices.Equal(got, want) {
		t.Fatalf("sleep events %+v, want kinds %v", childEvents, want)
	}
	if p := shEvents[0].ParentPID; p != me {
		t.Errorf("sh fork: parent %d, want %d (this test)", p, me)
	}
	if p := shEvents[2].ParentPID; p != me {
		t.Errorf("sh exit: parent %d, want %d", p, me)
	}
	if p := childEvents[0].ParentPID; p != sh {
		t.Errorf("sleep fork: parent %d, want %d (sh)", p, sh)
	}
	if c := shEvents[2].ExitCode; c != 0 {
		t.Errorf("sh exit code %d, want 0", c)
	}
	for _, evs := range [][]Event{shEvents, childEvents} {
		if !(0 < evs[0].Time && evs[0].Time <= evs[1].Time && evs[1].Time <= evs[2].Time) {
			t.Errorf("timestamps not in order: %+v", evs)
		}
	}
	if d := childEvents[2].Time - childEvents[1].Time; d < 50*time.Millisecond || d > 5*time.Second {
		t.Errorf("sleep 0.05 ran %v from exec to exit", d)
	}
}

// TestExitCode checks exit statuses as waitpid reports them.
func TestExitCode(t *testing.T) {
	l := listen(t)
	events := run(t, l)

	exit3 := exec.Command("/bin/sh", "-c", "exit 3")
	if err := exit3.Run(); err == nil {
		t.Fatal("sh -c 'exit 3' succeeded")
	}
	killed := exec.Command("sleep", "10")
	if err := killed.Start(); err != nil {
		t.Fatal(err)
	}
	killed.Process.Kill()
	killed.Wait()

	want := map[int]uint32{exit3.Process.Pid: 3 << 8, killed.Process.Pid: uint32(syscall.SIGKILL)}
	got := map[int]uint32{}
	collect(t, events, func(ev Event) bool {
		if _, ok := want[ev.PID]; ok && ev.Kind == Exit {
			got[ev.PID] = ev.ExitCode
		}
		return len(got) == len(want)
	})
	for pid, code := range want {
		if got[pid] != code {
			t.Errorf("pid %d: exit code %#x, want %#x", pid, got[pid], code)
		}
	}
}

// TestThreadsFiltered makes this process create and end OS threads and
// checks that none of them is reported as a process.
func TestThreadsFiltered(t *testing.T) {
	l := listen(t)
	events := run(t, l)

	// A goroutine that returns while locked to its thread ends the thread;
	// several at once make the runtime start new threads.
	const n = 8
	tids := make(chan int, n)
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			tids <- unix.Gettid()
			<-release
		}()
	}
	threads := map[int]bool{}
	for range n {
		threads[<-tids] = true
	}
	close(release)
	wg.Wait()

	// A process started afterwards: once its exit arrives, so has every
	// event of the threads, which ended before it started.
	marker := exec.Command("true")
	if err := marker.Run(); err != nil {
		t.Fatal(err)
	}
	me := os.Getpid()
	collect(t, events, func(ev Event) bool {
		if threads[ev.PID] && ev.PID != me || ev.PID == me {
			t.Errorf("thread reported as a process: %+v", ev)
		}
		return ev.Kind == Exit && ev.PID == marker.Process.Pid
	})
}

// TestRunStopsOnCancel checks that Run returns within a second of cancel,
// both while blocked reading and while blocked sending to a full out,
// and leaves no goroutine behind.
func TestRunStopsOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name string
		out  chan Event
	}{
		{"reading", make(chan Event, 1<<16)},
		{"sending", make(chan Event)}, // nobody receives
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			l := listen(t)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx, tc.out) }()
			if err := exec.Command("true").Run(); err != nil { // something to send
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond) // let Run block

			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run: %v, want context.Canceled", err)
				}
				t.Logf("Run returned %v after cancel", time.Since(start))
			case <-time.After(time.Second):
				t.Fatal("Run did not return within 1s of cancel")
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			waitGoroutines(t, before)
		})
	}
}

// waitGoroutines fails unless the goroutine count drops to before within
// a second.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRunUnsubscribes checks that after Run returns the kernel sends this
// socket nothing more (on kernels that keep per-socket state; others
// deliver to every socket while any listens).
func TestRunUnsubscribes(t *testing.T) {
	if !kernelFiltersPerSocket(t) {
		t.Skip("this kernel keeps no per-socket subscription state: unsubscribing one socket cannot stop delivery to it")
	}
	// Another listener keeps the kernel producing events.
	other := listen(t)
	_ = run(t, other)

	l := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, make(chan Event, 1<<16)) }()
	cancel()
	<-done

	read := func() (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		restore := l.interruptOn(ctx)
		defer restore()
		return l.recv(make([]byte, readBufBytes))
	}
	for { // drain what was queued before
		if _, err := read(); err != nil {
			break
		}
	}
	if err := exec.Command("true").Run(); err != nil {
		t.Fatal(err)
	}
	if n, err := read(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after unsubscribing: %d bytes, %v; want nothing", n, err)
	}
}

func TestCloseStopsRun(t *testing.T) {
	l := listen(t)
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background(), make(chan Event, 1<<16)) }()
	time.Sleep(50 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Run: %v, want os.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Run did not return within 1s of Close")
	}
	if err := l.Run(context.Background(), nil); err == nil {
		t.Error("second Run: no error")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestListenRefused runs Listen in child processes where the kernel may
// refuse it: as an unprivileged user, in a new network, PID or user
// namespace. What each gets depends on the kernel (an unprivileged
// listener is allowed by some versions and refused by others, a new user
// namespace is refused or ignored), so the test accepts every outcome the
// package documents for the case and checks the invariant that matters:
// a refusal is one of the two sentinels, with a message that says why,
// and root in the machine's own namespaces may always listen.
func TestListenRefused(t *testing.T) {
	requireRoot(t)
	bin := testproc.ShareableTestBinary(t)
	for _, tc := range []struct {
		name string
		attr *syscall.SysProcAttr
		want []string
	}{
		{"nobody", &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}, []string{"ok", "permission"}},
		{"new network namespace", &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}, []string{"unavailable"}},
		{"new PID namespace", &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}, []string{"unavailable"}},
		{"new user namespace", &syscall.SysProcAttr{
			Cloneflags:  syscall.CLONE_NEWUSER,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		}, []string{"permission", "unavailable"}},
		{"control: same namespaces, root", &syscall.SysProcAttr{}, []string{"ok"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := childCommand(ctx, bin, "listen")
			cmd.SysProcAttr = tc.attr
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			got, detail, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
			t.Logf("child: %s %s", got, detail)
			if !slices.Contains(tc.want, got) {
				t.Errorf("Listen in child: %s %s; want one of %v", got, detail, tc.want)
			}
			// The message says what is missing, not just an errno.
			switch {
			case got == "permission" && !strings.Contains(detail, "CAP_NET_ADMIN"):
				t.Errorf("permission error %q does not name CAP_NET_ADMIN", detail)
			case got == "unavailable" && !strings.Contains(detail, "unavailable"):
				t.Errorf("unavailable error %q does not say so", detail)
			}
		})
	}
}

// childCommand runs the test binary bin as a child in mode (see TestMain).
func childCommand(ctx context.Context, bin, mode string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	return cmd
}

// childListen reports what Listen says: ok, permission, unavailable, or
// error, then the error text.
func childListen() {
	l, err := Listen()
	switch {
	case err == nil:
		l.Close()
		fmt.Println("ok")
	case errors.Is(err, ErrPermission):
		fmt.Println("permission", err)
	case errors.Is(err, ErrUnavailable):
		fmt.Println("unavailable", err)
	default:
		fmt.Println("error", err)
	}
}

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		errno error
		want  []error
	}{
		{unix.EPERM, []error{ErrPermission, fs.ErrPermission, unix.EPERM}},
		{unix.EACCES, []error{ErrPermission, fs.ErrPermission}},
		{unix.EPROTONOSUPPORT, []error{ErrUnavailable, errors.ErrUnsupported}},
		{unix.ECONNREFUSED, []error{ErrUnavailable, errors.ErrUnsupported, unix.ECONNREFUSED}},
		{unix.EINVAL, []error{unix.EINVAL}},
	} {
		err := classify(fmt.Errorf("send: %w", tc.errno))
		for _, w := range tc.want {
			if !errors.Is(err, w) {
				t.Errorf("classify(%v) = %v: not %v", tc.errno, err, w)
			}
		}
		if errors.Is(tc.errno, unix.EINVAL) && (errors.Is(err, ErrPermission) || errors.Is(err, ErrUnavailable)) {
			t.Errorf("classify(%v) = %v", tc.errno, err)
		}
	}
}

// TestFilter checks the kernel-side filter on the real kernel: with a
// shell's pid as the filter, its fork, exec and exit events and its
// children's exits come, another process's do not; without the filter
// everything comes again.
func TestFilter(t *testing.T) {
	l := listen(t)
	evs := run(t, l)
	sh := exec.Command("sh", "-c", "read line; /bin/true; /bin/true")
	stdin, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	p := sh.Process.Pid
	if err := l.Filter([]int{p}); err != nil {
		t.Fatalf("Filter: %v", err)
	}
	since := monotonic()
	other := exec.Command("true")
	if err := other.Run(); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	if err := sh.Wait(); err != nil {
		t.Fatal(err)
	}
	var forks int
	timeout := time.After(5 * time.Second)
	for done := false; !done; {
		select {
		case e := <-evs:
			if e.Kind == Overrun || e.Time < since {
				continue
			}
			if e.PID != p && e.ParentPID != p {
				t.Errorf("filtered listener got %+v (watching %d)", e, p)
			}
			if e.Kind == Fork && e.ParentPID == p {
				forks++
			}
			done = e.Kind == Exit && e.PID == p
		case <-timeout:
			t.Fatalf("the shell's exit never came (%d forks seen)", forks)
		}
	}
	if forks == 0 {
		t.Error("no fork of the watched shell came")
	}

	if err := l.Filter(nil); err != nil {
		t.Fatalf("Filter(nil): %v", err)
	}
	again := exec.Command("true")
	if err := again.Run(); err != nil {
		t.Fatal(err)
	}
	timeout = time.After(5 * time.Second)
	for {
		select {
		case e := <-evs:
			if e.Kind == Exit && e.PID == again.Process.Pid {
				return
			}
		case <-timeout:
			t.Fatal("after Filter(nil), an unrelated exit never came")
		}
	}
}
