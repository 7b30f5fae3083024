package notify

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/connwatch/connwatch/internal/event"
)

// ErrUnknownEventType is returned by ParseFilter for a name that is not an
// event type.
var ErrUnknownEventType = errors.New("unknown event type")

// EventTypes lists every event type, in the order the docs show them.
func EventTypes() []event.Type { return event.Types() }

// Filter is the set of event types a sink wants; empty means all of them.
type Filter []event.Type

// ParseFilter parses a comma-separated list of event types, e.g.
// "session_start,session_end,stop_warning,stop". Spaces around names are
// ignored; an empty string means every type. Unknown names are an error
// wrapping ErrUnknownEventType that names each of them.
func ParseFilter(s string) (Filter, error) {
	var f Filter
	var bad []string
	for name := range strings.SplitSeq(s, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		t := event.Type(name)
		switch {
		case !slices.Contains(EventTypes(), t):
			bad = append(bad, fmt.Sprintf("%q", name))
		case !slices.Contains(f, t):
			f = append(f, t)
		}
	}
	if len(bad) > 0 {
		valid := make([]string, 0, len(EventTypes()))
		for _, t := range EventTypes() {
			valid = append(valid, string(t))
		}
		return nil, fmt.Errorf("parse event filter: %w %s (valid: %s)", ErrUnknownEventType, strings.Join(bad, ", "), strings.Join(valid, ", "))
	}
	return f, nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseFilter, so
// a filter can be a string in a config file.
func (f *Filter) UnmarshalText(b []byte) error {
	p, err := ParseFilter(string(b))
	if err != nil {
		return err
	}
	*f = p
	return nil
}

// Match reports whether events of type t pass the filter.
func (f Filter) Match(t event.Type) bool { return len(f) == 0 || slices.Contains(f, t) }

// String is the filter as ParseFilter reads it.
func (f Filter) String() string {
	names := make([]string, len(f))
	for i, t := range f {
		names[i] = string(t)
	}
	return strings.Join(names, ",")
}
