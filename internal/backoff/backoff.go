// Package backoff is the one retry schedule of connwatch's sinks and
// tunnels: jittered exponential backoff. The wait after the nth
// consecutive failure is Min·2ⁿ⁻¹, capped at Max, less a random part of
// its upper half, so that retriers that failed together (outboxes after
// one network outage, tunnels after one cut) do not all retry together.
// It never gives up; callers decide when to stop.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Policy is a backoff schedule. The zero Rand uses math/rand/v2.
type Policy struct {
	Min, Max time.Duration
	// Rand returns a number in [0, 1); tests fix it.
	Rand func() float64
}

// Wait returns the wait after failures consecutive failures (1 for the
// first): a random duration in [d/2, d] where d = Min·2^(failures-1)
// capped at Max. failures < 1 counts as 1.
func (p Policy) Wait(failures int) time.Duration {
	d := p.Min
	for i := 1; i < failures && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	r := p.Rand
	if r == nil {
		r = rand.Float64
	}
	half := d / 2
	return half + time.Duration(r()*float64(d-half))
}

// Backoff counts consecutive failures against a Policy.
type Backoff struct {
	Policy
	failures int
}

// Next counts a failure and returns the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Wait(b.failures)
}

// Failures is how many failures Next counted since the last Reset.
func (b *Backoff) Failures() int { return b.failures }

// Reset starts over from Min, after a success or a healthy period.
func (b *Backoff) Reset() { b.failures = 0 }
