// Package tracker keeps the agent's one truth about who is connected: it
// compares each new snapshot with the last and turns the difference into
// session_start and session_end events.
package tracker

import (
	"sort"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

// Tracker remembers the current sessions. It is not safe for concurrent
// use; the agent calls it from one goroutine.
type Tracker struct {
	sessions map[string]session.Session
	// blind is true while the last snapshot could not see everything.
	blind bool
}

// New returns an empty tracker.
func New() *Tracker {
	return &Tracker{sessions: map[string]session.Session{}}
}

// Apply takes a snapshot and returns the events it implies, in time
// order: ends (at the snapshot's time) before starts (at their start
// time, which may be earlier). Session details (mode, activity) are
// updated silently.
//
// A blind snapshot cannot prove that a session ended, so sessions missing
// from it are kept; new ones in it still start.
func (t *Tracker) Apply(snap session.Snapshot) []event.Event {
	var evs []event.Event
	seen := make(map[string]bool, len(snap.Sessions))
	for _, s := range snap.Sessions {
		seen[s.ID] = true
	}
	blind := snap.Blind()
	if !blind {
		ids := make([]string, 0)
		for id := range t.sessions {
			if !seen[id] {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		for _, id := range ids {
			s := t.sessions[id]
			delete(t.sessions, id)
			evs = append(evs, event.Event{Time: snap.Time, Type: event.SessionEnd, Session: &s})
		}
	}
	for _, s := range snap.Sessions {
		if _, ok := t.sessions[s.ID]; !ok {
			s := s
			at := s.StartedAt
			if at.IsZero() || at.After(snap.Time) {
				at = snap.Time
			}
			evs = append(evs, event.Event{Time: at, Type: event.SessionStart, Session: &s})
		}
		t.sessions[s.ID] = s
	}
	if blind != t.blind {
		typ, reason := event.Sighted, "the view of sessions is complete again"
		if blind {
			typ, reason = event.Blind, blindReason(snap)
		}
		evs = append(evs, event.Event{Time: snap.Time, Type: typ, Reason: reason})
		t.blind = blind
	}
	return evs
}

// Sessions returns the current sessions, oldest first.
func (t *Tracker) Sessions() []session.Session {
	out := make([]session.Session, 0, len(t.sessions))
	for _, s := range t.sessions {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Blind reports whether the last snapshot was blind.
func (t *Tracker) Blind() bool { return t.blind }

func blindReason(snap session.Snapshot) string {
	for _, w := range snap.Warnings {
		if w.Blind {
			return w.Message
		}
	}
	return "the view of sessions is incomplete"
}
