// Package hook runs the shell commands users give connwatch (the command
// action, the warning hook, the notification command): `/bin/sh -c
// COMMAND` with extra environment variables, bounded in time, in a process
// group of its own. When the time is up or the context ends, the whole
// group gets SIGTERM and, after a grace period, SIGKILL: what the shell
// started (`sleep 100; true`) ends with it instead of being orphaned, and
// the caller returns promptly. A process a hook leaves in the background
// while exiting normally is left alone, but never holds the caller for
// longer than WaitDelay by keeping the output pipes open.
package hook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
)

// Defaults of a Hook's zero fields.
const (
	DefaultShell     = "/bin/sh"
	DefaultGrace     = 2 * time.Second
	DefaultWaitDelay = time.Second
)

// Hook is one shell command to run.
type Hook struct {
	// Command is the shell command line, run as `Shell -c Command`.
	Command string
	// Shell defaults to DefaultShell.
	Shell string
	// Env is the environment; nil means the agent's own. ExtraEnv
	// (NAME=VALUE) is added to it.
	Env      []string
	ExtraEnv []string
	// Timeout bounds the run; zero means only the context does.
	Timeout time.Duration
	// Grace is the time between SIGTERM and SIGKILL to the process group;
	// zero means DefaultGrace.
	Grace time.Duration
	// WaitDelay bounds how long the output is waited for after the shell
	// exited (a background process may hold the pipes); zero means
	// DefaultWaitDelay.
	WaitDelay time.Duration
	// Stdout and Stderr receive the output (nil: discarded). Bound what
	// they keep: see Tail.
	Stdout, Stderr io.Writer
	// Clock times the grace period; nil means the system clock.
	Clock clock.Clock
}

// Run runs the hook and waits for it. It returns nil when the shell exits
// with status 0; an *exec.ExitError for another status; an error wrapping
// context.DeadlineExceeded when Timeout ran out, or the context's error
// when it ended first (the process group is killed in both cases). The
// errors do not repeat the command: callers name it.
func (h Hook) Run(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("not started: %w", err)
	}
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	shell := h.Shell
	if shell == "" {
		shell = DefaultShell
	}
	env := h.Env
	if env == nil {
		env = os.Environ()
	}
	cmd := exec.Command(shell, "-c", h.Command)
	cmd.Env = append(env[:len(env):len(env)], h.ExtraEnv...)
	cmd.Stdout, cmd.Stderr = h.Stdout, h.Stderr
	// Its own process group (pgid = the shell's pid), so that one signal
	// reaches everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = orDefault(h.WaitDelay, DefaultWaitDelay)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", shell, err)
	}
	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		waitExited(pgid)
		close(exited)
	}()
	var stopped error
	select {
	case <-exited:
	case <-ctx.Done():
		stopped = ctx.Err()
		h.killGroup(pgid, exited)
	}
	err := cmd.Wait()
	switch {
	case stopped != nil:
		if errors.Is(stopped, context.DeadlineExceeded) && h.Timeout > 0 {
			return fmt.Errorf("killed after %v: %w", h.Timeout, stopped)
		}
		return fmt.Errorf("killed: %w", stopped)
	case errors.Is(err, exec.ErrWaitDelay):
		// The shell exited 0; something it left in the background kept
		// the output open and lost the rest of it.
		return nil
	}
	return err // nil, or an *exec.ExitError
}

// killGroup sends SIGTERM to the process group, then SIGKILL once the
// shell has exited or the grace period is over, whichever comes first:
// what the shell started and still runs gets no longer than the shell.
// The shell is not yet reaped (waitExited uses WNOWAIT), so its pid, the
// group's id, cannot have been reused by an unrelated process group.
func (h Hook) killGroup(pgid int, exited <-chan struct{}) {
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	clk := h.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	grace := clk.NewTimer(orDefault(h.Grace, DefaultGrace))
	defer grace.Stop()
	select {
	case <-exited:
	case <-grace.C():
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
}

// waitExited blocks until process pid has exited, without reaping it.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Tail is an io.Writer that keeps the last Max bytes written to it
// (DefaultTailMax when Max is zero): a hook's output, bounded.
type Tail struct {
	Max int
	b   []byte
}

// DefaultTailMax is how much of a hook's output a Tail keeps by default.
const DefaultTailMax = 4 << 10

// Write implements io.Writer.
func (t *Tail) Write(p []byte) (int, error) {
	n, max := len(p), t.Max
	if max <= 0 {
		max = DefaultTailMax
	}
	if len(p) >= max {
		t.b = append(t.b[:0], p[len(p)-max:]...)
		return n, nil
	}
	if over := len(t.b) + len(p) - max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	t.b = append(t.b, p...)
	return n, nil
}

// Bytes returns what the Tail keeps.
func (t *Tail) Bytes() []byte { return t.b }

// String returns what the Tail keeps.
func (t *Tail) String() string { return string(t.b) }
