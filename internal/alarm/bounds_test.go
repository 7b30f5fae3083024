package alarm

import (
	"errors"
	"math"
	"runtime"
	"strings"
	"testing"
	"time"
)

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestConfigBounds gives Validate, Evaluate, EvaluateMarks and
// NewEvaluator extreme numbers: each is refused with its sentinel and the
// value named, without a panic and without allocating in proportion to
// the number.
func TestConfigBounds(t *testing.T) {
	valid := Config{Period: time.Second, EvaluationPeriods: 3, ComparisonOperator: LessThanThreshold, Threshold: 1}
	tests := []struct {
		name   string
		edit   func(*Config)
		want   error
		naming string
	}{
		{"N = MaxInt", func(c *Config) { c.EvaluationPeriods = math.MaxInt }, ErrEvaluationPeriods, "9223372036854775807"},
		{"N = MinInt", func(c *Config) { c.EvaluationPeriods = math.MinInt }, ErrEvaluationPeriods, "-9223372036854775808"},
		{"N negative", func(c *Config) { c.EvaluationPeriods = -1 }, ErrEvaluationPeriods, "-1"},
		{"N one over", func(c *Config) { c.Period = 0; c.EvaluationPeriods = MaxEvaluationPeriods + 1 }, ErrEvaluationPeriods, "86401"},
		{"N x 1m over a day", func(c *Config) { c.Period = time.Minute; c.EvaluationPeriods = 1441 }, ErrWindow, "1441 evaluation periods of 1m0s"},
		{"period over a day", func(c *Config) { c.Period = 25 * time.Hour; c.EvaluationPeriods = 1 }, ErrWindow, "25h0m0s"},
		{"N x huge period", func(c *Config) { c.Period = math.MaxInt64; c.EvaluationPeriods = 2 }, ErrWindow, "2 evaluation periods"},
		{"period negative", func(c *Config) { c.Period = -time.Second }, ErrPeriod, "-1s"},
		{"M = MaxInt", func(c *Config) { c.DatapointsToAlarm = math.MaxInt }, ErrDatapointsToAlarm, "9223372036854775807"},
		{"M = MinInt", func(c *Config) { c.DatapointsToAlarm = math.MinInt }, ErrDatapointsToAlarm, "-9223372036854775808"},
		{"range = MaxInt", func(c *Config) { c.EvaluationRange = math.MaxInt }, ErrEvaluationRange, "9223372036854775807"},
		{"range 1e11", func(c *Config) { c.EvaluationRange = 100_000_000_000 }, ErrEvaluationRange, "100000000000"},
		{"range one over", func(c *Config) { c.EvaluationRange = MaxEvaluationRange + 1 }, ErrEvaluationRange, "172801"},
		{"range negative", func(c *Config) { c.EvaluationRange = -1 }, ErrEvaluationRange, "-1"},
		{"threshold NaN", func(c *Config) { c.Threshold = math.NaN() }, ErrThreshold, "NaN"},
		{"threshold +Inf", func(c *Config) { c.Threshold = math.Inf(1) }, ErrThreshold, "+Inf"},
		{"threshold -Inf", func(c *Config) { c.Threshold = math.Inf(-1) }, ErrThreshold, "-Inf"},
	}
	marks := []Mark{MarkBreaching, MarkMissing, MarkNotBreaching}
	for _, tt := range tests {
		cfg := valid
		tt.edit(&cfg)
		var errs [4]error
		bytes := allocated(func() {
			errs[0] = cfg.Validate()
			_, errs[1] = Evaluate(cfg, []Datapoint{Value(0), Missing}, StateOK)
			_, errs[2] = NewEvaluator(cfg, "")
			_, errs[3] = EvaluateMarks(cfg, marks, StateOK)
		})
		for i, err := range errs[:3] {
			if !errors.Is(err, tt.want) {
				t.Errorf("%s: call %d: got %v, want %v", tt.name, i, err, tt.want)
			} else if !strings.Contains(err.Error(), tt.naming) {
				t.Errorf("%s: %q does not name %s", tt.name, err, tt.naming)
			}
		}
		// EvaluateMarks does not use the comparison.
		if tt.want != ErrThreshold && !errors.Is(errs[3], tt.want) {
			t.Errorf("%s: EvaluateMarks: got %v, want %v", tt.name, errs[3], tt.want)
		}
		if bytes > 64<<10 {
			t.Errorf("%s: refusing the config allocated %d bytes", tt.name, bytes)
		}
	}
}

// TestConfigBoundsInclusive: the bounds themselves are valid, and
// evaluating at them stays small.
func TestConfigBoundsInclusive(t *testing.T) {
	for _, cfg := range []Config{
		{EvaluationPeriods: MaxEvaluationPeriods},
		{EvaluationPeriods: MaxEvaluationPeriods, EvaluationRange: MaxEvaluationRange},
		{Period: time.Second, EvaluationPeriods: MaxEvaluationPeriods},
		{Period: time.Minute, EvaluationPeriods: 1440, DatapointsToAlarm: 1440},
		{Period: 24 * time.Hour, EvaluationPeriods: 1},
		{Period: 10 * time.Second, EvaluationPeriods: 8640},
	} {
		if err := cfg.validateWindow(); err != nil {
			t.Errorf("%+v: %v", cfg, err)
			continue
		}
		var err error
		bytes := allocated(func() { _, err = EvaluateMarks(cfg, []Mark{MarkBreaching}, StateOK) })
		if err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
		// The range and the evaluated datapoints: a byte a period each.
		if limit := uint64(3*MaxEvaluationRange + 64<<10); bytes > limit {
			t.Errorf("%+v: evaluation allocated %d bytes, want at most %d", cfg, bytes, limit)
		}
	}
}

// FuzzConfigValidate: whatever the numbers, Validate does not panic; a
// config it accepts is within the bounds, and evaluating it works.
func FuzzConfigValidate(f *testing.F) {
	f.Add(3, 0, 0, int64(time.Minute), 1.0)
	f.Add(math.MaxInt, 0, 0, int64(0), 0.0)
	f.Add(math.MinInt, math.MinInt, math.MinInt, int64(math.MinInt64), math.Inf(-1))
	f.Add(1, 1, math.MaxInt, int64(1), math.NaN())
	f.Add(MaxEvaluationPeriods, MaxEvaluationPeriods, MaxEvaluationRange, int64(time.Second), math.Inf(1))
	f.Add(MaxEvaluationPeriods+1, 1, 0, int64(0), 0.0)
	f.Add(2, 1, 0, int64(math.MaxInt64), 0.0)
	f.Add(1441, 1, 0, int64(time.Minute), -1.0)
	f.Fuzz(func(t *testing.T, n, m, r int, period int64, threshold float64) {
		cfg := Config{
			Period: time.Duration(period), EvaluationPeriods: n, DatapointsToAlarm: m, EvaluationRange: r,
			ComparisonOperator: GreaterThanThreshold, Threshold: threshold,
		}
		if err := cfg.Validate(); err != nil {
			return
		}
		switch {
		case n < 1 || n > MaxEvaluationPeriods:
			t.Fatalf("N = %d accepted", n)
		case m < 0 || m > n:
			t.Fatalf("M = %d with N = %d accepted", m, n)
		case r != 0 && (r < n || r > MaxEvaluationRange):
			t.Fatalf("range %d with N = %d accepted", r, n)
		case period < 0:
			t.Fatalf("period %v accepted", cfg.Period)
		case period > 0 && time.Duration(n) > MaxWindow/cfg.Period:
			t.Fatalf("%d periods of %v accepted", n, cfg.Period)
		case math.IsNaN(threshold) || math.IsInf(threshold, 0):
			t.Fatalf("threshold %v accepted", threshold)
		}
		res, err := Evaluate(cfg, []Datapoint{Value(threshold + 1), Missing, Value(threshold)}, StateOK)
		if err != nil {
			t.Fatalf("evaluate a valid config: %v", err)
		}
		if len(res.Evaluated) > n || len(res.Range) > max(r, n+2) {
			t.Fatalf("evaluated %d of range %d for N = %d, range %d", len(res.Evaluated), len(res.Range), n, r)
		}
		if period > 0 {
			e, err := NewEvaluator(cfg, "")
			if err != nil {
				t.Fatalf("new evaluator for a valid config: %v", err)
			}
			if _, err := e.Observe(time.Unix(0, 0), Value(threshold)); err != nil {
				t.Fatal(err)
			}
		}
	})
}
