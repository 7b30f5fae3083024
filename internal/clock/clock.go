// Package clock puts time behind an interface so that timers, idle windows
// and backoff can be tested by advancing a fake clock instead of sleeping.
package clock

import (
	"time"

	"golang.org/x/sys/unix"
)

// Clock tells the time and makes timers.
type Clock interface {
	// Now is the wall clock. It may step (NTP corrections, an operator's
	// date, resume from hibernation): measure how long something lasted
	// with Elapsed, not with the difference of two wall readings.
	Now() time.Time
	// Elapsed is the time since boot by a clock that wall-clock steps do
	// not move and that keeps counting while the machine is suspended
	// (CLOCK_BOOTTIME). Zero means unknown.
	Elapsed() time.Duration
	NewTimer(d time.Duration) Timer
	NewTicker(d time.Duration) Ticker
}

// Timer is a time.Timer behind an interface.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// Ticker is a time.Ticker behind an interface.
type Ticker interface {
	C() <-chan time.Time
	Stop()
	Reset(d time.Duration)
}

// Real is the system clock.
type Real struct{}

var _ Clock = Real{}

// Now implements Clock.
func (Real) Now() time.Time { return time.Now() }

// Elapsed implements Clock: CLOCK_BOOTTIME, or 0 when it cannot be read.
func (Real) Elapsed() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// NewTimer implements Clock.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

// NewTicker implements Clock.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time        { return r.t.C }
func (r realTimer) Stop() bool                 { return r.t.Stop() }
func (r realTimer) Reset(d time.Duration) bool { return r.t.Reset(d) }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time   { return r.t.C }
func (r realTicker) Stop()                 { r.t.Stop() }
func (r realTicker) Reset(d time.Duration) { r.t.Reset(d) }
