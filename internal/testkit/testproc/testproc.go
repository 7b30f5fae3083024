// Package testproc holds what the test harnesses (sshdtest, wgtest,
// openvpntest) share about the processes they run: an output buffer safe
// for the goroutine that copies into it, and bounded waits on the channel
// a process's waiter closes; and, for trust-boundary tests, a real
// unprivileged user (HostileUser) and the processes it runs to pass for
// sshd (User.Impostor).
package testproc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for concurrent Write and String.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write implements io.Writer.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns what was written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// WaitClosed waits at most d for ch to be closed.
func WaitClosed(ch <-chan struct{}, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ch:
		return true
	case <-timer.C:
		return false
	}
}

// IsClosed tells whether ch is closed.
func IsClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Require skips the test, saying that it requires what, when ok is false;
// under CI=true, where everything must run, it fails the test instead.
// harness names the package asking.
func Require(t testing.TB, harness, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s: requires %s (CI=true, so this is a failure, not a skip)", harness, what)
	} else {
		t.Skipf("%s: requires %s", harness, what)
	}
}

// RequireBinary requires an executable by name (looked up in PATH) or by
// path, as Require does, and returns its path.
func RequireBinary(t testing.TB, harness, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, harness, fmt.Sprintf("executable %s (%v)", name, err), err == nil)
	return p
}

// WaitFor polls cond every millisecond until it holds, failing the test
// after d: for what another goroutine does in its own time (a timer armed
// on a fake clock, a delivery on loopback).
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(time.Millisecond)
	}
}
