package alarm

import (
	"fmt"
	"strings"
)

// Datapoint is the statistic of one period, or the lack of one. The zero
// value is a missing datapoint.
type Datapoint struct {
	Value   float64
	Present bool
}

// Value returns a present datapoint holding v.
func Value(v float64) Datapoint { return Datapoint{Value: v, Present: true} }

// Missing is a period without a datapoint.
var Missing = Datapoint{}

// Mark is what a datapoint counts as in an evaluation.
type Mark uint8

// Marks, written 0, X and - in the notation of the CloudWatch user guide.
const (
	MarkMissing Mark = iota
	MarkNotBreaching
	MarkBreaching
)

// String returns the mark in the user guide's notation: "0", "X" or "-".
func (k Mark) String() string {
	switch k {
	case MarkNotBreaching:
		return "0"
	case MarkBreaching:
		return "X"
	case MarkMissing:
		return "-"
	}
	return fmt.Sprintf("Mark(%d)", uint8(k))
}

// MarshalText makes marks encode as "0", "X" and "-" in JSON.
func (k Mark) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a mark written by MarshalText.
func (k *Mark) UnmarshalText(b []byte) error {
	switch string(b) {
	case "0":
		*k = MarkNotBreaching
	case "X", "x":
		*k = MarkBreaching
	case "-":
		*k = MarkMissing
	default:
		return fmt.Errorf("parse mark %q: %w", b, ErrToken)
	}
	return nil
}

// ParseNotation parses a series in the notation of the CloudWatch user
// guide's tables: space-separated tokens, oldest first, where 0 is a
// datapoint within the threshold, X (or x) a breaching datapoint and - a
// missing one. The comparison is implicit in the notation, so the result is
// evaluated with EvaluateMarks. Blank input gives an empty series.
func ParseNotation(s string) ([]Mark, error) {
	fields := strings.Fields(s)
	marks := make([]Mark, 0, len(fields))
	for i, f := range fields {
		switch f {
		case "0":
			marks = append(marks, MarkNotBreaching)
		case "X", "x":
			marks = append(marks, MarkBreaching)
		case "-":
			marks = append(marks, MarkMissing)
		default:
			return nil, fmt.Errorf("parse datapoint %d %q: %w", i+1, f, ErrToken)
		}
	}
	return marks, nil
}

// FormatNotation writes marks in the notation ParseNotation reads.
func FormatNotation(marks []Mark) string {
	var b strings.Builder
	for i, k := range marks {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(k.String())
	}
	return b.String()
}
