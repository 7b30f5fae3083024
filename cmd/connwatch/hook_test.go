package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// TestWarnHookKilledWithItsChildren: --warn-command 'sleep 100; true'
// once left sleep orphaned after its shell was killed, and the hook
// pending until sleep ended (sleep held the output pipe). Now the whole
// process group goes.
func TestWarnHookKilledWithItsChildren(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := runHook(ctx, "echo $$ >"+pidFile+"; sleep 100; true", event.Event{Type: event.StopWarning, Reason: "idle"})
	elapsed := time.Since(start)
	b, rerr := os.ReadFile(pidFile)
	pgid, aerr := strconv.Atoi(strings.TrimSpace(string(b)))
	if rerr != nil || aerr != nil {
		t.Fatalf("hook's pid: %q, %v, %v", b, rerr, aerr)
	}
	t.Cleanup(func() {
		if len(testproc.GroupMembers(pgid)) > 0 {
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("runHook = %v, want the deadline", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("runHook took %v, want about 300ms", elapsed)
	}
	testproc.WaitGroupGone(t, pgid, 2*time.Second)
}
