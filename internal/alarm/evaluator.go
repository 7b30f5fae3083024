package alarm

import (
	"fmt"
	"time"
)

// Transition is a change of alarm state: what alarm actions run on.
type Transition struct {
	From, To State
	// Time is the time of the datapoint whose evaluation changed the state.
	Time   time.Time
	Reason string
}

// Evaluator evaluates an alarm period after period, the way CloudWatch
// does after each new datapoint, and reports state changes. It is fed one
// datapoint per period with the time it was taken; it never reads the clock.
//
// Periods before the first datapoint count as missing, as they do for a new
// CloudWatch alarm: with breaching, a new Evaluator may go to ALARM at its
// first datapoint.
//
// An Evaluator is not safe for concurrent use.
type Evaluator struct {
	w      window
	cfg    Config
	state  State
	marks  []Mark // the evaluation range, oldest first
	last   time.Time
	period time.Duration
	begun  bool
}

// NewEvaluator returns an Evaluator for cfg in state initial (empty means
// InitialState, INSUFFICIENT_DATA, as for a new CloudWatch alarm). cfg
// must have a Period.
func NewEvaluator(cfg Config, initial State) (*Evaluator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Period <= 0 {
		return nil, fmt.Errorf("validate alarm: period %v: %w", cfg.Period, ErrPeriod)
	}
	if initial == "" {
		initial = InitialState
	}
	if _, err := ParseState(string(initial)); err != nil {
		return nil, fmt.Errorf("create evaluator: %w", err)
	}
	w := cfg.window()
	return &Evaluator{w: w, cfg: cfg, state: initial, marks: make([]Mark, w.r), period: cfg.Period}, nil
}

// State returns the current state.
func (e *Evaluator) State() State { return e.state }

// Range returns the current evaluation range, oldest first.
func (e *Evaluator) Range() []Mark { return append([]Mark(nil), e.marks...) }

// Observe records d, the datapoint of the period taken at time at, and
// evaluates the alarm. It returns the state changes, oldest first: none
// most of the time, one at most for a period right after the previous one.
//
// Calls are expected one Period apart; at is rounded to the nearest whole
// number of periods after the previous call. When that is more than one,
// the periods in between had no datapoint: each is evaluated as missing, in
// order, and may change the state too. A call less than half a period after
// the previous one (or before it) is rejected with ErrOutOfOrder and changes
// nothing.
func (e *Evaluator) Observe(at time.Time, d Datapoint) ([]Transition, error) {
	steps := 1
	if e.begun {
		steps = int((at.Sub(e.last) + e.period/2) / e.period)
		if steps < 1 {
			return nil, fmt.Errorf("observe datapoint at %s after %s: %w",
				at.Format(time.RFC3339Nano), e.last.Format(time.RFC3339Nano), ErrOutOfOrder)
		}
	}
	var out []Transition
	// Once the whole range is missing, further missing periods change
	// nothing: evaluating at most one range of them is enough.
	for i := 1; i < steps && i <= e.w.r; i++ {
		if t, ok := e.step(e.last.Add(time.Duration(i)*e.period), MarkMissing); ok {
			out = append(out, t)
		}
	}
	if t, ok := e.step(at, e.cfg.Classify(d)); ok {
		out = append(out, t)
	}
	e.last, e.begun = at, true
	return out, nil
}

// step shifts k into the range and evaluates.
func (e *Evaluator) step(at time.Time, k Mark) (Transition, bool) {
	copy(e.marks, e.marks[1:])
	e.marks[len(e.marks)-1] = k
	d := decide(e.w, e.marks, e.state)
	if d.state == e.state {
		return Transition{}, false
	}
	t := Transition{From: e.state, To: d.state, Time: at, Reason: d.reason(e.w, e.state)}
	e.state = d.state
	return t, true
}
