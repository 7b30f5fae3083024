// Package gcpace paces the Go garbage collector of a process that mostly
// waits and now and then streams data through x/crypto/ssh.
//
// At rest the collector keeps its own pacing (GOGC=100: the heap may grow
// to twice what is live, at least 4 MB, and a collection runs at least
// every two minutes). Streaming is different: x/crypto/ssh reads every
// packet into a fresh 32 KiB buffer, which at 300 MB/s is a collection
// every 10 ms, and as the heap swings between what is live and twice
// that, the runtime's scavenger keeps returning pages to the kernel that
// the next packets fault in again (page faults and TLB shootdowns were an
// eighth of the tunnel's CPU time).
//
// While at least one stream runs, a Pacer turns proportional pacing off
// and sets a memory limit instead: Budget, or three times what the last
// collection found live, whichever is more. The collector then runs when
// the process's memory reaches the limit, and the pages below it stay
// mapped. Linger after the last stream ended, it puts the settings back
// and gives the freed memory back to the kernel at once.
//
// Nothing is changed when GOGC or GOMEMLIMIT is set in the environment:
// the operator's choice wins.
package gcpace

import (
	"context"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// Defaults of a Pacer.
const (
	// DefaultBudget is the memory limit while streaming when little is
	// live. Measured with scripts/bench-tunnel.sh: 16 MiB held about 4 MB
	// less than GOGC=100 at the same throughput, 20 MiB as much memory at
	// 15 % more download throughput; 18 MiB sits between.
	DefaultBudget = 18 << 20
	// DefaultLinger is how long after the last stream the streaming
	// settings stay, so that a stream that pauses does not flip them.
	DefaultLinger = time.Second
	// liveFactor is how many times the live heap the limit is at least,
	// so that a process with much live data keeps room to collect in
	// (a limit near what is live would collect all the time). The limit
	// covers all the runtime's memory, not the heap alone, and it rises
	// only after a collection: many streams starting at once can collect
	// back to back until then (the runtime caps that at half the CPU).
	liveFactor = 3
)

// Runtime is the collector a Pacer sets.
type Runtime interface {
	SetGCPercent(percent int) (old int)
	SetMemoryLimit(limit int64) (old int64)
	FreeOSMemory()
	// LiveHeap is the heap the last collection found live, in bytes.
	LiveHeap() uint64
	// AfterGC calls f once, soon after the next collection.
	AfterGC(f func())
}

// A Pacer switches the collector's settings by whether streams run. The
// nil Pacer does nothing.
type Pacer struct {
	budget int64
	linger time.Duration
	clock  clock.Clock
	rt     Runtime

	mu         sync.Mutex
	n          int       // streams running
	on         bool      // the streaming settings are in force
	closed     bool      // Run returned: Begin changes nothing any more
	gen        int       // counts switches on: a stale AfterGC hook is dropped
	limit      int64     // the limit set while on
	oldPercent int       // the settings from before, put back when off
	oldLimit   int64     // ...
	quietSince time.Time // when n last became 0
	wake       chan struct{}
}

// New returns a Pacer for this process (runtime/debug), or nil when GOGC
// or GOMEMLIMIT is set in the environment.
func New(c clock.Clock) *Pacer {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	return NewWith(goRuntime{}, c, DefaultBudget, DefaultLinger)
}

// NewWith returns a Pacer of rt (tests).
func NewWith(rt Runtime, c clock.Clock, budget int64, linger time.Duration) *Pacer {
	return &Pacer{rt: rt, clock: c, budget: budget, linger: linger, wake: make(chan struct{}, 1)}
}

// Begin tells that a stream started; End must follow.
func (p *Pacer) Begin() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed { // no Run left to put the settings back
		return
	}
	p.n++
	if p.on {
		return
	}
	p.on = true
	p.gen++
	p.limit = p.wantLimit()
	// The limit first: proportional pacing off with no limit would let
	// the heap grow without bound for a moment.
	p.oldLimit = p.rt.SetMemoryLimit(p.limit)
	p.oldPercent = p.rt.SetGCPercent(-1)
	p.armLocked()
}

// End tells that a stream that Began stopped.
func (p *Pacer) End() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return
	}
	p.n--
	if p.n == 0 {
		p.quietSince = p.clock.Now()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// armLocked has the limit checked after the next collection.
func (p *Pacer) armLocked() {
	gen := p.gen
	p.rt.AfterGC(func() { p.afterGC(gen) })
}

// afterGC raises (or lowers, down to the budget) the limit to liveFactor
// times what is live now, while the settings it was armed for last.
func (p *Pacer) afterGC(gen int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on || gen != p.gen {
		return
	}
	want := p.wantLimit()
	if want != p.limit {
		p.limit = want
		p.rt.SetMemoryLimit(want)
	}
	p.armLocked()
}

// wantLimit is the limit for what the last collection found live: the
// budget, or liveFactor times the live heap if that is more.
func (p *Pacer) wantLimit() int64 {
	return max(p.budget, int64(min(liveFactor*p.rt.LiveHeap(), math.MaxInt64/2)))
}

// Limit is the memory limit in force while streaming, 0 at rest (tests,
// status).
func (p *Pacer) Limit() int64 {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on {
		return 0
	}
	return p.limit
}

// Run puts the settings back Linger after the last stream ended, and
// when ctx ends.
func (p *Pacer) Run(ctx context.Context) error {
	if p == nil {
		<-ctx.Done()
		return nil
	}
	t := p.clock.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.off(true)
			return nil
		case <-p.wake:
		case <-t.C():
		}
		if wait, ok := p.offAt(); ok {
			if wait > 0 {
				t.Reset(wait)
				continue
			}
			p.off(false)
		}
	}
}

// offAt tells whether the settings are to go back and in how long.
func (p *Pacer) offAt() (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.on || p.n > 0 {
		return 0, false
	}
	return p.linger - p.clock.Now().Sub(p.quietSince), true
}

// off puts the settings back (always, or if no stream runs) and gives
// the freed memory back; always also closes the Pacer.
func (p *Pacer) off(always bool) {
	p.mu.Lock()
	if always {
		p.closed = true
	}
	if !p.on || (p.n > 0 && !always) {
		p.mu.Unlock()
		return
	}
	p.on = false
	p.gen++
	p.rt.SetGCPercent(p.oldPercent)
	p.rt.SetMemoryLimit(p.oldLimit)
	p.mu.Unlock()
	p.rt.FreeOSMemory()
}

// Go is this process's collector.
func Go() Runtime { return goRuntime{} }

type goRuntime struct{}

func (goRuntime) SetGCPercent(percent int) int     { return debug.SetGCPercent(percent) }
func (goRuntime) SetMemoryLimit(limit int64) int64 { return debug.SetMemoryLimit(limit) }
func (goRuntime) FreeOSMemory()                    { debug.FreeOSMemory() }

func (goRuntime) LiveHeap() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// sentinel is what AfterGC watches: big enough (and with a pointer) not
// to share a tiny block with other objects.
type sentinel struct {
	_ *int
	_ [16]byte
}

func (goRuntime) AfterGC(f func()) {
	runtime.AddCleanup(new(sentinel), func(f func()) { f() }, f)
}
