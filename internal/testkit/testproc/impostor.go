package testproc

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Impostor is a chain of processes that u runs to pass for sshd: each is
// a copy of cat named "sshd" (so that its comm is "sshd") in a directory
// u owns, started by bash's `exec -a TITLE` so that its whole command
// line is TITLE, and each is the parent of the next. They block reading a
// FIFO until the test ends.
type Impostor struct {
	// PIDs are the processes, in the order of the titles.
	PIDs []int
	// Exe is the impostors' executable.
	Exe string
}

// Impostor starts the chain of titles as u, waits (at most 10 s) until
// every process carries its title, and stops them at the end of the test.
// For example "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
// "sshd: root [priv]", "sshd: root@pts/9" build a fake listener with a
// fake root tty session under it.
func (u User) Impostor(t testing.TB, titles ...string) *Impostor {
	t.Helper()
	bash := RequireBinary(t, "testproc", "bash")
	cat := RequireBinary(t, "testproc", "cat")
	dir := u.tempDir(t, "impostor")
	exe := filepath.Join(dir, "sshd")
	// Build the chain from the innermost process outwards: each level
	// starts the next in the background, then becomes its own title.
	script := ""
	for i := len(titles) - 1; i >= 0; i-- {
		self := fmt.Sprintf("exec -a %s ./sshd <&3", shellQuote(titles[i]))
		if script == "" {
			script = self
		} else {
			script = fmt.Sprintf("( %s ) & %s", script, self)
		}
	}
	full := fmt.Sprintf("set -e; cd %s; cp %s ./sshd; mkfifo hold; exec 3<>hold; %s", shellQuote(dir), cat, script)
	var out Buffer
	pid, done := u.startGroup(t, "impostor", &out, bash, "-c", full)
	im := &Impostor{Exe: exe}
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, ok := chainOf(pid, titles)
		if ok {
			im.PIDs = pids
			return im
		}
		if time.Now().After(deadline) || IsClosed(done) {
			t.Fatalf("impostor: the chain %q did not appear (got pids %v); output: %s", titles, pids, out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tempDir makes a directory u owns, removed at the end of the test.
func (u User) tempDir(t testing.TB, what string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", what)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	u.Chown(t, dir)
	return dir
}

// startGroup starts name as u in a process group of its own, killed
// (the whole group) and reaped at the end of the test. done is closed
// when it has been reaped.
func (u User) startGroup(t testing.TB, what string, out *Buffer, name string, args ...string) (pid int, done <-chan struct{}) {
	t.Helper()
	cmd := u.Command(name, args...)
	cmd.SysProcAttr.Setpgid = true
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start %s as %s: %v", what, name, u.Name, err)
	}
	reaped := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(reaped)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if !WaitClosed(reaped, 10*time.Second) {
			t.Errorf("%s: pid %d not reaped", what, cmd.Process.Pid)
		}
	})
	return cmd.Process.Pid, reaped
}

// chainOf follows root's descendants, one per title, and reports whether
// each carries its title.
func chainOf(root int, titles []string) ([]int, bool) {
	pids := []int{root}
	for i, title := range titles {
		pid := pids[i]
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if err != nil || strings.TrimRight(string(b), "\x00") != title {
			return pids, false
		}
		if i == len(titles)-1 {
			return pids, true
		}
		kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		f := strings.Fields(string(kids))
		if err != nil || len(f) != 1 {
			return pids, false
		}
		child, err := strconv.Atoi(f[0])
		if err != nil {
			return pids, false
		}
		pids = append(pids, child)
	}
	return pids, true
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ForkLoop starts, as u, a copy of bash named "sshd-forker" (its comm
// starts with "sshd") that forks a subshell in a loop for d, and returns
// its pid. It is killed at the end of the test.
func (u User) ForkLoop(t testing.TB, d time.Duration) int {
	t.Helper()
	bash := RequireBinary(t, "testproc", "bash")
	forker := filepath.Join(u.tempDir(t, "forker"), "sshd-forker")
	b, err := os.ReadFile(bash)
	if err != nil {
		t.Fatalf("fork loop: %v", err)
	}
	if err := os.WriteFile(forker, b, 0o755); err != nil {
		t.Fatalf("fork loop: %v", err)
	}
	u.Chown(t, forker)
	script := fmt.Sprintf("end=$((SECONDS + %d)); while [ $SECONDS -lt $end ]; do (:); done", int(d.Seconds()+0.5))
	pid, _ := u.startGroup(t, "fork loop", nil, forker, "-c", script)
	return pid
}
