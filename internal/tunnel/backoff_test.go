package tunnel

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 250 * time.Millisecond, Max: 10 * time.Second, Rand: func() float64 { return 0.999999 }}
	var got []time.Duration
	for range 9 {
		got = append(got, b.Next().Round(time.Millisecond))
	}
	want := []time.Duration{250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("upper bounds = %v, want %v ms", got, want)
		}
	}
	b.Reset()
	b.Rand = func() float64 { return 0 }
	if d := b.Next(); d != 125*time.Millisecond {
		t.Errorf("after Reset, lower bound = %v, want 125ms", d)
	}
	b = Backoff{Min: 250 * time.Millisecond, Max: 10 * time.Second}
	for i := range 50 {
		d := b.Next()
		if d < 125*time.Millisecond || d > 10*time.Second {
			t.Fatalf("attempt %d: %v out of range", i, d)
		}
	}
}
