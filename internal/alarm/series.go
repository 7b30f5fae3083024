package alarm

import (
	"encoding/json"
	"fmt"
)

// Series is a run of marks, oldest first, that encodes in JSON as one
// string of their notation without spaces ("XX0-X"): a day of one-second
// periods is 86 KB, not the megabyte of a JSON array. It also decodes the
// array form that earlier versions wrote.
type Series []Mark

// MarshalJSON implements json.Marshaler.
func (s Series) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for _, m := range s {
		switch m {
		case MarkNotBreaching:
			b = append(b, '0')
		case MarkBreaching:
			b = append(b, 'X')
		case MarkMissing:
			b = append(b, '-')
		default:
			return nil, fmt.Errorf("encode marks: %v: %w", m, ErrToken)
		}
	}
	return append(b, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (s *Series) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		var ms []Mark
		if err := json.Unmarshal(b, &ms); err != nil {
			return err
		}
		*s = ms
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("decode marks: %w", err)
	}
	out := make(Series, len(str))
	for i := range len(str) {
		if err := out[i].UnmarshalText([]byte{str[i]}); err != nil {
			return fmt.Errorf("decode marks: position %d: %w", i+1, err)
		}
	}
	*s = out
	return nil
}

// String writes the series in the user guide's notation, space-separated.
func (s Series) String() string { return FormatNotation(s) }
