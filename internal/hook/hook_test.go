package hook_test

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/hook"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// pgidOf reads the shell's pid, which the hooks below print first: the
// shell leads the hook's process group.
func pgidOf(t *testing.T, out *hook.Tail) int {
	t.Helper()
	first, _, _ := strings.Cut(out.String(), "\n")
	pgid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pgid <= 1 {
		t.Fatalf("hook printed %q, want its pid first", out.String())
	}
	return pgid
}

// killLeftovers ends what a test's hook left behind, if anything.
func killLeftovers(t *testing.T, pgid int) {
	t.Cleanup(func() {
		if len(testproc.GroupMembers(pgid)) > 0 {
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
}

// TestTimeoutKillsTheGroup: `sleep 100; true` outlives a killed shell
// unless the whole group is signalled; the hook returns promptly and
// nothing of its group is left.
func TestTimeoutKillsTheGroup(t *testing.T) {
	var out hook.Tail
	h := hook.Hook{Command: "echo $$; sleep 100; true", Timeout: 200 * time.Millisecond, Stdout: &out}
	start := time.Now()
	err := h.Run(t.Context())
	elapsed := time.Since(start)
	pgid := pgidOf(t, &out)
	killLeftovers(t, pgid)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed after 200ms") {
		t.Errorf("Run = %v, want a timeout after 200ms", err)
	}
	// sh dies of the SIGTERM at once: no need to wait out the grace.
	if elapsed > hook.DefaultGrace {
		t.Errorf("Run took %v, want about the 200ms timeout", elapsed)
	}
	testproc.WaitGroupGone(t, pgid, 2*time.Second)
}

// TestGraceThenKill: a hook that ignores SIGTERM (its children inherit
// that) is killed with SIGKILL after the grace period.
func TestGraceThenKill(t *testing.T) {
	var out hook.Tail
	h := hook.Hook{
		Command: "trap '' TERM; echo $$; sleep 100; true",
		Timeout: 100 * time.Millisecond, Grace: 300 * time.Millisecond, Stdout: &out,
	}
	start := time.Now()
	err := h.Run(t.Context())
	elapsed := time.Since(start)
	pgid := pgidOf(t, &out)
	killLeftovers(t, pgid)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run = %v, want a timeout", err)
	}
	if elapsed < 400*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("Run took %v, want the timeout plus the grace (400ms)", elapsed)
	}
	testproc.WaitGroupGone(t, pgid, 2*time.Second)
}

// TestCancelKillsTheGroup: the caller's context ending (agent shutdown)
// kills the group as a timeout does.
func TestCancelKillsTheGroup(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	var out hook.Tail
	done := make(chan error, 1)
	go func() { done <- hook.Hook{Command: "echo $$; sleep 100; true", Stdout: &out}.Run(ctx) }()
	time.AfterFunc(200*time.Millisecond, cancel)
	var err error
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	pgid := pgidOf(t, &out)
	killLeftovers(t, pgid)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	testproc.WaitGroupGone(t, pgid, 2*time.Second)
}

// TestBackgroundHoldingOutput: a hook that exits at once but leaves a
// process holding its output open does not hold the caller for longer
// than WaitDelay, and succeeds.
func TestBackgroundHoldingOutput(t *testing.T) {
	var out hook.Tail
	h := hook.Hook{Command: "echo $$; sleep 100 & echo started", WaitDelay: 200 * time.Millisecond, Stdout: &out, Stderr: &out}
	start := time.Now()
	err := h.Run(t.Context())
	elapsed := time.Since(start)
	pgid := pgidOf(t, &out)
	killLeftovers(t, pgid)
	if err != nil {
		t.Errorf("Run = %v, want success", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("Run took %v, want about the 200ms WaitDelay", elapsed)
	}
	if !strings.Contains(out.String(), "started") {
		t.Errorf("output %q", out.String())
	}
}

func TestExitStatusAndEnvironment(t *testing.T) {
	var out, errOut hook.Tail
	h := hook.Hook{
		Command: `echo "$CONNWATCH_X $HOOK_BASE"; echo oops >&2; exit 3`,
		Env:     []string{"HOOK_BASE=base", "PATH=/usr/bin:/bin"}, ExtraEnv: []string{"CONNWATCH_X=extra"},
		Stdout: &out, Stderr: &errOut,
	}
	err := h.Run(t.Context())
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Errorf("Run = %v, want exit status 3", err)
	}
	if out.String() != "extra base\n" || errOut.String() != "oops\n" {
		t.Errorf("stdout %q, stderr %q", out.String(), errOut.String())
	}
}

func TestCanceledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := (hook.Hook{Command: "touch /nonexistent/never"}).Run(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

func TestTail(t *testing.T) {
	tb := &hook.Tail{Max: 8}
	for _, w := range []string{"abc", "defgh", "ij", strings.Repeat("x", 20) + "12345678", "9"} {
		if n, err := tb.Write([]byte(w)); n != len(w) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", w, n, err)
		}
	}
	if got := tb.String(); got != "23456789" {
		t.Errorf("tail = %q, want %q", got, "23456789")
	}
	tb = &hook.Tail{Max: 8}
	_, _ = tb.Write([]byte("abc"))
	_, _ = tb.Write([]byte("defghij"))
	if got := tb.String(); got != "cdefghij" {
		t.Errorf("tail = %q, want %q", got, "cdefghij")
	}
	var def hook.Tail
	_, _ = def.Write([]byte(strings.Repeat("y", 3*hook.DefaultTailMax)))
	if len(def.Bytes()) != hook.DefaultTailMax {
		t.Errorf("default tail keeps %d bytes", len(def.Bytes()))
	}
}
