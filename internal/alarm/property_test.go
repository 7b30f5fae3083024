package alarm

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var allTreats = []TreatMissingData{TreatMissing, TreatIgnore, TreatBreaching, TreatNotBreaching}

// bruteCount is the plain M-of-N rule over the last n marks, which must
// not be missing.
func bruteCount(t *testing.T, marks []Mark, n, m int) State {
	t.Helper()
	breaching := 0
	for _, k := range marks[len(marks)-n:] {
		switch k {
		case MarkBreaching:
			breaching++
		case MarkMissing:
			t.Fatalf("bruteCount over missing datapoints: %v", marks)
		}
	}
	if breaching >= m {
		return StateAlarm
	}
	return StateOK
}

func replaceMissing(marks []Mark, with Mark) []Mark {
	out := slices.Clone(marks)
	for i, k := range out {
		if k == MarkMissing {
			out[i] = with
		}
	}
	return out
}

func randomMarks(rng *rand.Rand, n int, pMissing float64) []Mark {
	out := make([]Mark, n)
	for i := range out {
		switch {
		case rng.Float64() < pMissing:
			out[i] = MarkMissing
		case rng.IntN(2) == 0:
			out[i] = MarkBreaching
		default:
			out[i] = MarkNotBreaching
		}
	}
	return out
}

// TestProperties cross-checks Evaluate against rules stated independently
// of its implementation, over random series.
func TestProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(20260901, 1))
	for iter := range 5000 {
		n := 1 + rng.IntN(6)
		m := 1 + rng.IntN(n)
		r := n + rng.IntN(5)
		current := allStates[rng.IntN(len(allStates))]
		marks := randomMarks(rng, rng.IntN(r+4), []float64{0, 0.2, 0.5, 0.9}[rng.IntN(4)])
		cfg := Config{EvaluationPeriods: n, DatapointsToAlarm: m, EvaluationRange: r}

		res := map[TreatMissingData]Result{}
		for _, treat := range allTreats {
			cfg.TreatMissingData = treat
			got, err := EvaluateMarks(cfg, marks, current)
			if err != nil {
				t.Fatal(err)
			}
			res[treat] = got
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("iteration %d, %d of %d, range %d, from %s, series %q: "+format,
				append([]any{iter, m, n, r, current, FormatNotation(marks)}, args...)...)
		}

		padded := res[TreatMissing].Range
		if len(padded) != r {
			fail("range has %d periods, want %d", len(padded), r)
		}
		var real []Mark
		for _, k := range padded {
			if k != MarkMissing {
				real = append(real, k)
			}
		}

		for _, treat := range allTreats { // in order: the loop draws from rng
			got := res[treat]
			// Every evaluation looks at exactly N datapoints, and counts
			// the X among them.
			if len(got.Evaluated) != n {
				fail("%s: %d datapoints evaluated, want %d", treat, len(got.Evaluated), n)
			}
			if x := countMarks(got.Evaluated, MarkBreaching); x != got.Breaching {
				fail("%s: %d X evaluated, Breaching %d", treat, x, got.Breaching)
			}
			if got.Previous != current || got.Changed() != (got.State != current) {
				fail("%s: previous %s, changed %v", treat, got.Previous, got.Changed())
			}
			// Datapoints older than the range change nothing: the series
			// is as if preceded by missing periods.
			older := append(randomMarks(rng, 1+rng.IntN(3), 0.3), padded...)
			cfg.TreatMissingData = treat
			if again, _ := EvaluateMarks(cfg, older, current); again.State != got.State || again.Reason != got.Reason {
				fail("%s: prepending %q to the range changed %s to %s", treat, FormatNotation(older[:len(older)-r]), got.State, again.State)
			}
			// Making a datapoint breach never turns ALARM into OK.
			if i := slices.Index(marks, MarkNotBreaching); i >= 0 && got.State == StateAlarm {
				worse := slices.Clone(marks)
				worse[i] = MarkBreaching
				if again, _ := EvaluateMarks(cfg, worse, current); again.State != StateAlarm {
					fail("%s: a breaching datapoint at %d made it %s", treat, i, again.State)
				}
			}
		}

		// No missing datapoint in the range: the plain M-of-N rule over the
		// last N, whatever TreatMissingData says.
		if len(real) == r {
			want := bruteCount(t, padded, n, m)
			for treat, got := range res {
				if got.State != want {
					fail("no missing data, %s: got %s, want %s", treat, got.State, want)
				}
			}
		}
		// At least N real datapoints: TreatMissingData is not used, and the
		// N most recent real ones decide.
		if len(real) >= n {
			want := bruteCount(t, real, n, m)
			for treat, got := range res {
				if got.State != want || got.Filled != 0 {
					fail("%d real datapoints, %s: got %s filled %d, want %s", len(real), treat, got.State, got.Filled, want)
				}
			}
		} else if res[TreatMissing].Filled != n-len(real) {
			fail("filled %d, want %d", res[TreatMissing].Filled, n-len(real))
		}
		// Without a wider range, breaching and notBreaching are exactly
		// reading - as X and as 0.
		if r == n {
			if got, want := res[TreatBreaching].State, bruteCount(t, replaceMissing(padded, MarkBreaching), n, m); got != want {
				fail("breaching: got %s, want %s as with - read as X", got, want)
			}
			if got, want := res[TreatNotBreaching].State, bruteCount(t, replaceMissing(padded, MarkNotBreaching), n, m); got != want {
				fail("notBreaching: got %s, want %s as with - read as 0", got, want)
			}
		}
		// breaching is never better than notBreaching; neither leaves
		// INSUFFICIENT_DATA.
		if res[TreatNotBreaching].State == StateAlarm && res[TreatBreaching].State != StateAlarm {
			fail("ALARM with notBreaching but %s with breaching", res[TreatBreaching].State)
		}
		for _, treat := range []TreatMissingData{TreatBreaching, TreatNotBreaching} {
			if res[treat].State == StateInsufficientData {
				fail("%s gave INSUFFICIENT_DATA", treat)
			}
		}
		// missing gives INSUFFICIENT_DATA exactly when the range is empty,
		// where ignore keeps the state.
		if (res[TreatMissing].State == StateInsufficientData) != (len(real) == 0) {
			fail("missing gave %s with %d real datapoints", res[TreatMissing].State, len(real))
		}
		if len(real) == 0 && res[TreatIgnore].State != current {
			fail("ignore gave %s on an empty range", res[TreatIgnore].State)
		}
		// ignore either agrees with missing or keeps the state.
		if got := res[TreatIgnore].State; got != res[TreatMissing].State && got != current {
			fail("ignore gave %s, missing %s", got, res[TreatMissing].State)
		}
		// missing alarms only on M real breaching datapoints, or on real
		// datapoints that all breach (the premature alarm rule).
		if res[TreatMissing].State == StateAlarm && countMarks(real, MarkBreaching) < m && countMarks(real, MarkNotBreaching) > 0 && len(real) < n {
			fail("missing alarmed on %d breaching datapoints among %d", countMarks(real, MarkBreaching), len(real))
		}
	}
}

func countMarks(marks []Mark, k Mark) int {
	c := 0
	for _, x := range marks {
		if x == k {
			c++
		}
	}
	return c
}

// TestEvaluatorMatchesEvaluate feeds random series to an Evaluator and
// checks each step against Evaluate over the series so far.
func TestEvaluatorMatchesEvaluate(t *testing.T) {
	rng := rand.New(rand.NewPCG(20260901, 2))
	start := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	for iter := range 500 {
		n := 1 + rng.IntN(5)
		cfg := Config{
			Period:             time.Minute,
			EvaluationPeriods:  n,
			DatapointsToAlarm:  1 + rng.IntN(n),
			EvaluationRange:    n + rng.IntN(4),
			ComparisonOperator: LessThanThreshold,
			Threshold:          1,
			TreatMissingData:   allTreats[rng.IntN(len(allTreats))],
		}
		e, err := NewEvaluator(cfg, "")
		if err != nil {
			t.Fatal(err)
		}
		state := InitialState
		var series []Datapoint
		for step := range 30 {
			d := Missing
			if rng.IntN(3) > 0 {
				d = Value(float64(rng.IntN(2)))
			}
			series = append(series, d)
			at := start.Add(time.Duration(step) * time.Minute)
			trs, err := e.Observe(at, d)
			if err != nil {
				t.Fatal(err)
			}
			want, err := Evaluate(cfg, series, state)
			if err != nil {
				t.Fatal(err)
			}
			if e.State() != want.State {
				t.Fatalf("iteration %d step %d: evaluator %s, Evaluate %s", iter, step, e.State(), want.State)
			}
			switch {
			case want.Changed() && (len(trs) != 1 || trs[0] != Transition{From: state, To: want.State, Time: at, Reason: want.Reason}):
				t.Fatalf("iteration %d step %d: transitions %+v, want one to %s (%s)", iter, step, trs, want.State, want.Reason)
			case !want.Changed() && len(trs) != 0:
				t.Fatalf("iteration %d step %d: transitions %+v without a change", iter, step, trs)
			}
			state = want.State
		}
	}
}
