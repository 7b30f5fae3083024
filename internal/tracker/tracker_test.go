package tracker

import (
	"fmt"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func snap(at time.Duration, ids ...string) session.Snapshot {
	s := session.Snapshot{Time: t0.Add(at), Complete: true}
	for _, id := range ids {
		s.Sessions = append(s.Sessions, session.Session{ID: id, User: "u" + id, StartedAt: t0.Add(at - 100*time.Millisecond)})
	}
	return s
}

func summary(evs []event.Event) string {
	out := ""
	for _, e := range evs {
		id := ""
		if e.Session != nil {
			id = e.Session.ID
		}
		out += fmt.Sprintf("%s:%s ", e.Type, id)
	}
	return out
}

func TestApply(t *testing.T) {
	tr := New()
	steps := []struct {
		snap session.Snapshot
		want string
	}{
		{snap(0), ""},
		{snap(time.Second, "a"), "session_start:a "},
		{snap(2*time.Second, "a", "b"), "session_start:b "},
		{snap(3*time.Second, "b", "c"), "session_end:a session_start:c "},
		{snap(4 * time.Second), "session_end:b session_end:c "},
	}
	for i, st := range steps {
		if got := summary(tr.Apply(st.snap)); got != st.want {
			t.Errorf("step %d: %q, want %q", i, got, st.want)
		}
	}
}

func TestStartTimeIsSessionStart(t *testing.T) {
	tr := New()
	evs := tr.Apply(snap(time.Second, "a"))
	if !evs[0].Time.Equal(t0.Add(900 * time.Millisecond)) {
		t.Errorf("start event at %v", evs[0].Time)
	}
}

func TestBlindKeepsSessions(t *testing.T) {
	tr := New()
	tr.Apply(snap(0, "a"))
	blind := snap(time.Second, "b")
	blind.Warn(session.Warning{Code: session.WarnProcHidden, Message: "hidepid=2", Blind: true})
	if got := summary(tr.Apply(blind)); got != "session_start:b blind: " {
		t.Errorf("blind: %q", got)
	}
	if n := len(tr.Sessions()); n != 2 {
		t.Errorf("sessions %d, want a kept and b", n)
	}
	if got := summary(tr.Apply(snap(2*time.Second, "b"))); got != "session_end:a sighted: " {
		t.Errorf("sighted: %q", got)
	}
}

func vpn(id string, kind session.Kind, start time.Duration) session.Session {
	return session.Session{ID: id, Kind: kind, User: "alice", StartedAt: t0.Add(start)}
}

func TestBlindForOneKindKeepsOnlyThatKind(t *testing.T) {
	tr := New()
	first := snap(0, "a")
	first.Sessions = append(first.Sessions, vpn("w", session.KindWireGuard, 0))
	tr.Apply(first)
	// The WireGuard source could not be polled; ssh session a is gone.
	next := snap(time.Second)
	next.Warn(session.Warning{Code: "poll_failed", Kind: session.KindWireGuard, Message: "no socket", Blind: true})
	if got := summary(tr.Apply(next)); got != "session_end:a blind: " {
		t.Errorf("got %q", got)
	}
	if s := tr.Sessions(); len(s) != 1 || s[0].ID != "w" {
		t.Errorf("kept %v, want only the wireguard session", s)
	}
	// Seen again and gone: it ends.
	if got := summary(tr.Apply(snap(2 * time.Second))); got != "session_end:w sighted: " {
		t.Errorf("got %q", got)
	}
}

func TestEndedUsesTheSourcesEndTime(t *testing.T) {
	tr := New()
	s := snap(time.Minute)
	s.Sessions = []session.Session{vpn("c1", session.KindAWSClientVPN, 10*time.Second)}
	tr.Apply(s)
	end := t0.Add(90 * time.Second)
	done := vpn("c1", session.KindAWSClientVPN, 10*time.Second)
	done.EndedAt = &end
	done.VPN = &session.VPN{BytesIn: 42}
	next := snap(2 * time.Minute)
	next.Ended = []session.Session{done}
	evs := tr.Apply(next)
	if got := summary(evs); got != "session_end:c1 " {
		t.Fatalf("got %q", got)
	}
	if !evs[0].Time.Equal(end) || evs[0].Session.EndedAt == nil || !evs[0].Session.EndedAt.Equal(end) || evs[0].Session.VPN.BytesIn != 42 {
		t.Errorf("end event %+v, want at %v with the source's last details", evs[0], end)
	}
	if len(tr.Transient()) != 0 {
		t.Errorf("a tracked session is not transient: %v", tr.Transient())
	}
}

func TestEndedNeverSeenIsTransient(t *testing.T) {
	tr := New()
	tr.Apply(snap(0))
	end := t0.Add(30 * time.Second)
	short := vpn("c2", session.KindAWSClientVPN, 20*time.Second)
	short.EndedAt = &end
	next := snap(time.Minute)
	next.Ended = []session.Session{short}
	evs := tr.Apply(next)
	if got := summary(evs); got != "session_start:c2 session_end:c2 " {
		t.Fatalf("got %q", got)
	}
	if !evs[0].Time.Equal(t0.Add(20*time.Second)) || !evs[1].Time.Equal(end) {
		t.Errorf("times %v %v", evs[0].Time, evs[1].Time)
	}
	if evs[0].Session.EndedAt != nil || evs[1].Session.EndedAt == nil {
		t.Errorf("start must not carry an end time, end must")
	}
	if tr := tr.Transient(); len(tr) != 1 || tr[0].ID != "c2" {
		t.Errorf("transient %v", tr)
	}
	if len(tr.Sessions()) != 0 {
		t.Errorf("a transient session is not current: %v", tr.Sessions())
	}
	// The next Apply forgets it.
	tr.Apply(snap(2 * time.Minute))
	if len(tr.Transient()) != 0 {
		t.Errorf("transient kept: %v", tr.Transient())
	}
}
