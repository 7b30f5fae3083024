package policy

import (
	"errors"
	"math"
	"testing"
	"time"
)

// TestWindowBound: the idle window is at most MaxWindow, whatever the
// period; before, math.MaxInt periods overflowed the evaluation range and
// a window of millions of hours allocated gigabytes.
func TestWindowBound(t *testing.T) {
	for _, c := range []Config{
		{Period: time.Second, EvaluationPeriods: 86401},
		{Period: time.Minute, EvaluationPeriods: 1441},
		{Period: 25 * time.Hour, EvaluationPeriods: 1},
		{Period: time.Second, EvaluationPeriods: math.MaxInt},
		{Period: time.Second, EvaluationPeriods: 7_200_000_000}, // idle_after 2000000h
		{EvaluationPeriods: -1},
		{MaxGap: -time.Second},
		{MaxAttempts: -1},
	} {
		if err := c.WithDefaults().Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: got %v, want ErrConfig", c, err)
		}
		if _, err := New(c, time.Unix(0, 0), "b", nil); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: New: got %v, want ErrConfig", c, err)
		}
	}
	for _, c := range []Config{
		{Period: time.Second, EvaluationPeriods: int(MaxWindow / time.Second)},
		{Period: time.Minute, EvaluationPeriods: 1440},
		{Period: MaxWindow, EvaluationPeriods: 1},
	} {
		if err := c.WithDefaults().Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
}
