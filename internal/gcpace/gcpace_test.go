package gcpace_test

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/gcpace"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// fakeRuntime records what a Pacer sets.
type fakeRuntime struct {
	mu      sync.Mutex
	percent int
	limit   int64
	live    uint64
	freed   int
	hooks   []func()
}

func newFakeRuntime() *fakeRuntime { return &fakeRuntime{percent: 100, limit: math.MaxInt64} }

// swap sets *field to v under r's lock and returns what it was.
func swap[T any](r *fakeRuntime, field *T, v T) T {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *field
	*field = v
	return old
}

func (r *fakeRuntime) SetGCPercent(p int) int       { return swap(r, &r.percent, p) }
func (r *fakeRuntime) SetMemoryLimit(l int64) int64 { return swap(r, &r.limit, l) }

func (r *fakeRuntime) FreeOSMemory() { r.mu.Lock(); r.freed++; r.mu.Unlock() }

func (r *fakeRuntime) LiveHeap() uint64 { r.mu.Lock(); defer r.mu.Unlock(); return r.live }

func (r *fakeRuntime) AfterGC(f func()) { r.mu.Lock(); r.hooks = append(r.hooks, f); r.mu.Unlock() }

// gc runs the hooks armed before it, as a collection that found live
// bytes live would.
func (r *fakeRuntime) gc(live uint64) {
	r.mu.Lock()
	r.live = live
	hooks := r.hooks
	r.hooks = nil
	r.mu.Unlock()
	for _, f := range hooks {
		f()
	}
}

func (r *fakeRuntime) pending() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.hooks) }

func (r *fakeRuntime) state() (int, int64, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.percent, r.limit, r.freed
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testproc.WaitFor(t, what, 5*time.Second, cond)
}

const budget = 18 << 20

// In a synctest bubble, so that "nothing happened yet" is checked once
// Run is blocked, not after a sleep.
func TestStreamingSettingsAndLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		clk := clock.NewFake(time.Unix(1e9, 0))
		p := gcpace.NewWith(rt, clk, budget, time.Second)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		p.Begin()
		if pc, l, _ := rt.state(); pc != -1 || l != budget {
			t.Fatalf("streaming: GOGC %d, limit %d; want off (-1) and the budget %d", pc, l, budget)
		}
		// Much live: the limit follows at three times it, and comes back
		// down to the budget when the live heap shrinks.
		rt.gc(10 << 20)
		if _, l, _ := rt.state(); l != 30<<20 || p.Limit() != 30<<20 {
			t.Fatalf("10 MiB live: limit %d (Limit %d); want %d", l, p.Limit(), 30<<20)
		}
		rt.gc(1 << 20)
		if _, l, _ := rt.state(); l != budget {
			t.Fatalf("1 MiB live: limit %d; want the budget %d", l, budget)
		}

		// A second stream; the first ends: nothing changes.
		p.Begin()
		p.End()
		if pc, _, _ := rt.state(); pc != -1 {
			t.Fatalf("one of two streams ended: GOGC %d; want still off", pc)
		}
		// The last ends: the settings stay Linger, then go back.
		p.End()
		waitFor(t, "the linger timer", func() bool { _, ok := clk.NextDeadline(); return ok })
		clk.Advance(999 * time.Millisecond)
		synctest.Wait() // Run has done what it would do now
		if pc, _, freed := rt.state(); pc != -1 || freed != 0 {
			t.Fatalf("before Linger: GOGC %d, freed %d; want the streaming settings kept", pc, freed)
		}
		clk.Advance(time.Millisecond)
		waitFor(t, "the settings back", func() bool { pc, l, f := rt.state(); return pc == 100 && l == math.MaxInt64 && f == 1 })
		if p.Limit() != 0 {
			t.Errorf("Limit at rest = %d; want 0", p.Limit())
		}
		// A hook armed while streaming that runs after does nothing.
		rt.gc(50 << 20)
		if _, l, _ := rt.state(); l != math.MaxInt64 {
			t.Errorf("stale hook set the limit to %d at rest", l)
		}

		// A stream that starts again within Linger keeps the settings.
		p.Begin()
		p.End()
		waitFor(t, "the linger timer", func() bool { _, ok := clk.NextDeadline(); return ok })
		clk.Advance(500 * time.Millisecond)
		p.Begin()
		clk.Advance(time.Second)
		synctest.Wait()
		if pc, _, freed := rt.state(); pc != -1 || freed != 1 {
			t.Fatalf("stream back within Linger: GOGC %d, freed %d; want off, 1", pc, freed)
		}
		// Ending Run puts them back even while streaming.
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if pc, l, freed := rt.state(); pc != 100 || l != math.MaxInt64 || freed != 2 {
			t.Errorf("after Run: GOGC %d, limit %d, freed %d; want 100, MaxInt64, 2", pc, l, freed)
		}
		// A copy that streams after Run returned (its connection not yet
		// closed) changes nothing: no one would put the settings back.
		p.End()
		p.Begin()
		if pc, l, _ := rt.state(); pc != 100 || l != math.MaxInt64 {
			t.Errorf("Begin after Run: GOGC %d, limit %d; want 100, MaxInt64", pc, l)
		}

	})
}

// A hook armed in an earlier streaming period that fires in a later one
// does nothing: one chain of hooks at a time.
func TestStaleHookDropped(t *testing.T) {
	rt := newFakeRuntime()
	clk := clock.NewFake(time.Unix(1e9, 0))
	p := gcpace.NewWith(rt, clk, budget, time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go p.Run(ctx)
	p.Begin()
	p.End()
	waitFor(t, "the linger timer", func() bool { _, ok := clk.NextDeadline(); return ok })
	clk.Advance(time.Second)
	waitFor(t, "the settings back", func() bool { _, _, f := rt.state(); return f == 1 })
	p.Begin() // the first period's hook is still pending
	if n := rt.pending(); n != 2 {
		t.Fatalf("%d hooks pending, want 2 (one stale)", n)
	}
	rt.gc(10 << 20)
	if n := rt.pending(); n != 1 {
		t.Errorf("after a collection %d hooks pending, want 1", n)
	}
	if _, l, _ := rt.state(); l != 30<<20 {
		t.Errorf("limit %d, want %d", l, 30<<20)
	}
}

func TestNilPacer(t *testing.T) {
	var p *gcpace.Pacer
	p.Begin()
	p.End()
	if p.Limit() != 0 {
		t.Fatal("nil Pacer has a limit")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := p.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestEnvironmentWins(t *testing.T) {
	t.Setenv("GOMEMLIMIT", "64MiB")
	if p := gcpace.New(clock.Real{}); p != nil {
		t.Error("New with GOMEMLIMIT set returned a Pacer")
	}
	t.Setenv("GOMEMLIMIT", "")
	t.Setenv("GOGC", "50")
	if p := gcpace.New(clock.Real{}); p != nil {
		t.Error("New with GOGC set returned a Pacer")
	}
}

// gogc is the collector's GOGC now, -1 for off.
func gogc() int64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// TestRealRuntime runs a Pacer on this process's collector: the limit
// follows what a real collection found live.
func TestRealRuntime(t *testing.T) {
	if v := gogc(); v != 100 {
		t.Skipf("GOGC is %d here, not the default", v)
	}
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	defer debug.SetGCPercent(100)
	defer debug.SetMemoryLimit(math.MaxInt64)
	clk := clock.NewFake(time.Unix(1e9, 0))
	p := gcpace.NewWith(gcpace.Go(), clk, 32<<20, time.Second)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	p.Begin()
	if l := debug.SetMemoryLimit(-1); l < 32<<20 || gogc() != -1 {
		t.Fatalf("streaming: limit %d, GOGC %d; want at least %d and off", l, gogc(), 32<<20)
	}
	live := make([][]byte, 40)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	waitFor(t, "the limit to follow 40 MiB live", func() bool {
		runtime.GC()
		return debug.SetMemoryLimit(-1) >= 120<<20
	})
	runtime.KeepAlive(live)
	live = nil
	p.End()
	waitFor(t, "the linger timer", func() bool { _, ok := clk.NextDeadline(); return ok })
	clk.Advance(time.Second)
	waitFor(t, "the settings back", func() bool { return debug.SetMemoryLimit(-1) == math.MaxInt64 && gogc() == 100 })
	cancel()
	<-done
}
