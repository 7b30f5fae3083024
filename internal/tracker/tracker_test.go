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
	if n := len(tr.Sessions()); n != 2 || !tr.Blind() {
		t.Errorf("sessions %d blind %v", n, tr.Blind())
	}
	if got := summary(tr.Apply(snap(2*time.Second, "b"))); got != "session_end:a sighted: " {
		t.Errorf("sighted: %q", got)
	}
}
