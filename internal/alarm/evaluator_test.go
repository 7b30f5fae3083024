package alarm

import (
	"errors"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

var t0 = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

// idleAlarm is the classic stop-when-idle alarm: SSH Connections < 1 for
// 15 of 15 one-minute periods.
func idleAlarm(treat TreatMissingData) Config {
	return Config{
		Period:             time.Minute,
		EvaluationPeriods:  15,
		ComparisonOperator: LessThanThreshold,
		Threshold:          1,
		TreatMissingData:   treat,
	}
}

func mustEvaluator(t *testing.T, cfg Config, initial State) *Evaluator {
	t.Helper()
	e, err := NewEvaluator(cfg, initial)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func observe(t *testing.T, e *Evaluator, at time.Time, d Datapoint) []Transition {
	t.Helper()
	trs, err := e.Observe(at, d)
	if err != nil {
		t.Fatal(err)
	}
	return trs
}

// TestEvaluatorIdle drives an Evaluator from a ticker on a fake clock
// through fifteen idle minutes.
func TestEvaluatorIdle(t *testing.T) {
	clk := clock.NewFake(t0)
	tick := clk.NewTicker(time.Minute)
	defer tick.Stop()
	e := mustEvaluator(t, idleAlarm(TreatMissing), "")

	connections := []float64{2, 1} // then nobody
	var got []Transition
	for minute := range 20 {
		clk.Advance(time.Minute)
		at := <-tick.C()
		n := 0.0
		if minute < len(connections) {
			n = connections[minute]
		}
		got = append(got, observe(t, e, at, Value(n))...)
	}
	want := []Transition{
		{From: StateInsufficientData, To: StateOK, Time: t0.Add(1 * time.Minute)},
		{From: StateOK, To: StateAlarm, Time: t0.Add(17 * time.Minute)},
	}
	if len(got) != len(want) {
		t.Fatalf("transitions %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].From != want[i].From || got[i].To != want[i].To || !got[i].Time.Equal(want[i].Time) || got[i].Reason == "" {
			t.Errorf("transition %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if e.State() != StateAlarm {
		t.Errorf("state %s, want ALARM", e.State())
	}
	// Someone connects: back to OK, once.
	clk.Advance(time.Minute)
	if trs := observe(t, e, <-tick.C(), Value(1)); len(trs) != 1 || trs[0].To != StateOK {
		t.Errorf("on connect: %+v, want one transition to OK", trs)
	}
	clk.Advance(time.Minute)
	if trs := observe(t, e, <-tick.C(), Value(1)); len(trs) != 0 {
		t.Errorf("still connected: %+v, want no transition", trs)
	}
}

func TestEvaluatorGap(t *testing.T) {
	cfg := Config{Period: time.Minute, EvaluationPeriods: 3, ComparisonOperator: GreaterThanOrEqualToThreshold, Threshold: 1}
	e := mustEvaluator(t, cfg, StateOK)
	for i := range 3 {
		observe(t, e, t0.Add(time.Duration(i)*time.Minute), Value(0))
	}
	// The agent was suspended: nothing for 9 minutes. The 5-period range
	// empties at minute 7, which is when the alarm goes to
	// INSUFFICIENT_DATA; the datapoint at minute 11 brings it back to OK.
	trs := observe(t, e, t0.Add(11*time.Minute+10*time.Second), Value(0))
	if len(trs) != 2 ||
		trs[0].To != StateInsufficientData || !trs[0].Time.Equal(t0.Add(7*time.Minute)) ||
		trs[1].To != StateOK || !trs[1].Time.Equal(t0.Add(11*time.Minute+10*time.Second)) {
		t.Fatalf("transitions %+v", trs)
	}
	if got := FormatNotation(e.Range()); got != "- - - - 0" {
		t.Errorf("range %q, want %q", got, "- - - - 0")
	}
	// A clock jump of a year is cheap and lands in the same place.
	trs = observe(t, e, t0.Add(365*24*time.Hour), Value(0))
	if len(trs) != 2 || trs[0].To != StateInsufficientData || trs[1].To != StateOK {
		t.Fatalf("after a year: %+v", trs)
	}
}

func TestEvaluatorJitterAndOrder(t *testing.T) {
	cfg := Config{Period: time.Minute, EvaluationPeriods: 2, ComparisonOperator: GreaterThanThreshold, Threshold: 0}
	e := mustEvaluator(t, cfg, StateOK)
	observe(t, e, t0, Value(1))
	// 59.6 s and 61 s later are both the next period.
	observe(t, e, t0.Add(59600*time.Millisecond), Value(1))
	if e.State() != StateAlarm {
		t.Fatalf("state %s, want ALARM", e.State())
	}
	last := t0.Add(59600 * time.Millisecond)
	for _, at := range []time.Time{last, last.Add(29 * time.Second), last.Add(-time.Minute)} {
		if _, err := e.Observe(at, Value(0)); !errors.Is(err, ErrOutOfOrder) {
			t.Errorf("observe at %s: got %v, want %v", at, err, ErrOutOfOrder)
		}
	}
	if got := FormatNotation(e.Range()); got != "- - X X" {
		t.Errorf("rejected datapoints changed the range to %q", got)
	}
	observe(t, e, last.Add(61*time.Second), Value(0))
	if got := FormatNotation(e.Range()); got != "- X X 0" {
		t.Errorf("range %q, want %q", got, "- X X 0")
	}
}

func TestEvaluatorIgnoreKeepsState(t *testing.T) {
	cfg := Config{Period: time.Minute, EvaluationPeriods: 3, ComparisonOperator: GreaterThanThreshold, Threshold: 0, TreatMissingData: TreatIgnore}
	e := mustEvaluator(t, cfg, "")
	for i := range 3 {
		observe(t, e, t0.Add(time.Duration(i)*time.Minute), Value(5))
	}
	if e.State() != StateAlarm {
		t.Fatalf("state %s, want ALARM", e.State())
	}
	// The metric stops: ignore keeps ALARM however long it is silent, and
	// no action fires again.
	for i := 3; i < 30; i++ {
		if trs := observe(t, e, t0.Add(time.Duration(i)*time.Minute), Missing); len(trs) != 0 {
			t.Fatalf("minute %d: %+v", i, trs)
		}
	}
	if e.State() != StateAlarm {
		t.Errorf("state %s, want ALARM", e.State())
	}
}

func TestNewEvaluatorErrors(t *testing.T) {
	cfg := idleAlarm(TreatMissing)
	cfg.Period = 0
	if _, err := NewEvaluator(cfg, ""); !errors.Is(err, ErrPeriod) {
		t.Errorf("no period: got %v, want %v", err, ErrPeriod)
	}
	if _, err := NewEvaluator(idleAlarm("sometimes"), ""); !errors.Is(err, ErrTreatMissingData) {
		t.Errorf("bad treat: got %v, want %v", err, ErrTreatMissingData)
	}
	if _, err := NewEvaluator(idleAlarm(TreatMissing), "Alarm"); !errors.Is(err, ErrState) {
		t.Errorf("bad state: got %v, want %v", err, ErrState)
	}
}

func BenchmarkEvaluatorObserve(b *testing.B) {
	e, err := NewEvaluator(idleAlarm(TreatMissing), "")
	if err != nil {
		b.Fatal(err)
	}
	at := t0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		at = at.Add(time.Minute)
		d := Value(float64(i % 17 / 16))
		if i%5 == 0 {
			d = Missing
		}
		if _, err := e.Observe(at, d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEvaluate(b *testing.B) {
	cfg := idleAlarm(TreatBreaching)
	series := make([]Datapoint, 20)
	for i := range series {
		if i%3 != 0 {
			series[i] = Value(0)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Evaluate(cfg, series, StateOK); err != nil {
			b.Fatal(err)
		}
	}
}

func TestMarkTextRoundTrip(t *testing.T) {
	for _, k := range []Mark{MarkMissing, MarkNotBreaching, MarkBreaching} {
		b, _ := k.MarshalText()
		var got Mark
		if err := got.UnmarshalText(b); err != nil || got != k {
			t.Errorf("%v: got %v %v", k, got, err)
		}
	}
	var m Mark
	if err := m.UnmarshalText([]byte("?")); err == nil {
		t.Error("want error for ?")
	}
}
