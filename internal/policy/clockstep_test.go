package policy

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/alarm"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

// runReal steps p every 10 s of real time from 0 to `to`, the wall clock
// reading t0 + real + wallStep(real) and the elapsed clock bootElapsed +
// real, and returns the events and the real times it asked to act.
func runReal(t *testing.T, p *Policy, to time.Duration, wallStep func(real time.Duration) time.Duration, in func(real time.Duration) Input) (evs []event.Event, acts []time.Duration) {
	t.Helper()
	const bootElapsed = time.Hour
	for real := time.Duration(0); real <= to; real += 10 * time.Second {
		input := in(real)
		input.Elapsed = bootElapsed + real
		now := t0.Add(real + wallStep(real))
		d := p.Step(now, input)
		evs = append(evs, d.Events...)
		if d.Act {
			acts = append(acts, real)
			evs = append(evs, p.ActionDone(now, "dry-run", "would stop", nil)...)
		}
	}
	return evs, acts
}

func firstOf(evs []event.Event, typ event.Type) (event.Event, bool) {
	for _, e := range evs {
		if e.Type == typ {
			return e, true
		}
	}
	return event.Event{}, false
}

// A wall-clock step (NTP correction, `date -s`, resume) is not idle time:
// on a 15-minute window the stop comes after at least 15 minutes of real
// idleness after the step, whichever way the clock moved.
func TestWallClockStepIsNotIdleTime(t *testing.T) {
	for _, step := range []time.Duration{20 * time.Minute, 5 * time.Minute, -20 * time.Minute, 3 * time.Second} {
		t.Run(step.String(), func(t *testing.T) {
			p, err := New(Config{WarnBefore: 5 * time.Minute, MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "boot1", nil)
			if err != nil {
				t.Fatal(err)
			}
			// Idle from the start; the wall clock steps after 2 minutes.
			const at = 2 * time.Minute
			evs, acts := runReal(t, p, time.Hour, func(real time.Duration) time.Duration {
				if real >= at {
					return step
				}
				return 0
			}, func(time.Duration) Input { return Input{} })
			if len(acts) != 1 {
				t.Fatalf("acts at %v, events %v", acts, types(evs))
			}
			if min := at + 15*time.Minute; acts[0] < min {
				t.Errorf("stopped after %v of real time, %v of it idle after the step; want at least 15m after the step", acts[0], acts[0]-at)
			}
			if acts[0] > at+17*time.Minute {
				t.Errorf("stopped after %v of real time: the step delayed the stop by more than a period or two", acts[0])
			}
			warn, ok := firstOf(evs, event.StopWarning)
			if !ok || warn.Time.Before(t0.Add(at+step+10*time.Minute)) {
				t.Errorf("stop warning %v at %v; want one at least 10 minutes of real idleness after the step", ok, warn.Time)
			}
			if _, ok := firstOf(evs, event.IdleCancel); !ok {
				t.Errorf("no idle_cancel says the countdown restarted: %v", types(evs))
			}
		})
	}
}

// NTP slewing (at most 500 ppm) is not a step: the countdown goes on.
func TestSlewIsNotAStep(t *testing.T) {
	p, _ := New(Config{MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "boot1", nil)
	evs, acts := runReal(t, p, 30*time.Minute, func(real time.Duration) time.Duration {
		return real / 2000 // 500 ppm fast
	}, func(time.Duration) Input { return Input{} })
	if _, ok := firstOf(evs, event.IdleCancel); ok {
		t.Errorf("a slewing clock cancelled the countdown: %v", types(evs))
	}
	if len(acts) != 1 || acts[0] > 16*time.Minute+10*time.Second {
		t.Errorf("acts at %v; want one at 16m", acts)
	}
}

// Boot grace counts elapsed time since boot: a wall step forward does not
// end it early.
func TestBootGraceByElapsedTime(t *testing.T) {
	// Booted 1 h of elapsed time ago with a 2 h grace; the wall clock says
	// boot was 10 h ago (it was stepped since).
	p, _ := New(Config{Period: time.Second, EvaluationPeriods: 5, BootGrace: 2 * time.Hour}, t0.Add(-10*time.Hour), "boot1", nil)
	_, acts := runReal(t, p, 30*time.Minute, func(time.Duration) time.Duration { return 0 }, func(time.Duration) Input { return Input{} })
	if len(acts) != 0 {
		t.Fatalf("stopped at %v within boot grace", acts)
	}
	st := p.Status(t0.Add(30 * time.Minute))
	if len(st.Holds) != 1 || st.Holds[0].Kind != "boot-grace" {
		t.Errorf("holds %v; want boot grace", st.Holds)
	}
}

// A restart keeps the countdown when the saved state says the agent was
// watching until a few seconds ago; a wall-clock step while it was down is
// told by the elapsed clock saved with the state, and starts it again.
func TestRestartStepDetectedAcrossSave(t *testing.T) {
	p, _ := New(Config{MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "boot1", nil)
	runReal(t, p, 5*time.Minute, func(time.Duration) time.Duration { return 0 }, func(time.Duration) Input { return Input{} })
	saved := p.State()
	if saved.IdleSince == nil || saved.SeenElapsed != time.Hour+5*time.Minute {
		t.Fatalf("saved state %+v", saved)
	}
	// Back 3 s of real time later; the wall clock was stepped 10 min ahead.
	q, _ := New(Config{MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "boot1", &saved)
	d := q.Step(t0.Add(5*time.Minute+3*time.Second+10*time.Minute), Input{Elapsed: time.Hour + 5*time.Minute + 3*time.Second})
	if _, ok := firstOf(d.Events, event.IdleCancel); !ok {
		t.Errorf("a step while the agent was down went unnoticed: %v", types(d.Events))
	}
	// Without the step, the countdown goes on.
	r, _ := New(Config{MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "boot1", &saved)
	d = r.Step(t0.Add(5*time.Minute+3*time.Second), Input{Elapsed: time.Hour + 5*time.Minute + 3*time.Second})
	if len(d.Events) != 0 || r.State().IdleSince == nil || !r.State().IdleSince.Equal(*saved.IdleSince) {
		t.Errorf("restart 3 s later: events %v, idle since %v (was %v)", types(d.Events), r.State().IdleSince, saved.IdleSince)
	}
}

// BenchmarkIdleDayWindow is the policy's cost for one second of an idle
// agent with --period 1s --idle-after 24h (86,400 datapoints): one period
// closes and the stop is predicted again. ns/op divided by 1e9 is the
// share of a core.
func BenchmarkIdleDayWindow(b *testing.B) {
	p, err := New(Config{Period: time.Second, EvaluationPeriods: 86400, MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "boot1", nil)
	if err != nil {
		b.Fatal(err)
	}
	now := t0
	for range 100 {
		p.Step(now, Input{Elapsed: time.Hour + now.Sub(t0)})
		now = now.Add(time.Second)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Step(now, Input{Elapsed: time.Hour + now.Sub(t0)})
		p.Status(now)
		p.NextWake(now)
		now = now.Add(time.Second)
	}
}

// The prediction carried across period closes (shiftDue) is the one made
// afresh, over random schedules of sessions, blindness and gaps.
func TestShiftedPredictionIsFresh(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	treats := []alarm.TreatMissingData{alarm.TreatMissing, alarm.TreatIgnore, alarm.TreatBreaching, alarm.TreatNotBreaching}
	for sched := range 300 {
		n := 1 + rng.IntN(6)
		cfg := Config{Period: time.Second, EvaluationPeriods: n, DatapointsToAlarm: 1 + rng.IntN(n), TreatMissingData: treats[rng.IntN(4)]}
		p, err := New(cfg, t0.Add(-time.Hour), "b", nil)
		if err != nil {
			t.Fatal(err)
		}
		now := t0
		busy, blind := false, false
		for range 200 {
			if rng.IntN(8) == 0 {
				busy = !busy
			}
			if rng.IntN(15) == 0 {
				blind = !blind
			}
			in := Input{Blind: blind}
			if busy {
				in.Sessions = []session.Session{alice(t0)}
			}
			d := p.Step(now, in)
			if d.Act {
				p.ActionDone(now, "dry-run", "would stop", nil)
			}
			got, gotOK := p.stopDue(now)
			p.due.valid = false
			want, wantOK := p.stopDue(now)
			if gotOK != wantOK || !got.Equal(want) {
				t.Fatalf("schedule %d at %v (%+v): carried prediction %v %v, fresh %v %v", sched, now.Sub(t0), cfg, got, gotOK, want, wantOK)
			}
			now = now.Add(time.Duration(1+rng.IntN(700)) * time.Millisecond)
		}
	}
}
