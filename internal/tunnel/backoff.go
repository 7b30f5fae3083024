package tunnel

import (
	"math/rand/v2"
	"time"
)

// Backoff is jittered exponential backoff: attempt n waits a random time
// in [d/2, d] where d = Min·2ⁿ capped at Max. It never gives up.
type Backoff struct {
	Min, Max time.Duration
	// Rand returns a number in [0, 1); nil uses math/rand/v2.
	Rand func() float64

	attempt int
}

// Next returns the wait before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	d := b.Min
	for i := 0; i < b.attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	b.attempt++
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	return d/2 + time.Duration(r()*float64(d/2))
}

// Reset starts over from Min, after a healthy period.
func (b *Backoff) Reset() { b.attempt = 0 }
