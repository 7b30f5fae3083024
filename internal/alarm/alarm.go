// Package alarm evaluates metric alarms locally with the semantics of
// Amazon CloudWatch alarms, so that connwatch can decide to stop an idle
// machine exactly when the equivalent CloudWatch alarm would, and so that
// users can check what a CloudWatch alarm will do with a given series of
// datapoints before they create it.
//
// The model is CloudWatch's: a Period, EvaluationPeriods (N),
// DatapointsToAlarm (M, not necessarily consecutive), a ComparisonOperator
// and Threshold, and a TreatMissingData policy (missing, notBreaching,
// breaching, ignore). An alarm is in one of the states OK, ALARM or
// INSUFFICIENT_DATA.
//
// Missing data is handled as the CloudWatch user guide describes in "How
// alarm state is evaluated when data is missing" (page "Configuring how
// CloudWatch alarms treat missing data"): each evaluation looks at an
// evaluation range wider than N periods; when the range holds at least N
// real datapoints the N most recent real ones decide and TreatMissingData is
// not used; otherwise every real datapoint of the range counts and as few
// missing datapoints as needed to make up N are filled in according to
// TreatMissingData, with the guide's "premature alarm" rule for missing and
// ignore. See Evaluate for the exact rules.
//
// Evaluate and EvaluateMarks are pure functions over a series; Evaluator
// is the streaming form the agent feeds one datapoint per period. Nothing in
// this package reads the clock: times are arguments.
package alarm

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// State is the state of an alarm.
type State string

// Alarm states, spelled as CloudWatch spells them.
const (
	StateOK               State = "OK"
	StateAlarm            State = "ALARM"
	StateInsufficientData State = "INSUFFICIENT_DATA"
)

// InitialState is the state of an alarm that has never been evaluated:
// CloudWatch creates alarms in INSUFFICIENT_DATA ("the alarm has just
// started").
const InitialState = StateInsufficientData

// ParseState parses an alarm state as CloudWatch spells it.
func ParseState(s string) (State, error) {
	return parseEnum(s, "alarm state", ErrState, StateOK, StateAlarm, StateInsufficientData)
}

// parseEnum returns s as a T if it is one of valid, else an error naming
// s, what it should be and the valid values.
func parseEnum[T ~string](s, what string, sentinel error, valid ...T) (T, error) {
	if slices.Contains(valid, T(s)) {
		return T(s), nil
	}
	names := make([]string, len(valid))
	for i, v := range valid {
		names[i] = string(v)
	}
	return "", fmt.Errorf("parse %s %q: %w (valid: %s)", what, s, sentinel, strings.Join(names, ", "))
}

// TreatMissingData says how an evaluation fills in missing datapoints when
// the evaluation range has fewer than EvaluationPeriods real ones.
type TreatMissingData string

// TreatMissingData values, spelled as in the CloudWatch API.
const (
	// TreatMissing counts only real datapoints, and goes to
	// INSUFFICIENT_DATA when the whole evaluation range is missing. This is
	// CloudWatch's default.
	TreatMissing TreatMissingData = "missing"
	// TreatNotBreaching counts missing datapoints as within the threshold.
	TreatNotBreaching TreatMissingData = "notBreaching"
	// TreatBreaching counts missing datapoints as breaching the threshold.
	TreatBreaching TreatMissingData = "breaching"
	// TreatIgnore is TreatMissing, except that the alarm keeps its state
	// where TreatMissing would go to INSUFFICIENT_DATA, or to ALARM by the
	// premature alarm rule.
	TreatIgnore TreatMissingData = "ignore"
)

// ParseTreatMissingData parses a TreatMissingData value as spelled in the
// CloudWatch API (case matters, as it does there).
func ParseTreatMissingData(s string) (TreatMissingData, error) {
	return parseEnum(s, "treat missing data", ErrTreatMissingData, TreatMissing, TreatNotBreaching, TreatBreaching, TreatIgnore)
}

// ComparisonOperator compares a datapoint with the threshold; a datapoint
// for which the comparison holds is breaching.
type ComparisonOperator string

// Comparison operators of static-threshold alarms, spelled as in the
// CloudWatch API.
const (
	GreaterThanOrEqualToThreshold ComparisonOperator = "GreaterThanOrEqualToThreshold"
	GreaterThanThreshold          ComparisonOperator = "GreaterThanThreshold"
	LessThanThreshold             ComparisonOperator = "LessThanThreshold"
	LessThanOrEqualToThreshold    ComparisonOperator = "LessThanOrEqualToThreshold"
)

// ParseComparisonOperator parses a comparison operator as spelled in the
// CloudWatch API.
func ParseComparisonOperator(s string) (ComparisonOperator, error) {
	return parseEnum(s, "comparison operator", ErrComparisonOperator,
		GreaterThanOrEqualToThreshold, GreaterThanThreshold, LessThanThreshold, LessThanOrEqualToThreshold)
}

// Breaches reports whether value breaches threshold under op. An unknown
// operator breaches nothing; Config.Validate rejects it.
func (op ComparisonOperator) Breaches(value, threshold float64) bool {
	switch op {
	case GreaterThanOrEqualToThreshold:
		return value >= threshold
	case GreaterThanThreshold:
		return value > threshold
	case LessThanThreshold:
		return value < threshold
	case LessThanOrEqualToThreshold:
		return value <= threshold
	}
	return false
}

// Bounds of an alarm. CloudWatch's PutMetricAlarm refuses an alarm whose
// EvaluationPeriods × Period is longer than one day when its period is
// shorter than an hour, and longer than seven days otherwise. connwatch
// bounds every window by one day: an idle window is far shorter, and the
// work and memory of an evaluation grow with the number of periods.
const (
	// MaxWindow bounds EvaluationPeriods × Period when Period is set.
	MaxWindow = 24 * time.Hour
	// MaxEvaluationPeriods bounds N whatever the period: one day of
	// one-second periods, the shortest the agent uses (86,400).
	MaxEvaluationPeriods = int(MaxWindow / time.Second)
	// MaxEvaluationRange bounds the evaluation range (172,800 periods):
	// CloudWatch does not publish its own, and twice the longest window
	// leaves room for any range a user may want to try while keeping an
	// evaluation's memory (one byte a period) small.
	MaxEvaluationRange = 2 * MaxEvaluationPeriods
)

// Errors returned for invalid configuration and input. Callers branch on
// them with errors.Is; the wrapping error names the bad value.
var (
	ErrEvaluationPeriods  = errors.New(fmt.Sprintf("evaluation periods must be between 1 and %d", MaxEvaluationPeriods))
	ErrWindow             = errors.New("evaluation periods times period must be at most one day")
	ErrDatapointsToAlarm  = errors.New("datapoints to alarm must be between 1 and evaluation periods")
	ErrEvaluationRange    = errors.New(fmt.Sprintf("evaluation range must be between evaluation periods and %d", MaxEvaluationRange))
	ErrTreatMissingData   = errors.New("unknown treat missing data value")
	ErrComparisonOperator = errors.New("unknown comparison operator")
	ErrThreshold          = errors.New("threshold must be a finite number")
	ErrPeriod             = errors.New("period must be positive")
	ErrState              = errors.New("unknown alarm state")
	ErrToken              = errors.New("invalid datapoint token (want 0, X or -)")
	ErrOutOfOrder         = errors.New("datapoint is not for a period after the previous one")
)

// Config is an alarm definition. Zero values of the optional fields take
// CloudWatch's defaults.
type Config struct {
	// Period is the length of one datapoint's period. Only Evaluator uses
	// it, to notice periods that had no datapoint at all.
	Period time.Duration
	// EvaluationPeriods (N) is how many datapoints an evaluation looks at.
	EvaluationPeriods int
	// DatapointsToAlarm (M) is how many of those N must breach for ALARM;
	// they need not be consecutive. Zero means N.
	DatapointsToAlarm int
	// EvaluationRange is how many of the most recent periods an evaluation
	// may draw on when some are missing. CloudWatch does not publish this
	// number ("depends on the length of the alarm period and whether it is
	// based on a metric with standard resolution or high resolution"); its
	// user guide's examples use 5 for N = 3. Zero means N+2, as in those
	// examples. Set it to N to disable the wider range.
	EvaluationRange int
	// ComparisonOperator and Threshold decide whether a datapoint breaches.
	ComparisonOperator ComparisonOperator
	Threshold          float64
	// TreatMissingData defaults to missing.
	TreatMissingData TreatMissingData
}

// Validate reports whether c is a usable alarm definition. Period may be
// zero: only NewEvaluator needs it.
func (c Config) Validate() error {
	if err := c.validateWindow(); err != nil {
		return err
	}
	if _, err := ParseComparisonOperator(string(c.ComparisonOperator)); err != nil {
		return fmt.Errorf("validate alarm: %w", err)
	}
	if math.IsNaN(c.Threshold) || math.IsInf(c.Threshold, 0) {
		return fmt.Errorf("validate alarm: threshold %v: %w", c.Threshold, ErrThreshold)
	}
	return nil
}

// validateWindow checks everything but the comparison: what EvaluateMarks
// needs. Every bound is checked before anything is computed from the
// numbers, so no overflow or allocation follows from a bad one.
func (c Config) validateWindow() error {
	n, m, r := c.EvaluationPeriods, c.DatapointsToAlarm, c.EvaluationRange
	if n < 1 || n > MaxEvaluationPeriods {
		return fmt.Errorf("validate alarm: evaluation periods %d: %w", n, ErrEvaluationPeriods)
	}
	if c.Period < 0 {
		return fmt.Errorf("validate alarm: period %v: %w", c.Period, ErrPeriod)
	}
	// n > MaxWindow/Period, not n*Period > MaxWindow: the product may overflow.
	if c.Period > 0 && n > int(MaxWindow/c.Period) {
		return fmt.Errorf("validate alarm: %d evaluation periods of %v: %w", n, c.Period, ErrWindow)
	}
	if m < 0 || m > n {
		return fmt.Errorf("validate alarm: datapoints to alarm %d with evaluation periods %d: %w", m, n, ErrDatapointsToAlarm)
	}
	if r != 0 && (r < n || r > MaxEvaluationRange) {
		return fmt.Errorf("validate alarm: evaluation range %d with evaluation periods %d: %w", r, n, ErrEvaluationRange)
	}
	if c.TreatMissingData != "" {
		if _, err := ParseTreatMissingData(string(c.TreatMissingData)); err != nil {
			return fmt.Errorf("validate alarm: %w", err)
		}
	}
	return nil
}

// window is a validated Config with its defaults applied.
type window struct {
	n, m, r int
	treat   TreatMissingData
}

func (c Config) window() window {
	w := window{n: c.EvaluationPeriods, m: c.DatapointsToAlarm, r: c.EvaluationRange, treat: c.TreatMissingData}
	if w.m == 0 {
		w.m = w.n
	}
	if w.r == 0 {
		w.r = w.n + 2
	}
	if w.treat == "" {
		w.treat = TreatMissing
	}
	return w
}

// Classify marks d as breaching, not breaching or missing under c's
// comparison. A NaN value counts as missing.
func (c Config) Classify(d Datapoint) Mark {
	switch {
	case !d.Present || math.IsNaN(d.Value):
		return MarkMissing
	case c.ComparisonOperator.Breaches(d.Value, c.Threshold):
		return MarkBreaching
	}
	return MarkNotBreaching
}
