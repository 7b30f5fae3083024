// Package tracker keeps the agent's one truth about who is connected: it
// compares each new snapshot with the last and turns the difference into
// session_start and session_end events, and reconciles them with the
// logins sshd logged (Login), so a session too short for any scan still
// gets its events. It is the only producer of session events.
package tracker

import (
	"sort"
	"time"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

// Tracker remembers the current sessions. It is not safe for concurrent
// use; the agent calls it from one goroutine.
type Tracker struct {
	sessions map[string]session.Session
	// blind is true while the last snapshot could not see everything.
	blind bool
	// transient are the sessions the last Apply saw only after they ended.
	transient []session.Session
	// fromLog are the sessions Login reported since the last Apply.
	fromLog []session.Session
	// logins are log logins not ended yet, by loginKey; ended are the
	// scanned SSH sessions that ended recently, by loginKey.
	logins map[string]*loginState
	ended  map[string]time.Time
}

// New returns an empty tracker.
func New() *Tracker {
	return &Tracker{sessions: map[string]session.Session{}, logins: map[string]*loginState{}, ended: map[string]time.Time{}}
}

// Apply takes a snapshot and returns the events it implies, in time
// order: ends (at the snapshot's time, or the end time its source knows)
// before starts (at their start time, which may be earlier). Session
// details (mode, activity, bytes) are updated silently.
//
// A blind snapshot cannot prove that a session ended, so sessions missing
// from it are kept; new ones in it still start. A blind warning for one
// kind (a VPN source that could not be polled) keeps only that kind's.
//
// Sessions in snap.Ended end at their EndedAt; those the tracker never
// had (they began and ended between two polls) get a start and an end,
// and are returned by Transient until the next Apply.
func (t *Tracker) Apply(snap session.Snapshot) []event.Event {
	var evs []event.Event
	t.transient, t.fromLog = t.fromLog, nil
	var sshEnds []session.Session
	seen := make(map[string]bool, len(snap.Sessions))
	for _, s := range snap.Sessions {
		seen[s.ID] = true
	}
	ended := make(map[string]session.Session, len(snap.Ended))
	for _, s := range snap.Ended {
		if !seen[s.ID] {
			ended[s.ID] = s
		}
	}
	ids := make([]string, 0)
	for id, s := range t.sessions {
		if _, ok := ended[id]; ok || (!seen[id] && !snap.BlindFor(s.Kind)) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		s := t.sessions[id]
		delete(t.sessions, id)
		at := snap.Time
		if e, ok := ended[id]; ok {
			// The source's last word on it: bytes, activity, end time.
			s = e
			if e.EndedAt != nil && !e.EndedAt.After(snap.Time) && !e.EndedAt.Before(e.StartedAt) {
				at = *e.EndedAt
			}
			delete(ended, id)
		}
		end := at
		s.EndedAt = &end
		evs = append(evs, event.Event{Time: at, Type: event.SessionEnd, Session: &s})
		if !s.Kind.IsVPN() {
			sshEnds = append(sshEnds, s)
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
	// Connections seen only after they ended, oldest first.
	rest := make([]session.Session, 0, len(ended))
	for _, s := range ended {
		rest = append(rest, s)
	}
	sortSessions(rest)
	for _, s := range rest {
		endAt := snap.Time
		if s.EndedAt != nil && !s.EndedAt.After(snap.Time) {
			endAt = *s.EndedAt
		}
		startAt := s.StartedAt
		if startAt.IsZero() || startAt.After(endAt) {
			startAt = endAt
		}
		s.EndedAt = &endAt
		start, end := s, s
		start.EndedAt = nil
		reason := "seen only after it ended: it began and ended between two polls"
		evs = append(evs,
			event.Event{Time: startAt, Type: event.SessionStart, Session: &start, Reason: reason},
			event.Event{Time: endAt, Type: event.SessionEnd, Session: &end, Reason: reason})
		t.transient = append(t.transient, s)
	}
	blind := snap.Blind()
	if blind != t.blind {
		typ, reason := event.Sighted, "the view of sessions is complete again"
		if blind {
			typ, reason = event.Blind, blindReason(snap)
		}
		evs = append(evs, event.Event{Time: snap.Time, Type: typ, Reason: reason})
		t.blind = blind
	}
	t.matchLogins(snap.Time, sshEnds)
	return evs
}

// Transient returns the sessions seen only after they ended, by the last
// Apply or in sshd's log (Login) before it: they keep the idle policy's
// open period busy.
func (t *Tracker) Transient() []session.Session { return t.transient }

// Sessions returns the current sessions, oldest first.
func (t *Tracker) Sessions() []session.Session {
	out := make([]session.Session, 0, len(t.sessions))
	for _, s := range t.sessions {
		out = append(out, s)
	}
	sortSessions(out)
	return out
}

func sortSessions(out []session.Session) {
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].ID < out[j].ID
	})
}

func blindReason(snap session.Snapshot) string {
	for _, w := range snap.Warnings {
		if w.Blind {
			return w.Message
		}
	}
	return "the view of sessions is incomplete"
}
