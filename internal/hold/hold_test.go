package hold

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/policy"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func TestLocksFollowTheirProcessAndTTL(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "holds")}
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	withProc, err := s.Acquire("backup", "sleep 30", cmd.Process.Pid, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	timed, err := s.Acquire("deploy", "", 0, t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire("x", "", 0, t0, 0); err != ErrNoLimit {
		t.Errorf("no limit: %v", err)
	}
	live, stale, err := s.List(t0.Add(time.Minute))
	if err != nil || len(live) != 2 || len(stale) != 0 {
		t.Fatalf("live %v stale %v err %v", live, stale, err)
	}
	holds, _ := s.Holds(t0.Add(time.Minute))
	if len(holds) != 2 || holds[0].Kind != "inhibit" {
		t.Errorf("holds %v", holds)
	}

	// TTL over.
	live, stale, _ = s.List(t0.Add(2 * time.Hour))
	if len(live) != 1 || live[0].ID != withProc.ID || len(stale) != 1 || stale[0].ID != timed.ID {
		t.Errorf("after ttl: live %v stale %v", live, stale)
	}
	// Process gone.
	cmd.Process.Kill()
	cmd.Wait()
	live, _, _ = s.List(t0.Add(time.Minute))
	if len(live) != 1 || live[0].ID != timed.ID {
		t.Errorf("after exit: live %v", live)
	}
	if err := s.Release(timed.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Release(timed.ID); err != nil {
		t.Errorf("second release: %v", err)
	}
	live, _, _ = s.List(t0.Add(time.Minute))
	if len(live) != 0 {
		t.Errorf("after release: %v", live)
	}
}

func TestReusedPIDIsStale(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	l, err := s.Acquire("x", "", os.Getpid(), t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.PIDStart++ // as if another process had our PID now
	if err := atomicfile.WriteJSON(s.path(l.ID), l, 0o644); err != nil {
		t.Fatal(err)
	}
	live, stale, _ := s.List(t0)
	if len(live) != 0 || len(stale) != 1 {
		t.Errorf("live %v stale %v", live, stale)
	}
}

func TestProcessesAndLoad(t *testing.T) {
	cmd := exec.Command("sleep", "31.5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	holds, err := Processes("", []*regexp.Regexp{regexp.MustCompile(`^sleep 31\.5$`), regexp.MustCompile(`no-such-thing-\d+`)})
	if err != nil || len(holds) != 1 || holds[0].Kind != "process" {
		t.Errorf("holds %v err %v", holds, err)
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "loadavg"), []byte("2.50 1.00 0.50 1/100 1234\n"), 0o644)
	if h, _ := Load(dir, 2); len(h) != 1 {
		t.Errorf("load 2.5 >= 2: %v", h)
	}
	if h, _ := Load(dir, 3); len(h) != 0 {
		t.Errorf("load 2.5 < 3: %v", h)
	}
	if h, _ := Load(dir, 0); len(h) != 0 {
		t.Errorf("threshold 0: %v", h)
	}
	// NaN compares false with everything: it once held the machine up
	// forever (load < NaN is false).
	for _, th := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1} {
		if h, err := Load(dir, th); len(h) != 0 || err != nil {
			t.Errorf("threshold %v: holds %v, err %v", th, h, err)
		}
	}
	os.WriteFile(filepath.Join(dir, "loadavg"), []byte("nan 1.00 0.50 1/100 1234\n"), 0o644)
	if h, err := Load(dir, 2); len(h) != 0 || err != nil {
		t.Errorf("load NaN: holds %v, err %v", h, err)
	}
}

func TestEvery(t *testing.T) {
	calls := 0
	f := Every(5*time.Second, func(time.Time) ([]policy.Hold, error) {
		calls++
		return []policy.Hold{{Kind: "process"}}, nil
	})
	for i := 0; i < 12; i++ {
		if h, _ := f(t0.Add(time.Duration(i) * time.Second)); len(h) != 1 {
			t.Fatalf("call %d: %v", i, h)
		}
	}
	if calls != 3 { // at 0s, 5s, 10s
		t.Errorf("consulted %d times, want 3", calls)
	}
}

func TestUnreadableLockHolds(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if err := os.WriteFile(filepath.Join(s.Dir, "abc.json"), []byte(`{"id":"abc","pid":`), 0o644); err != nil {
		t.Fatal(err)
	}
	live, _, err := s.List(t0)
	if err != nil || len(live) != 1 || live[0].ID != "abc" {
		t.Errorf("a torn lock file must hold: live %v err %v", live, err)
	}
}
