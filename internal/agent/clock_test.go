package agent

import (
	"slices"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
)

func (r *recorder) first(typ event.Type) (event.Event, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.evs {
		if e.Type == typ {
			return e, true
		}
	}
	return event.Event{}, false
}

// kill -9 and a restart a second later resume the countdown and the
// period the agent was in: no idle_cancel, and the stop when it was due.
func TestAgentRestartASecondLater(t *testing.T) {
	for _, after := range []time.Duration{50 * time.Second, 74 * time.Second, 89 * time.Second} {
		t.Run(after.String(), func(t *testing.T) {
			dir := t.TempDir()
			clk := clock.NewFake(t0)
			src := &scripted{clk: clk}
			actor := &countingActor{}
			a, rec := newTestAgent(t, clk, src, actor, dir)
			drive(a, clk, after)
			start, ok := rec.first(event.IdleStart)
			if !ok || start.StopAt == nil {
				t.Fatalf("no idle_start with a stop time: %v", rec.types())
			}
			due := *start.StopAt
			clk.Advance(time.Second) // down for a second
			a2, rec2 := newTestAgent(t, clk, src, actor, dir)
			drive(a2, clk, 5*time.Minute)
			if slices.Contains(rec2.types(), string(event.IdleCancel)) {
				t.Fatalf("restart cancelled the countdown: %v", rec2.evs)
			}
			stop, ok := rec2.first(event.Stop)
			if !ok || actor.calls != 1 {
				t.Fatalf("calls = %d, events %v", actor.calls, rec2.types())
			}
			if stop.Time.Before(due) || stop.Time.After(due.Add(time.Second)) {
				t.Errorf("stopped at %v, due %v before the restart", stop.Time, due)
			}
		})
	}
}

// A wall-clock step forward (NTP, date -s) is not idle time: on a 3-minute
// window, the stop comes 3 minutes of real idleness after the step at the
// earliest, and no warning goes out at the step.
func TestAgentWallClockStep(t *testing.T) {
	clk := clock.NewFake(t0)
	src := &scripted{clk: clk}
	actor := &countingActor{}
	a, rec := newTestAgent(t, clk, src, actor, t.TempDir())
	drive(a, clk, 2*time.Minute)
	if _, ok := rec.first(event.IdleStart); !ok {
		t.Fatalf("not idle: %v", rec.types())
	}
	clk.StepWall(25 * time.Second) // under MaxGap: only the elapsed clock tells it
	stepped := clk.Elapsed()
	var stoppedAfter time.Duration
	for i := 0; i < 10*60 && actor.calls == 0; i++ {
		drive(a, clk, time.Second)
		if _, ok := rec.first(event.StopWarning); ok && clk.Elapsed()-stepped < time.Minute {
			t.Fatalf("stop warning %v after the step", clk.Elapsed()-stepped)
		}
		stoppedAfter = clk.Elapsed() - stepped
	}
	if actor.calls != 1 {
		t.Fatalf("calls = %d, events %v", actor.calls, rec.types())
	}
	if stoppedAfter < 3*time.Minute {
		t.Errorf("stopped %v of real time after the step on a 3-minute window", stoppedAfter)
	}
	if _, ok := rec.first(event.IdleCancel); !ok {
		t.Errorf("no idle_cancel at the step: %v", rec.types())
	}
}
