package tunnel

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// TestStatusWriter checks that a state change is written at once, a new
// keepalive RTT only on the next tick, and that the file goes on exit.
func TestStatusWriter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), StatusDir)
	clk := clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	w := NewStatusWriter(dir, quiet)
	w.Clock = clk
	tun := New(Spec{Host: "a/b", Forwards: []Forward{{Kind: Local, BindPort: 1, DestHost: "h", DestPort: 2}}},
		Options{Clock: clk, Logger: quiet, OnChange: w.Changed})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, []*Tunnel{tun}) }()

	path := StatusPath(dir, "a/b")
	if filepath.Dir(path) != dir {
		t.Fatalf("StatusPath escapes dir: %s", path)
	}
	read := func() StatusFile {
		var fs []StatusFile
		fs, _ = ReadStatusFiles(dir)
		if len(fs) != 1 {
			return StatusFile{}
		}
		return fs[0]
	}
	within(t, 2*time.Second, "first write", func() bool { return read().State == StateConnecting })
	if f := read(); f.PID != os.Getpid() || f.Stale || f.Host != "a/b" || len(f.Forwards) != 1 {
		t.Errorf("first write: %+v", f)
	}
	tun.setState(StateUp, nil)
	within(t, 2*time.Second, "state change written at once", func() bool { return read().State == StateUp })

	tun.mu.Lock()
	tun.st.KeepaliveRTT = 7 * time.Millisecond
	tun.mu.Unlock()
	tun.changed(false)
	time.Sleep(20 * time.Millisecond)
	if f := read(); f.KeepaliveRTT != 0 {
		t.Errorf("RTT written before the tick: %v", f.KeepaliveRTT)
	}
	clk.Advance(5 * time.Second)
	within(t, 2*time.Second, "RTT written on the tick", func() bool { return read().KeepaliveRTT == 7*time.Millisecond })

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("status file left after Run: %v", err)
	}
}
