package alarm

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// predictNaive is the definition PredictAlarm must meet: evaluate the
// whole range again after each appended period.
func predictNaive(cfg Config, marks []Mark, current State, next Mark) (int, bool) {
	w := cfg.window()
	series := append([]Mark(nil), marks...)
	state := current
	for k := 1; k <= w.r+1; k++ {
		m := MarkBreaching
		if k == 1 {
			m = next
		}
		series = append(series, m)
		res, err := EvaluateMarks(cfg, series, state)
		if err != nil {
			panic(err)
		}
		state = res.State
		if state == StateAlarm {
			return k, true
		}
	}
	return 0, false
}

func TestPredictAlarmMatchesEvaluation(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	treats := []TreatMissingData{TreatMissing, TreatIgnore, TreatBreaching, TreatNotBreaching}
	states := []State{StateOK, StateAlarm, StateInsufficientData}
	for i := range 20000 {
		n := 1 + rng.IntN(8)
		cfg := Config{EvaluationPeriods: n, DatapointsToAlarm: 1 + rng.IntN(n), TreatMissingData: treats[rng.IntN(len(treats))]}
		if rng.IntN(3) == 0 {
			cfg.EvaluationRange = n + rng.IntN(5)
		}
		marks := make([]Mark, rng.IntN(cfg.window().r+3))
		for j := range marks {
			marks[j] = Mark(rng.IntN(3))
		}
		current := states[rng.IntN(len(states))]
		next := Mark(rng.IntN(3))
		wantK, wantOK := predictNaive(cfg, marks, current, next)
		gotK, gotOK, err := PredictAlarm(cfg, marks, current, next)
		if err != nil || gotK != wantK || gotOK != wantOK {
			t.Fatalf("case %d: PredictAlarm(%+v, %s, %s, %s) = %d, %v, %v; evaluating each period gives %d, %v",
				i, cfg, FormatNotation(marks), current, next, gotK, gotOK, err, wantK, wantOK)
		}
	}
}

func TestPredictAlarmRejects(t *testing.T) {
	cfg := Config{EvaluationPeriods: 3}
	if _, _, err := PredictAlarm(Config{}, nil, StateOK, MarkBreaching); err == nil {
		t.Error("a config without evaluation periods was accepted")
	}
	if _, _, err := PredictAlarm(cfg, []Mark{7}, StateOK, MarkBreaching); err == nil {
		t.Error("an invalid mark was accepted")
	}
	if _, _, err := PredictAlarm(cfg, nil, "SOMETIMES", MarkBreaching); err == nil {
		t.Error("an invalid state was accepted")
	}
}

// BenchmarkPredictAlarmDay is a day of one-second periods (the largest
// window the policy accepts), half of them idle.
func BenchmarkPredictAlarmDay(b *testing.B) {
	const n = 86400
	cfg := Config{EvaluationPeriods: n, TreatMissingData: TreatNotBreaching}
	marks := make([]Mark, n+2)
	for i := range marks {
		marks[i] = MarkNotBreaching
		if i >= n/2 {
			marks[i] = MarkBreaching
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if k, ok, err := PredictAlarm(cfg, marks, StateOK, MarkBreaching); err != nil || !ok || k != n/2-2 {
			b.Fatalf("PredictAlarm = %d, %v, %v", k, ok, err)
		}
	}
}

func TestSeriesJSON(t *testing.T) {
	s := Series{MarkBreaching, MarkNotBreaching, MarkMissing, MarkBreaching}
	b, err := json.Marshal(s)
	if err != nil || string(b) != `"X0-X"` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var got Series
	if err := json.Unmarshal(b, &got); err != nil || got.String() != "X 0 - X" {
		t.Fatalf("Unmarshal(%s) = %v, %v", b, got, err)
	}
	// The array form earlier versions wrote.
	if err := json.Unmarshal([]byte(`["X","0","-"]`), &got); err != nil || got.String() != "X 0 -" {
		t.Fatalf("Unmarshal(array) = %v, %v", got, err)
	}
	for _, bad := range []string{`"X?"`, `7`, `["Y"]`} {
		if err := json.Unmarshal([]byte(bad), &got); err == nil {
			t.Errorf("Unmarshal(%s) accepted", bad)
		}
	}
	if _, err := json.Marshal(Series{9}); err == nil {
		t.Error("Marshal of an invalid mark succeeded")
	}
}
