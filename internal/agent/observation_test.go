package agent

import (
	"testing"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

// TestObservationCount: the CloudWatch main metric (what the cloud-side
// stop alarm watches) counts every kind that keeps the machine up, so a
// VPN user alone keeps it above 0; a blind kind gives no value.
func TestObservationCount(t *testing.T) {
	keepAwake := []session.Kind{session.KindSSH, session.KindWireGuard}
	wg := session.Session{ID: "wg-1", Kind: session.KindWireGuard, User: "alice"}
	short := session.Session{ID: "cvpn-1", Kind: session.KindAWSClientVPN, User: "bob"}
	legacy := session.Session{ID: "ssh-1", User: "carol"} // no kind: ssh
	ob := Observation{Sessions: []session.Session{wg}, Events: []event.Event{{Type: event.SessionStart, Session: &short}}}
	if n, ok := ob.Count(keepAwake); n != 1 || !ok {
		t.Errorf("keep-awake kinds %v: %d %v, want the WireGuard user", keepAwake, n, ok)
	}
	if n, ok := ob.Count([]session.Kind{session.KindSSH}); n != 0 || !ok {
		t.Errorf("ssh only: %d %v", n, ok)
	}
	if n, _ := ob.Count([]session.Kind{session.KindAWSClientVPN}); n != 1 {
		t.Errorf("a Client VPN connection seen only after it ended counts in its period: %d", n)
	}
	ob.Sessions = append(ob.Sessions, legacy)
	ob.Events = append(ob.Events, event.Event{Type: event.SessionStart, Session: &legacy})
	if n, _ := ob.Count([]session.Kind{session.KindSSH}); n != 1 {
		t.Errorf("a session without a kind is ssh, counted once: %d", n)
	}
	ob.Snapshot.Warn(session.Warning{Code: PollWarning, Kind: session.KindWireGuard, Blind: true})
	if _, ok := ob.Count(keepAwake); ok {
		t.Error("a value while WireGuard is blind")
	}
	if _, ok := ob.Count([]session.Kind{session.KindSSH}); !ok {
		t.Error("SSH is not blind when only WireGuard is")
	}
}
