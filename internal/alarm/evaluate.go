package alarm

import (
	"fmt"
	"slices"
)

// Result is the outcome of one evaluation.
type Result struct {
	// State is the state after the evaluation; Previous the state before.
	State    State
	Previous State
	// Reason says in a short sentence why.
	Reason string
	// Range is the evaluation range, oldest first: the last
	// EvaluationRange periods of the series, with periods from before the
	// series began counted as missing.
	Range []Mark
	// Evaluated lists the datapoints that decided, oldest first. A missing
	// datapoint that was filled in carries the mark it counted as, or
	// MarkMissing under missing and ignore, which do not count it.
	Evaluated []Mark
	// Real is how many datapoints of the range are not missing, Breaching
	// how many of the evaluated ones counted as breaching (filled-in ones
	// included) and Filled how many missing datapoints had to be filled in
	// to make up EvaluationPeriods (the second column of the user guide's
	// tables).
	Real      int
	Breaching int
	Filled    int
}

// Changed reports whether the evaluation changed the state: alarm actions
// run on changes only.
func (r Result) Changed() bool { return r.State != r.Previous }

// Evaluate evaluates an alarm over series, oldest datapoint first, for an
// alarm currently in state current (empty means InitialState). It is pure:
// the same arguments give the same Result.
//
// The rules are those of "How alarm state is evaluated when data is missing"
// in the CloudWatch user guide, over the evaluation range: the last
// EvaluationRange (R) periods of the series, where periods from before the
// series began count as missing.
//
//   - At least N real datapoints in the range: the N most recent real ones
//     decide, skipping missing periods; TreatMissingData is not used. ALARM
//     when at least M of them breach, else OK.
//   - Fewer than N: every real datapoint of the range counts, and N minus
//     their number missing datapoints (the most recent ones) are filled in.
//     breaching and notBreaching count the filled-in ones as breaching or
//     not breaching: ALARM when at least M breach, else OK.
//   - missing and ignore count only the real datapoints: ALARM when at least
//     M of them breach. Otherwise the "premature alarm" rule applies: when
//     every real datapoint in the range breaches and the oldest of them is
//     at least M periods old, missing goes to ALARM and ignore keeps the
//     current state. Otherwise OK.
//   - No real datapoint in the range at all: missing goes to
//     INSUFFICIENT_DATA and ignore keeps the current state (breaching and
//     notBreaching follow the rule above: ALARM and OK).
func Evaluate(cfg Config, series []Datapoint, current State) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	marks := make([]Mark, len(series))
	for i, d := range series {
		marks[i] = cfg.Classify(d)
	}
	return evaluate(cfg, marks, current)
}

// EvaluateMarks is Evaluate for a series already marked breaching, not
// breaching or missing, such as one read by ParseNotation. It does not use
// cfg's ComparisonOperator and Threshold.
func EvaluateMarks(cfg Config, marks []Mark, current State) (Result, error) {
	if err := cfg.validateWindow(); err != nil {
		return Result{}, err
	}
	return evaluate(cfg, marks, current)
}

func evaluate(cfg Config, marks []Mark, current State) (Result, error) {
	if current == "" {
		current = InitialState
	}
	if _, err := ParseState(string(current)); err != nil {
		return Result{}, fmt.Errorf("evaluate alarm: %w", err)
	}
	for i, k := range marks {
		if k > MarkBreaching {
			return Result{}, fmt.Errorf("evaluate alarm: datapoint %d is %v: %w", i+1, k, ErrToken)
		}
	}
	w := cfg.window()
	d := decide(w, marks, current)
	return Result{
		State:     d.state,
		Previous:  current,
		Reason:    d.reason(w, current),
		Range:     evaluationRange(w, marks),
		Evaluated: evaluated(w, d, marks),
		Real:      d.real,
		Breaching: d.breaching,
		Filled:    d.filled,
	}, nil
}

// rule names the rule of the user guide that decided an evaluation.
type rule uint8

const (
	ruleRecent     rule = iota // at least N real datapoints
	ruleFilled                 // fewer, filled in by breaching or notBreaching
	ruleRealOnly               // fewer, missing or ignore: real ones only
	rulePremature              // premature alarm rule
	ruleAllMissing             // nothing but missing datapoints
)

// decision is an evaluation without the slices and text of a Result, so
// that the streaming Evaluator does not allocate per period.
type decision struct {
	state     State
	rule      rule
	kept      bool // ignore kept the current state
	real      int  // real datapoints in the range
	breaching int  // evaluated datapoints counted as breaching
	filled    int  // missing datapoints filled in
	span      int  // ruleRecent: periods covered by the N most recent real datapoints
	age       int  // rulePremature: age in periods of the oldest real datapoint, 1 being the newest
}

// decide evaluates the last w.r marks, oldest first; a shorter series is
// taken as preceded by missing periods.
func decide(w window, marks []Mark, current State) decision {
	if len(marks) > w.r {
		marks = marks[len(marks)-w.r:]
	}
	var t tally
	for i := len(marks) - 1; i >= 0; i-- {
		if marks[i] == MarkMissing {
			continue
		}
		t.real++
		t.oldest = len(marks) - i
		if t.real == w.n {
			t.span = t.oldest
		}
		if marks[i] == MarkBreaching {
			t.breaching++
			if t.real <= w.n {
				t.recent++
			}
		}
	}
	return t.decide(w, current)
}

// tally is what an evaluation needs to know of its range: how many real
// and breaching datapoints it holds, how many of the N most recent real
// ones breach, and how old (in periods, 1 being the newest) the oldest
// real one and the N-th most recent real one are.
type tally struct {
	real, breaching, recent int
	oldest, span            int
}

// decide applies the user guide's rules to a tally.
func (t tally) decide(w window, current State) decision {
	d := decision{real: t.real}
	if t.real >= w.n {
		d.rule, d.breaching, d.span = ruleRecent, t.recent, t.span
		d.state = byCount(t.recent, w.m)
		return d
	}

	d.filled = w.n - t.real
	switch w.treat {
	case TreatBreaching:
		d.rule, d.breaching = ruleFilled, t.breaching+d.filled
		d.state = byCount(d.breaching, w.m)
		return d
	case TreatNotBreaching:
		d.rule, d.breaching = ruleFilled, t.breaching
		d.state = byCount(d.breaching, w.m)
		return d
	}

	// missing and ignore: only real datapoints count.
	d.breaching = t.breaching
	switch {
	case t.real == 0:
		d.rule = ruleAllMissing
		d.state = StateInsufficientData
	case t.breaching >= w.m:
		d.rule, d.state = ruleRealOnly, StateAlarm
	case t.breaching == t.real && t.oldest >= w.m:
		d.rule, d.age, d.state = rulePremature, t.oldest, StateAlarm
	default:
		d.rule, d.state = ruleRealOnly, StateOK
	}
	if w.treat == TreatIgnore && (d.rule == ruleAllMissing || d.rule == rulePremature) {
		d.state, d.kept = current, true
	}
	return d
}

func byCount(breaching, m int) State {
	if breaching >= m {
		return StateAlarm
	}
	return StateOK
}

// evaluationRange returns the last w.r marks, padded with missing ones in
// front when the series is shorter.
func evaluationRange(w window, marks []Mark) []Mark {
	out := make([]Mark, w.r) // zero Mark is MarkMissing
	if len(marks) > w.r {
		marks = marks[len(marks)-w.r:]
	}
	copy(out[w.r-len(marks):], marks)
	return out
}

// evaluated returns the datapoints that decided, oldest first.
func evaluated(w window, d decision, marks []Mark) []Mark {
	rng := evaluationRange(w, marks)
	fill := MarkMissing
	switch w.treat {
	case TreatBreaching:
		fill = MarkBreaching
	case TreatNotBreaching:
		fill = MarkNotBreaching
	}
	out := make([]Mark, 0, w.n)
	seen, fills := 0, d.filled
	for i := len(rng) - 1; i >= 0; i-- {
		switch {
		case rng[i] != MarkMissing && (d.rule != ruleRecent || seen < w.n):
			out = append(out, rng[i])
			seen++
		case rng[i] == MarkMissing && fills > 0:
			out = append(out, fill)
			fills--
		}
	}
	slices.Reverse(out)
	return out
}

// reason says why d was decided, in one short sentence.
func (d decision) reason(w window, current State) string {
	switch d.rule {
	case ruleRecent:
		s := fmt.Sprintf("%d of the %d most recent datapoints breaching, %d needed", d.breaching, w.n, w.m)
		if skipped := d.span - w.n; skipped > 0 {
			s += fmt.Sprintf(" (%s skipped; treat missing data not used)", count(skipped, "missing period"))
		}
		return s
	case ruleFilled:
		return fmt.Sprintf("%d of %d datapoints breaching, %d needed: %s plus %s filled in as %s",
			d.breaching, w.n, w.m, count(d.real, "real datapoint"), count(d.filled, "missing one"), w.treat)
	case ruleRealOnly:
		return fmt.Sprintf("%d of %s breaching, %d needed; %s not counted (treat missing data %s)",
			d.breaching, count(d.real, "real datapoint"), w.m, count(d.filled, "missing datapoint"), w.treat)
	case rulePremature:
		s := fmt.Sprintf("premature alarm rule: every real datapoint breaches and the oldest is %s old, at least %d", count(d.age, "period"), w.m)
		if d.kept {
			s += fmt.Sprintf("; ignore keeps %s", current)
		}
		return s
	case ruleAllMissing:
		s := fmt.Sprintf("all %s of the evaluation range are missing", count(w.r, "period"))
		if d.kept {
			s += fmt.Sprintf("; ignore keeps %s", current)
		}
		return s
	}
	return ""
}

// count writes n and noun, in the plural unless n is 1.
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
