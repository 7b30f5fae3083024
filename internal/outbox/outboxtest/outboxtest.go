// Package outboxtest helps tests drive an outbox.Outbox: run it, wait for
// it to reach a state, and step a fake clock through its backoff waits
// without sleeping.
package outboxtest

import (
	"context"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// Run starts b.Run(ctx, d) and returns a function that cancels it and
// fails the test unless Run returns nil within five seconds. The function
// also runs when the test ends, if it was not called before.
func Run(t testing.TB, b *outbox.Outbox, d outbox.Deliver) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, d) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

// WaitFor waits, yielding to the goroutines under test, until cond holds,
// and fails the test after ten seconds.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testproc.WaitFor(t, what, 10*time.Second, cond)
}

// NextTimer waits until a timer of fake is armed (Run's backoff wait) and
// returns how far ahead it is set.
func NextTimer(t testing.TB, fake *clock.Fake) time.Duration {
	t.Helper()
	var at time.Time
	WaitFor(t, "a timer", func() bool {
		var ok bool
		at, ok = fake.NextDeadline()
		return ok
	})
	return at.Sub(fake.Now())
}

// Skip moves fake to its next timer, waiting for one to be armed first,
// and returns the wait it skipped.
func Skip(t testing.TB, fake *clock.Fake) time.Duration {
	t.Helper()
	d := NextTimer(t, fake)
	fake.Advance(d)
	return d
}
