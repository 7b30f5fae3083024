package backoff

import (
	"testing"
	"time"
)

func TestWait(t *testing.T) {
	for _, tc := range []struct {
		r        float64
		failures int
		want     time.Duration
	}{
		{0, 1, 500 * time.Millisecond}, // d = 1s: [0.5s, 1s]
		{0.999999, 1, 999999500 * time.Nanosecond},
		{0, 2, time.Second},
		{0, 3, 2 * time.Second},
		{0, 0, 500 * time.Millisecond}, // counts as the first
		{0, 7, 5 * time.Second},        // 64s capped at 10s
		{0, 1000, 5 * time.Second},     // no overflow
		{0.5, 1000, 7500 * time.Millisecond},
	} {
		p := Policy{Min: time.Second, Max: 10 * time.Second, Rand: func() float64 { return tc.r }}
		if got := p.Wait(tc.failures); got != tc.want {
			t.Errorf("Wait(%d) with rand %v = %v, want %v", tc.failures, tc.r, got, tc.want)
		}
	}
}

func TestBackoffNextAndReset(t *testing.T) {
	b := Backoff{Policy: Policy{Min: 250 * time.Millisecond, Max: 10 * time.Second, Rand: func() float64 { return 1 }}}
	var got []time.Duration
	for range 8 {
		got = append(got, b.Next())
	}
	want := []time.Duration{250, 500, 1000, 2000, 4000, 8000, 10000, 10000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", got, want)
		}
	}
	if b.Failures() != 8 {
		t.Errorf("Failures() = %d", b.Failures())
	}
	b.Reset()
	if d := b.Next(); d != 250*time.Millisecond {
		t.Errorf("after Reset: %v", d)
	}
}

// The default jitter stays in [d/2, d].
func TestWaitJitterBounds(t *testing.T) {
	p := Policy{Min: time.Second, Max: time.Minute}
	for i := range 1000 {
		n := 1 + i%8
		d := min(time.Second<<(n-1), time.Minute)
		if w := p.Wait(n); w < d/2 || w > d {
			t.Fatalf("Wait(%d) = %v, outside [%v, %v]", n, w, d/2, d)
		}
	}
}
