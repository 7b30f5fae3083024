package alarm

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

// retain stands for "Retain current state" in the user guide's tables.
const retain State = "retain"

// userGuideRows are every row of the two tables in "How alarm state is
// evaluated when data is missing", CloudWatch user guide, page
// "Configuring how CloudWatch alarms treat missing data". Both tables use
// an evaluation range of 5 with 3 evaluation periods; the first has 3
// datapoints to alarm, the second 2. filled is the second column: how many
// of the 3 datapoints must be filled in.
var userGuideRows = []struct {
	name   string
	m      int
	series string
	filled int
	// Results by TreatMissingData, in the tables' column order.
	missing, ignore, breaching, notBreaching State
}{
	{"3 of 3 row 1", 3, "0 - X - X", 0, StateOK, StateOK, StateOK, StateOK},
	{"3 of 3 row 2", 3, "0 - - - -", 2, StateOK, StateOK, StateOK, StateOK},
	{"3 of 3 row 3", 3, "- - - - -", 3, StateInsufficientData, retain, StateAlarm, StateOK},
	{"3 of 3 row 4", 3, "0 X X - X", 0, StateAlarm, StateAlarm, StateAlarm, StateAlarm},
	{"3 of 3 row 5", 3, "- - X - -", 2, StateAlarm, retain, StateAlarm, StateOK},
	{"2 of 3 row 1", 2, "0 - X - X", 0, StateAlarm, StateAlarm, StateAlarm, StateAlarm},
	{"2 of 3 row 2", 2, "0 0 X 0 X", 0, StateAlarm, StateAlarm, StateAlarm, StateAlarm},
	{"2 of 3 row 3", 2, "0 - X - -", 1, StateOK, StateOK, StateAlarm, StateOK},
	{"2 of 3 row 4", 2, "- - - - 0", 2, StateOK, StateOK, StateAlarm, StateOK},
	{"2 of 3 row 5", 2, "- - - X -", 2, StateAlarm, retain, StateAlarm, StateOK},
}

var allStates = []State{StateOK, StateAlarm, StateInsufficientData}

func mustMarks(t testing.TB, s string) []Mark {
	t.Helper()
	marks, err := ParseNotation(s)
	if err != nil {
		t.Fatal(err)
	}
	return marks
}

func TestUserGuideTables(t *testing.T) {
	for _, row := range userGuideRows {
		marks := mustMarks(t, row.series)
		for _, col := range []struct {
			treat TreatMissingData
			want  State
		}{
			{TreatMissing, row.missing},
			{TreatIgnore, row.ignore},
			{TreatBreaching, row.breaching},
			{TreatNotBreaching, row.notBreaching},
		} {
			for _, current := range allStates {
				cfg := Config{EvaluationPeriods: 3, DatapointsToAlarm: row.m, TreatMissingData: col.treat}
				got, err := EvaluateMarks(cfg, marks, current)
				if err != nil {
					t.Fatalf("%s %s: %v", row.name, col.treat, err)
				}
				want := col.want
				if want == retain {
					want = current
				}
				if got.State != want {
					t.Errorf("%s %q treat %s from %s: got %s (%s), want %s",
						row.name, row.series, col.treat, current, got.State, got.Reason, want)
				}
				if got.Filled != row.filled {
					t.Errorf("%s %q treat %s: filled %d, want %d", row.name, row.series, col.treat, got.Filled, row.filled)
				}
				if len(got.Range) != 5 {
					t.Errorf("%s: evaluation range %d, want 5 (N+2)", row.name, len(got.Range))
				}
			}
		}
	}
}

// TestUserGuideProse covers the examples the guide gives in prose, around
// its tables.
func TestUserGuideProse(t *testing.T) {
	tests := []struct {
		name   string
		n, m   int
		treat  TreatMissingData
		series string
		want   State
	}{
		// "The next time this alarm is evaluated, if the data is still
		// missing it will go to ALARM, as that non-breaching data point
		// will no longer be in the evaluation range."
		{"3 of 3 row 2 one period later", 3, 3, TreatBreaching, "0 - - - - -", StateAlarm},
		// "the alarm does not go immediately into ALARM state when the data
		// is either - - - - X or - - - X - and Datapoints to Alarm is 3"
		{"premature - - - - X", 3, 3, TreatMissing, "- - - - X", StateOK},
		{"premature - - - X -", 3, 3, TreatMissing, "- - - X -", StateOK},
		// "false positives are avoided when the next data point is
		// non-breaching and causes the data to be - - - X O or - - X - O"
		{"premature - - - X 0", 3, 3, TreatMissing, "- - - X 0", StateOK},
		{"premature - - X - 0", 3, 3, TreatMissing, "- - X - 0", StateOK},
		// "if the last few data points are - - X - -, the alarm goes into
		// ALARM state even if missing data points are treated as missing"
		{"premature - - X - -", 3, 3, TreatMissing, "- - X - -", StateAlarm},
		// The breaching point stays at least M periods old while the metric
		// is silent: the alarm stays in ALARM until the range is empty.
		{"premature - X - - -", 3, 3, TreatMissing, "- X - - -", StateAlarm},
		{"premature X - - - -", 3, 3, TreatMissing, "X - - - -", StateAlarm},
		{"range empty again", 3, 3, TreatMissing, "X - - - - -", StateInsufficientData},
		// "The extra data points from farther back in the evaluation range
		// are not needed and are ignored."
		{"no missing: older ignored", 3, 3, TreatMissing, "0 0 X X X", StateAlarm},
		// "including the necessary extra data points from farther back in
		// the evaluation range"
		{"older real datapoints used", 3, 3, TreatBreaching, "X X - X -", StateAlarm},
		{"older real datapoint used, not breaching", 3, 3, TreatBreaching, "0 X - X -", StateOK},
		// Datapoints older than the range are not retrieved at all.
		{"older than range", 3, 3, TreatBreaching, "0 0 0 X - - - X", StateAlarm},
		// "all real data points in the evaluation range are included"
		{"all real included", 3, 1, TreatNotBreaching, "X - - - -", StateAlarm},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{EvaluationPeriods: tt.n, DatapointsToAlarm: tt.m, TreatMissingData: tt.treat}
			got, err := EvaluateMarks(cfg, mustMarks(t, tt.series), StateOK)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tt.want {
				t.Errorf("%q: got %s (%s), want %s", tt.series, got.State, got.Reason, tt.want)
			}
		})
	}
}

func TestMOfNNotConsecutive(t *testing.T) {
	tests := []struct {
		series string
		n, m   int
		want   State
	}{
		{"X 0 X", 3, 2, StateAlarm},
		{"X X 0", 3, 2, StateAlarm},
		{"0 X X", 3, 2, StateAlarm},
		{"X 0 0", 3, 2, StateOK},
		{"X 0 0 X 0", 3, 2, StateOK}, // only the last 3 count
		{"X 0 X 0 X", 5, 3, StateAlarm},
		{"X X 0 0 X", 5, 3, StateAlarm},
		{"0 X 0 X 0", 5, 3, StateOK},
		{"X 0 X 0 X 0 X", 5, 2, StateAlarm},
		{"0 0 0 0 X", 5, 1, StateAlarm},
		{"X 0 0 0 0 0", 5, 1, StateOK},
		{"X X X X 0", 5, 5, StateOK},
		{"X X X X X", 5, 5, StateAlarm},
		// Missing periods are skipped: the 3 most recent real datapoints.
		{"X - 0 - X", 3, 2, StateAlarm},
		{"0 X - X 0 -", 3, 2, StateAlarm},
		{"X 0 - 0 X -", 3, 2, StateOK},
	}
	for _, tt := range tests {
		for _, treat := range []TreatMissingData{TreatMissing, TreatIgnore, TreatBreaching, TreatNotBreaching} {
			cfg := Config{EvaluationPeriods: tt.n, DatapointsToAlarm: tt.m, TreatMissingData: treat}
			got, err := EvaluateMarks(cfg, mustMarks(t, tt.series), StateInsufficientData)
			if err != nil {
				t.Fatal(err)
			}
			if got.State != tt.want {
				t.Errorf("%q %d of %d, %s: got %s (%s), want %s", tt.series, tt.m, tt.n, treat, got.State, got.Reason, tt.want)
			}
		}
	}
}

func TestEvaluatedAndReason(t *testing.T) {
	tests := []struct {
		series    string
		m         int
		treat     TreatMissingData
		evaluated string
		reason    string
	}{
		{"0 - X - X", 2, TreatMissing, "0 X X", "2 of the 3 most recent datapoints breaching, 2 needed (2 missing periods skipped; treat missing data not used)"},
		{"0 0 X 0 X", 2, TreatMissing, "X 0 X", "2 of the 3 most recent datapoints breaching, 2 needed"},
		{"0 - X - -", 2, TreatBreaching, "0 X X", "2 of 3 datapoints breaching, 2 needed: 2 real datapoints plus 1 missing one filled in as breaching"},
		{"- - - - 0", 2, TreatNotBreaching, "0 0 0", "0 of 3 datapoints breaching, 2 needed: 1 real datapoint plus 2 missing ones filled in as notBreaching"},
		{"0 - X - -", 2, TreatMissing, "0 X -", "1 of 2 real datapoints breaching, 2 needed; 1 missing datapoint not counted (treat missing data missing)"},
		{"- - - X -", 2, TreatMissing, "- X -", "premature alarm rule: every real datapoint breaches and the oldest is 2 periods old, at least 2"},
		{"- - - X -", 2, TreatIgnore, "- X -", "premature alarm rule: every real datapoint breaches and the oldest is 2 periods old, at least 2; ignore keeps OK"},
		{"- - - - -", 3, TreatMissing, "- - -", "all 5 periods of the evaluation range are missing"},
		{"- - - - -", 3, TreatIgnore, "- - -", "all 5 periods of the evaluation range are missing; ignore keeps OK"},
	}
	for _, tt := range tests {
		cfg := Config{EvaluationPeriods: 3, DatapointsToAlarm: tt.m, TreatMissingData: tt.treat}
		got, err := EvaluateMarks(cfg, mustMarks(t, tt.series), StateOK)
		if err != nil {
			t.Fatal(err)
		}
		if s := FormatNotation(got.Evaluated); s != tt.evaluated {
			t.Errorf("%q %s: evaluated %q, want %q", tt.series, tt.treat, s, tt.evaluated)
		}
		if got.Reason != tt.reason {
			t.Errorf("%q %s: reason\n got %q\nwant %q", tt.series, tt.treat, got.Reason, tt.reason)
		}
	}
}

func TestSeriesShorterThanRange(t *testing.T) {
	// A series shorter than the range is preceded by missing periods, as
	// for a new alarm.
	cfg := Config{EvaluationPeriods: 3, TreatMissingData: TreatBreaching}
	got, err := EvaluateMarks(cfg, mustMarks(t, "X"), "")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateAlarm || got.Previous != StateInsufficientData {
		t.Errorf("got %s from %s, want ALARM from INSUFFICIENT_DATA", got.State, got.Previous)
	}
	if s := FormatNotation(got.Range); s != "- - - - X" {
		t.Errorf("range %q, want %q", s, "- - - - X")
	}
	got, err = EvaluateMarks(Config{EvaluationPeriods: 1}, nil, StateAlarm)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateInsufficientData || !got.Changed() {
		t.Errorf("empty series: got %s changed=%v, want INSUFFICIENT_DATA changed", got.State, got.Changed())
	}
}

func TestEvaluateValues(t *testing.T) {
	// connwatch's classic recipe: SSH Connections < 1 for 3 of 3 minutes.
	cfg := Config{EvaluationPeriods: 3, ComparisonOperator: LessThanThreshold, Threshold: 1}
	series := []Datapoint{Value(2), Missing, Value(0), Value(0), Value(0)}
	got, err := Evaluate(cfg, series, StateOK)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateAlarm {
		t.Errorf("got %s (%s), want ALARM", got.State, got.Reason)
	}
	series[3] = Value(1)
	if got, _ := Evaluate(cfg, series, StateOK); got.State != StateOK {
		t.Errorf("with a connection: got %s (%s), want OK", got.State, got.Reason)
	}
	// NaN counts as missing.
	got, err = Evaluate(Config{EvaluationPeriods: 1, ComparisonOperator: GreaterThanThreshold}, []Datapoint{Value(math.NaN())}, StateOK)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateInsufficientData {
		t.Errorf("NaN: got %s, want INSUFFICIENT_DATA", got.State)
	}
}

func TestBreaches(t *testing.T) {
	tests := []struct {
		op              ComparisonOperator
		below, at, over bool
	}{
		{GreaterThanOrEqualToThreshold, false, true, true},
		{GreaterThanThreshold, false, false, true},
		{LessThanThreshold, true, false, false},
		{LessThanOrEqualToThreshold, true, true, false},
	}
	for _, tt := range tests {
		got := []bool{tt.op.Breaches(4, 5), tt.op.Breaches(5, 5), tt.op.Breaches(6, 5)}
		if want := []bool{tt.below, tt.at, tt.over}; !slices.Equal(got, want) {
			t.Errorf("%s: below, at, over threshold = %v, want %v", tt.op, got, want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	valid := Config{EvaluationPeriods: 3, ComparisonOperator: GreaterThanThreshold}
	tests := []struct {
		name   string
		edit   func(*Config)
		want   error
		naming string // the error must name the bad value
	}{
		{"N < 1", func(c *Config) { c.EvaluationPeriods = 0 }, ErrEvaluationPeriods, "0"},
		{"M > N", func(c *Config) { c.DatapointsToAlarm = 4 }, ErrDatapointsToAlarm, "4"},
		{"M < 0", func(c *Config) { c.DatapointsToAlarm = -1 }, ErrDatapointsToAlarm, "-1"},
		{"range < N", func(c *Config) { c.EvaluationRange = 2 }, ErrEvaluationRange, "2"},
		{"unknown treat", func(c *Config) { c.TreatMissingData = "Missing" }, ErrTreatMissingData, `"Missing"`},
		{"unknown operator", func(c *Config) { c.ComparisonOperator = ">" }, ErrComparisonOperator, `">"`},
		{"no operator", func(c *Config) { c.ComparisonOperator = "" }, ErrComparisonOperator, `""`},
		{"NaN threshold", func(c *Config) { c.Threshold = math.NaN() }, ErrThreshold, "NaN"},
	}
	for _, tt := range tests {
		cfg := valid
		tt.edit(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.naming) {
			t.Errorf("%s: %q does not name %s", tt.name, err, tt.naming)
		}
		if _, err := Evaluate(cfg, nil, StateOK); !errors.Is(err, tt.want) {
			t.Errorf("%s: Evaluate: got %v, want %v", tt.name, err, tt.want)
		}
	}
	if err := valid.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	// EvaluateMarks needs no comparison.
	if _, err := EvaluateMarks(Config{EvaluationPeriods: 1}, nil, StateOK); err != nil {
		t.Errorf("EvaluateMarks without comparison: %v", err)
	}
	if _, err := EvaluateMarks(Config{EvaluationPeriods: 1}, nil, "ok"); !errors.Is(err, ErrState) {
		t.Errorf("bad state: got %v, want %v", err, ErrState)
	}
	if _, err := EvaluateMarks(Config{EvaluationPeriods: 1}, []Mark{7}, StateOK); !errors.Is(err, ErrToken) {
		t.Errorf("bad mark: got %v, want %v", err, ErrToken)
	}
}

func TestParse(t *testing.T) {
	for _, s := range []string{"missing", "notBreaching", "breaching", "ignore"} {
		if got, err := ParseTreatMissingData(s); err != nil || string(got) != s {
			t.Errorf("ParseTreatMissingData(%q) = %q, %v", s, got, err)
		}
	}
	_, err := ParseTreatMissingData("notbreaching")
	if !errors.Is(err, ErrTreatMissingData) || !strings.Contains(err.Error(), `"notbreaching"`) {
		t.Errorf("ParseTreatMissingData(notbreaching): %v", err)
	}
	for _, st := range allStates {
		if got, err := ParseState(string(st)); err != nil || got != st {
			t.Errorf("ParseState(%q) = %q, %v", st, got, err)
		}
	}
	if _, err := ParseComparisonOperator("LessThanThreshold"); err != nil {
		t.Error(err)
	}

	marks, err := ParseNotation("  0 -\tX x  ")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Mark{MarkNotBreaching, MarkMissing, MarkBreaching, MarkBreaching}; !slices.Equal(marks, want) {
		t.Errorf("ParseNotation = %v, want %v", marks, want)
	}
	if s := FormatNotation(marks); s != "0 - X X" {
		t.Errorf("FormatNotation = %q", s)
	}
	if marks, err := ParseNotation(""); err != nil || len(marks) != 0 {
		t.Errorf("ParseNotation(\"\") = %v, %v", marks, err)
	}
	for _, bad := range []string{"0 O X", "0 1", "0-X", "X, 0"} {
		_, err := ParseNotation(bad)
		if !errors.Is(err, ErrToken) {
			t.Errorf("ParseNotation(%q): got %v, want %v", bad, err, ErrToken)
		}
	}
	_, err = ParseNotation("0 - Y")
	if err == nil || err.Error() != `parse datapoint 3 "Y": invalid datapoint token (want 0, X or -)` {
		t.Errorf("ParseNotation(0 - Y): %v", err)
	}
}
