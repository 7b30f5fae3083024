package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a Clock that moves only when told to. Timers and tickers fire,
// in deadline order, from Advance and Set. StepWall moves the wall clock
// alone, as an NTP step or `date -s` does.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	// elapsed is Elapsed at the reading now; step is how far the wall
	// clock has been stepped in total, so elapsed = now - start - step.
	start time.Time
	step  time.Duration
}

// FakeBootElapsed is what a new Fake's Elapsed reads: the fake machine
// booted that long before the clock's start.
const FakeBootElapsed = time.Hour

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock reading start.
func NewFake(start time.Time) *Fake { return &Fake{now: start, start: start} }

// Elapsed implements Clock: FakeBootElapsed plus how far Advance and Set
// moved the clock; StepWall does not move it.
func (f *Fake) Elapsed() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return FakeBootElapsed + f.now.Sub(f.start) - f.step
}

// StepWall steps the wall clock by d (forward or back) without time
// passing: Elapsed stays, and timers, which run on elapsed time like the
// runtime's, neither fire nor move closer to firing.
func (f *Fake) StepWall(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	f.step += d
	for _, ft := range f.timers {
		ft.when = ft.when.Add(d)
	}
}

// Now implements Clock.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock forward by d, firing what falls due.
func (f *Fake) Advance(d time.Duration) { f.Set(f.Now().Add(d)) }

// Set moves the clock to t (never backwards), firing what falls due in
// deadline order.
func (f *Fake) Set(t time.Time) {
	for {
		f.mu.Lock()
		if t.Before(f.now) {
			f.mu.Unlock()
			return
		}
		var next *fakeTimer
		for _, ft := range f.timers {
			if ft.active && !ft.when.After(t) && (next == nil || ft.when.Before(next.when)) {
				next = ft
			}
		}
		if next == nil {
			f.now = t
			f.mu.Unlock()
			return
		}
		if next.when.After(f.now) {
			f.now = next.when
		}
		next.fire(f.now)
		f.mu.Unlock()
	}
}

// NextDeadline returns the earliest pending timer or tick, if any.
func (f *Fake) NextDeadline() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ds []time.Time
	for _, ft := range f.timers {
		if ft.active {
			ds = append(ds, ft.when)
		}
	}
	if len(ds) == 0 {
		return time.Time{}, false
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].Before(ds[j]) })
	return ds[0], true
}

// NewTimer implements Clock.
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := &fakeTimer{clock: f, ch: make(chan time.Time, 1), when: f.now.Add(d), active: true}
	f.timers = append(f.timers, ft)
	return ft
}

// NewTicker implements Clock.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker interval")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ft := &fakeTimer{clock: f, ch: make(chan time.Time, 1), when: f.now.Add(d), period: d, active: true}
	f.timers = append(f.timers, ft)
	return fakeTicker{ft}
}

type fakeTimer struct {
	clock  *Fake
	ch     chan time.Time
	when   time.Time
	period time.Duration
	active bool
}

// fire delivers a tick; called with the clock's lock held. Like the
// runtime's, a tick is dropped when the previous one was not received.
func (ft *fakeTimer) fire(now time.Time) {
	select {
	case ft.ch <- now:
	default:
	}
	if ft.period > 0 {
		ft.when = ft.when.Add(ft.period)
		return
	}
	ft.active = false
}

func (ft *fakeTimer) C() <-chan time.Time { return ft.ch }

func (ft *fakeTimer) Stop() bool {
	ft.clock.mu.Lock()
	defer ft.clock.mu.Unlock()
	was := ft.active
	ft.active = false
	return was
}

func (ft *fakeTimer) Reset(d time.Duration) bool {
	ft.clock.mu.Lock()
	defer ft.clock.mu.Unlock()
	was := ft.active
	ft.when = ft.clock.now.Add(d)
	ft.active = true
	// Drain a stale tick, as time.Timer.Reset does since Go 1.23.
	select {
	case <-ft.ch:
	default:
	}
	return was
}

type fakeTicker struct{ ft *fakeTimer }

func (t fakeTicker) C() <-chan time.Time { return t.ft.ch }
func (t fakeTicker) Stop()               { t.ft.Stop() }
func (t fakeTicker) Reset(d time.Duration) {
	t.ft.clock.mu.Lock()
	defer t.ft.clock.mu.Unlock()
	t.ft.period = d
	t.ft.when = t.ft.clock.now.Add(d)
	t.ft.active = true
}
