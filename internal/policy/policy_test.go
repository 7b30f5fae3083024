package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/alarm"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func alice(start time.Time) session.Session {
	return session.Session{ID: "ssh-1-1", Kind: session.KindSSH, User: "alice", RemoteAddr: "203.0.113.5", StartedAt: start}
}

// run steps p every step from `from` to `to` with input in(t), and
// returns the events and the times it asked to act (each acted on at once).
func run(t *testing.T, p *Policy, from, to time.Time, step time.Duration, in func(time.Time) Input) (evs []event.Event, acts []time.Time) {
	t.Helper()
	for now := from; !now.After(to); now = now.Add(step) {
		d := p.Step(now, in(now))
		evs = append(evs, d.Events...)
		if d.Act {
			acts = append(acts, now)
			evs = append(evs, p.ActionDone(now, "dry-run", "would stop", nil)...)
		}
	}
	return evs, acts
}

func types(evs []event.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s@%s", e.Type, e.Time.Sub(t0)))
	}
	return out
}

func TestClassicFifteenOfFifteen(t *testing.T) {
	p, err := New(Config{WarnBefore: 5 * time.Minute}, t0.Add(-time.Hour), "boot1", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Alice leaves at 12:00:30; nobody comes back.
	in := func(now time.Time) Input {
		if now.Before(t0.Add(30 * time.Second)) {
			return Input{Sessions: []session.Session{alice(t0.Add(-time.Hour))}}
		}
		return Input{}
	}
	evs, acts := run(t, p, t0, t0.Add(20*time.Minute), 10*time.Second, in)
	// The period 12:00-12:01 saw Alice; 15 idle periods close at 12:16.
	want := []string{"idle_start@30s", "stop_warning@11m0s", "stop@16m0s"}
	if got := types(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	if len(acts) != 1 || !acts[0].Equal(t0.Add(16*time.Minute)) {
		t.Errorf("acts = %v", acts)
	}
	if *evs[0].StopAt != t0.Add(16*time.Minute) || *evs[1].StopAt != t0.Add(16*time.Minute) {
		t.Errorf("stop_at = %v / %v", evs[0].StopAt, evs[1].StopAt)
	}
}

func TestConnectDuringCountdownCancels(t *testing.T) {
	p, _ := New(Config{WarnBefore: 5 * time.Minute}, t0.Add(-time.Hour), "b", nil)
	in := func(now time.Time) Input {
		// Bob connects for 200 ms at 12:13:00, after the warning.
		if !now.Before(t0.Add(13*time.Minute)) && now.Before(t0.Add(13*time.Minute+200*time.Millisecond)) {
			return Input{Sessions: []session.Session{alice(now)}}
		}
		return Input{}
	}
	evs, acts := run(t, p, t0, t0.Add(40*time.Minute), 100*time.Millisecond, in)
	want := []string{"idle_start@0s", "stop_warning@10m0s", "idle_cancel@13m0s", "idle_start@13m0.2s", "stop_warning@24m0s", "stop@29m0s"}
	if got := types(evs); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events = %v\nwant     %v", got, want)
	}
	if len(acts) != 1 {
		t.Errorf("acts = %v", acts)
	}
}

func TestTransientSessionCounts(t *testing.T) {
	p, _ := New(Config{Period: time.Minute, EvaluationPeriods: 3}, t0.Add(-time.Hour), "b", nil)
	short := alice(t0.Add(90 * time.Second))
	in := func(now time.Time) Input {
		if now.Equal(t0.Add(90 * time.Second)) {
			return Input{Transient: []session.Session{short}}
		}
		return Input{}
	}
	evs, acts := run(t, p, t0, t0.Add(10*time.Minute), 30*time.Second, in)
	// Without the short session the stop would be at 3m; the period
	// 1m-2m saw it, so three idle periods close at 5m.
	if len(acts) != 1 || !acts[0].Equal(t0.Add(5*time.Minute)) {
		t.Errorf("acts = %v, events %v", acts, types(evs))
	}
}

func TestBlindNeverStops(t *testing.T) {
	p, _ := New(Config{Period: time.Second, EvaluationPeriods: 5}, t0.Add(-time.Hour), "b", nil)
	evs, acts := run(t, p, t0, t0.Add(time.Minute), 250*time.Millisecond, func(time.Time) Input {
		return Input{Blind: true}
	})
	if len(acts) != 0 || len(evs) != 0 {
		t.Errorf("blind: acts %v events %v", acts, types(evs))
	}
	// Sight comes back: a full window must pass before the stop.
	_, acts = run(t, p, t0.Add(time.Minute+time.Second), t0.Add(2*time.Minute), 250*time.Millisecond, func(time.Time) Input { return Input{} })
	if len(acts) != 1 || acts[0].Before(t0.Add(time.Minute+6*time.Second)) {
		t.Errorf("after sight returns: acts %v", acts)
	}
}

func TestBootGraceAndHolds(t *testing.T) {
	boot := t0
	p, _ := New(Config{Period: time.Minute, EvaluationPeriods: 2, BootGrace: 10 * time.Minute}, boot, "b", nil)
	hold := func(now time.Time) Input {
		if now.Before(t0.Add(20 * time.Minute)) {
			return Input{Holds: []Hold{{Kind: "inhibit", Name: "backup.sh"}}}
		}
		return Input{}
	}
	// The hold was last seen at 19:45 and gone at 20:00: the period from
	// 20:00 counts as held (it may have ended at 20:00:00 or a little
	// later), so two idle periods close at 23:00.
	_, acts := run(t, p, t0, t0.Add(30*time.Minute), 15*time.Second, hold)
	if len(acts) != 1 || !acts[0].Equal(t0.Add(23*time.Minute)) {
		t.Errorf("acts = %v, want one at 23m", acts)
	}
	p, _ = New(Config{Period: time.Minute, EvaluationPeriods: 2, BootGrace: 10 * time.Minute}, boot, "b", nil)
	_, acts = run(t, p, t0, t0.Add(30*time.Minute), 15*time.Second, func(time.Time) Input { return Input{} })
	if len(acts) != 1 || !acts[0].Equal(t0.Add(13*time.Minute)) {
		t.Errorf("boot grace: acts = %v, want one at 13m", acts)
	}
}

// A hold that says when it ends (a start hold) wakes the policy then,
// and the stop counts its window from the period it ended in; boot
// grace says when it ends too.
func TestHoldUntilWakes(t *testing.T) {
	p, _ := New(Config{Period: time.Minute, EvaluationPeriods: 2, BootGrace: 10 * time.Minute}, t0.Add(-time.Hour), "b", nil)
	until := t0.Add(90 * time.Second)
	in := func(now time.Time) Input {
		if now.Before(until) {
			return Input{Holds: []Hold{{Kind: HoldStart, Name: "connwatch:hold-until", Until: &until}}}
		}
		return Input{}
	}
	p.Step(t0.Add(10*time.Second), in(t0.Add(10*time.Second)))
	p.Step(t0.Add(70*time.Second), in(t0.Add(70*time.Second)))
	if w := p.NextWake(t0.Add(70 * time.Second)); !w.Equal(until) {
		t.Errorf("NextWake = %v, want the hold's end %v", w.Sub(t0), until.Sub(t0))
	}
	st := p.Status(t0.Add(70 * time.Second))
	if len(st.Holds) != 1 || st.Holds[0].Kind != HoldStart || st.IdleSince != nil {
		t.Errorf("status %+v", st)
	}
	// The period 1m-2m saw the hold: two idle periods close at 4m.
	_, acts := run(t, p, until, t0.Add(10*time.Minute), 15*time.Second, in)
	if len(acts) != 1 || !acts[0].Equal(t0.Add(4*time.Minute)) {
		t.Errorf("acts = %v, want one at 4m", acts)
	}

	// Boot grace reports its end.
	boot := t0
	p, _ = New(Config{BootGrace: 5 * time.Minute}, boot, "b", nil)
	p.Step(t0.Add(time.Minute), Input{Elapsed: time.Minute})
	st = p.Status(t0.Add(time.Minute))
	if len(st.Holds) != 1 || st.Holds[0].Kind != HoldBootGrace || st.Holds[0].Until == nil || !st.Holds[0].Until.Equal(t0.Add(5*time.Minute)) {
		t.Errorf("boot grace hold %+v", st.Holds)
	}
}

func TestIgnoreRules(t *testing.T) {
	idleSince := t0.Add(-2 * time.Hour)
	sessions := []session.Session{
		{ID: "a", User: "backup", RemoteAddr: "198.51.100.1"},
		{ID: "b", User: "alice", RemoteAddr: "10.1.2.3"},
		{ID: "c", User: "carol", RemoteAddr: "203.0.113.9", LastActivityAt: &idleSince},
	}
	p, _ := New(Config{Period: time.Minute, EvaluationPeriods: 1,
		IgnoreUsers: []string{"backup"}, IgnoreNets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, IgnoreIdleAfter: time.Hour,
	}, t0.Add(-time.Hour), "b", nil)
	_, acts := run(t, p, t0, t0.Add(5*time.Minute), 30*time.Second, func(time.Time) Input { return Input{Sessions: sessions} })
	if len(acts) != 1 {
		t.Errorf("all sessions ignored: acts = %v", acts)
	}
	if st := p.Status(t0.Add(5 * time.Minute)); st.Counted != 0 {
		t.Errorf("counted = %d", st.Counted)
	}
}

func TestRestartKeepsCountdown(t *testing.T) {
	cfg := Config{Period: time.Minute, EvaluationPeriods: 15, WarnBefore: 5 * time.Minute}
	p, _ := New(cfg, t0.Add(-time.Hour), "boot1", nil)
	run(t, p, t0, t0.Add(7*time.Minute+20*time.Second), 10*time.Second, func(time.Time) Input { return Input{} })
	saved := p.State()

	// kill -9 and restart 5 s later: same deadline.
	p2, _ := New(cfg, t0.Add(-time.Hour), "boot1", &saved)
	evs, acts := run(t, p2, t0.Add(7*time.Minute+25*time.Second), t0.Add(20*time.Minute), 5*time.Second, func(time.Time) Input { return Input{} })
	if len(acts) != 1 || !acts[0].Equal(t0.Add(15*time.Minute)) {
		t.Errorf("after restart: acts = %v events %v", acts, types(evs))
	}
	// A new boot starts afresh.
	p3, _ := New(cfg, t0.Add(time.Hour), "boot2", &saved)
	if st := p3.State(); st.IdleSince != nil || st.BootID != "boot2" {
		t.Errorf("new boot kept state %+v", st)
	}
}

func TestDowntimeIsMissingData(t *testing.T) {
	cfg := Config{Period: time.Minute, EvaluationPeriods: 5}
	p, _ := New(cfg, t0.Add(-time.Hour), "b", nil)
	run(t, p, t0, t0.Add(2*time.Minute+10*time.Second), 10*time.Second, func(time.Time) Input { return Input{} })
	saved := p.State()
	// Down for an hour: nothing is known of that hour, so the stop waits
	// for a fresh window instead of firing at once.
	back := t0.Add(62 * time.Minute)
	p2, _ := New(cfg, t0.Add(-time.Hour), "b", &saved)
	_, acts := run(t, p2, back, back.Add(10*time.Minute), 10*time.Second, func(time.Time) Input { return Input{} })
	if len(acts) != 1 || acts[0].Before(back.Add(5*time.Minute)) {
		t.Errorf("acts = %v, want one no sooner than 5m after return", acts)
	}
}

func TestFailedActionRetriesBounded(t *testing.T) {
	p, _ := New(Config{Period: time.Minute, EvaluationPeriods: 1, MaxAttempts: 3}, t0.Add(-time.Hour), "b", nil)
	attempts := 0
	var evs []event.Event
	for now := t0; now.Before(t0.Add(30 * time.Minute)); now = now.Add(10 * time.Second) {
		d := p.Step(now, Input{})
		if d.Act {
			attempts++
			evs = append(evs, p.ActionDone(now, "ec2-stop", "", fmt.Errorf("api down"))...)
		}
	}
	if attempts != 3 || len(evs) != 3 || evs[2].Type != event.StopFailed {
		t.Errorf("attempts = %d, events %v", attempts, types(evs))
	}
}

func TestConfigValidation(t *testing.T) {
	for _, c := range []Config{
		{Period: 500 * time.Millisecond},
		{EvaluationPeriods: 3, DatapointsToAlarm: 4},
		{WarnBefore: -time.Second},
		{TreatMissingData: "sometimes"},
	} {
		if _, err := New(c, t0, "b", nil); err == nil {
			t.Errorf("%+v: want error", c)
		}
	}
}

// interval is [from, to).
type interval struct{ from, to time.Time }

func (iv interval) has(t time.Time) bool { return !t.Before(iv.from) && t.Before(iv.to) }

// TestRandomSchedules drives thousands of random connect, disconnect and
// hold schedules through the policy, stepping it at every change and at
// NextWake as the agent does, and checks:
//   - it never acts while a counted session or a hold exists, or while blind;
//   - it acts at most once per idle stretch;
//   - with M = N and no blindness, in every idle stretch of at least the
//     window plus one period it acts exactly once, within one period after
//     the deadline (idle start + window), and never in shorter ones.
func TestRandomSchedules(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 3000; iter++ {
		period := []time.Duration{time.Second, time.Minute}[rng.IntN(2)]
		n := 1 + rng.IntN(15)
		m := n
		withBlind := iter%3 == 2
		if withBlind && rng.IntN(2) == 0 {
			m = 1 + rng.IntN(n)
		}
		warn := time.Duration(rng.IntN(3)) * period
		cfg := Config{Period: period, EvaluationPeriods: n, DatapointsToAlarm: m, WarnBefore: warn}
		window := time.Duration(n) * period
		start := t0.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
		end := start.Add(4 * window)
		p, err := New(cfg, start.Add(-time.Hour), "b", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Random busy intervals: sessions from 100 ms to 2 windows, holds.
		var busy, blind []interval
		var changes []time.Time
		for k := rng.IntN(6); k > 0; k-- {
			from := start.Add(time.Duration(rng.Int64N(int64(end.Sub(start)))))
			d := 100*time.Millisecond + time.Duration(rng.Int64N(int64(2*window)))
			busy = append(busy, interval{from, from.Add(d)})
			changes = append(changes, from, from.Add(d))
		}
		if withBlind {
			for k := rng.IntN(3); k > 0; k-- {
				from := start.Add(time.Duration(rng.Int64N(int64(end.Sub(start)))))
				d := time.Duration(rng.Int64N(int64(window)))
				blind = append(blind, interval{from, from.Add(d)})
				changes = append(changes, from, from.Add(d))
			}
		}
		isBusy := func(t time.Time) bool {
			for _, iv := range busy {
				if iv.has(t) {
					return true
				}
			}
			return false
		}
		isBlind := func(t time.Time) bool {
			for _, iv := range blind {
				if iv.has(t) {
					return true
				}
			}
			return false
		}
		input := func(t time.Time) Input {
			in := Input{Blind: isBlind(t)}
			if isBusy(t) {
				if rng.IntN(2) == 0 {
					in.Holds = []Hold{{Kind: "inhibit", Name: "job"}}
				} else {
					in.Sessions = []session.Session{alice(t)}
				}
			}
			return in
		}
		var acts []time.Time
		now := start
		for steps := 0; !now.After(end); steps++ {
			if steps > 100_000 {
				t.Fatalf("iter %d: too many steps", iter)
			}
			in := input(now)
			d := p.Step(now, in)
			if d.Act {
				if len(in.Sessions) > 0 || len(in.Holds) > 0 || in.Blind {
					t.Fatalf("iter %d: acted at %v with input %+v", iter, now.Sub(start), in)
				}
				acts = append(acts, now)
				p.ActionDone(now, "dry-run", "", nil)
			}
			next := p.NextWake(now)
			for _, c := range changes {
				if c.After(now) && c.Before(next) {
					next = c
				}
			}
			if !next.After(now) {
				t.Fatalf("iter %d: NextWake %v not after %v", iter, next, now)
			}
			now = next
		}
		// Idle stretches: maximal intervals with neither busy nor blind.
		var stretches []interval
		var cur *interval
		points := append([]time.Time{start}, changes...)
		sortTimes(points)
		for i, pt := range points {
			if pt.After(end) {
				break
			}
			idle := !isBusy(pt) && !isBlind(pt)
			if idle && cur == nil {
				cur = &interval{from: pt}
			}
			if !idle && cur != nil {
				cur.to = pt
				stretches = append(stretches, *cur)
				cur = nil
			}
			_ = i
		}
		if cur != nil {
			cur.to = end.Add(time.Nanosecond) // the last step is at end
			stretches = append(stretches, *cur)
		}
		for _, a := range acts {
			in := 0
			for _, s := range stretches {
				if s.has(a) {
					in++
				}
			}
			if in != 1 {
				t.Fatalf("iter %d: act at %v outside an idle stretch %v", iter, a.Sub(start), stretches)
			}
		}
		for _, s := range stretches {
			var inside []time.Time
			for _, a := range acts {
				if s.has(a) {
					inside = append(inside, a)
				}
			}
			if len(inside) > 1 {
				t.Fatalf("iter %d: %d acts in one idle stretch", iter, len(inside))
			}
			if withBlind || m != n {
				continue
			}
			deadline := s.from.Add(window)
			// Stretches that begin at the start may have no busy period before.
			if s.to.Sub(s.from) >= window+period && s.to.Before(end) || s.to.After(end) && end.Sub(s.from) >= window+2*period {
				if len(inside) != 1 {
					t.Fatalf("iter %d (P=%v N=%d warn=%v): idle %v..%v but %d acts; all acts %v", iter, period, n, warn, s.from.Sub(start), s.to.Sub(start), len(inside), acts)
				}
				if inside[0].Before(deadline) || inside[0].After(deadline.Add(period)) {
					t.Fatalf("iter %d (P=%v N=%d warn=%v): idle from %v, acted at %v, deadline %v", iter, period, n, warn, s.from.Sub(start), inside[0].Sub(start), deadline.Sub(start))
				}
			}
			if s.to.Sub(s.from) < window && len(inside) > 0 {
				t.Fatalf("iter %d: acted after %v of idleness, window %v", iter, inside[0].Sub(s.from), window)
			}
		}
	}
}

func sortTimes(ts []time.Time) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && ts[j].Before(ts[j-1]); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

var _ = alarm.TreatMissing

func TestSetConfig(t *testing.T) {
	p, _ := New(Config{Period: time.Minute, EvaluationPeriods: 5}, t0.Add(-time.Hour), "b", nil)
	run(t, p, t0, t0.Add(3*time.Minute), 30*time.Second, func(time.Time) Input { return Input{} })
	if err := p.SetConfig(Config{Period: time.Minute, EvaluationPeriods: 2}); err != nil {
		t.Fatal(err)
	}
	if len(p.State().Marks) != 4 {
		t.Errorf("marks %v", p.State().Marks)
	}
	// Already idle for more than two periods: the stop follows at once.
	_, acts := run(t, p, t0.Add(3*time.Minute+30*time.Second), t0.Add(5*time.Minute), 30*time.Second, func(time.Time) Input { return Input{} })
	if len(acts) != 1 || acts[0].After(t0.Add(4*time.Minute)) {
		t.Errorf("acts %v", acts)
	}
	if err := p.SetConfig(Config{Period: time.Millisecond}); err == nil {
		t.Error("invalid config accepted")
	}
}

func TestRestartUnderAnotherWindow(t *testing.T) {
	short := Config{Period: time.Minute, EvaluationPeriods: 15}
	p, _ := New(short, t0.Add(-time.Hour), "b", nil)
	run(t, p, t0, t0.Add(10*time.Minute), 10*time.Second, func(time.Time) Input { return Input{} })
	saved := p.State()
	// Restarted with 5-minute periods and a 30-minute window: the ten
	// one-minute datapoints are not five-minute ones.
	long := Config{Period: 5 * time.Minute, EvaluationPeriods: 6}
	p2, _ := New(long, t0.Add(-time.Hour), "b", &saved)
	_, acts := run(t, p2, t0.Add(10*time.Minute+10*time.Second), t0.Add(60*time.Minute), 10*time.Second, func(time.Time) Input { return Input{} })
	if len(acts) != 1 || acts[0].Before(t0.Add(40*time.Minute)) {
		t.Errorf("acts %v: want one no sooner than 30 min after the restart", acts)
	}
}

func TestGapRestartsTheIdlePeriod(t *testing.T) {
	p, _ := New(Config{Period: time.Minute, EvaluationPeriods: 5, MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "b", nil)
	evs, _ := run(t, p, t0, t0.Add(3*time.Minute), time.Second, func(time.Time) Input { return Input{} })
	// The agent is frozen (or hibernated) for 4 minutes.
	more, acts := run(t, p, t0.Add(7*time.Minute), t0.Add(20*time.Minute), time.Second, func(time.Time) Input { return Input{} })
	evs = append(evs, more...)
	if got := fmt.Sprint(types(evs)); !strings.Contains(got, "idle_cancel@7m0s idle_start@7m0s") {
		t.Errorf("events %v: want the idle period restarted at 7m", got)
	}
	if len(acts) != 1 || acts[0].Before(t0.Add(12*time.Minute)) {
		t.Errorf("acts %v: want one no sooner than 5 min after the gap", acts)
	}
}
