package notify_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/sink/notify"
)

var (
	t0     = time.Date(2026, 3, 1, 10, 6, 0, 123456789, time.UTC)
	stopAt = time.Date(2026, 3, 1, 12, 11, 0, 0, time.UTC)
	alice  = &session.Session{
		ID: "ssh-4242-1772359560", Kind: session.KindSSH, User: "alice",
		RemoteAddr: "198.51.100.7", RemotePort: 50122, LocalPort: 22,
		TTY: "pts/0", Mode: session.ModeTTY, PID: 4242, StartedAt: t0,
	}
)

func msg(e event.Event) notify.Message { return notify.NewMessage(e, "dev-box", "i-0abc") }

func TestKey(t *testing.T) {
	e := event.Event{Time: t0, Type: event.SessionStart, Session: alice}
	k := notify.Key(e)
	if len(k) != 64 || strings.Trim(k, "0123456789abcdef") != "" {
		t.Fatalf("key %q is not hex SHA-256", k)
	}
	// The same event, however it is represented, has the same key.
	same := e
	same.Time = t0.In(time.FixedZone("CET", 3600))
	s2 := *alice
	same.Session = &s2
	if notify.Key(same) != k {
		t.Error("key depends on the time zone or the session pointer")
	}
	b, _ := json.Marshal(msg(e))
	var back notify.Message
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if notify.Key(back.Event) != k || back.Key != k {
		t.Error("key changes through JSON")
	}
	// Different events have different keys.
	for _, other := range []event.Event{
		{Time: t0, Type: event.SessionEnd, Session: alice},
		{Time: t0.Add(time.Nanosecond), Type: event.SessionStart, Session: alice},
		{Time: t0, Type: event.SessionStart, Session: alice, Reason: "seen only in sshd's log"},
		{Time: t0, Type: event.SessionStart},
	} {
		if notify.Key(other) == k {
			t.Errorf("%+v has the same key", other)
		}
	}
}

func TestMessageJSON(t *testing.T) {
	m := msg(event.Event{Time: t0, Type: event.StopWarning, StopAt: &stopAt, Reason: "idle"})
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	json.Unmarshal(b, &got)
	want := map[string]any{
		"time": "2026-03-01T10:06:00.123456789Z", "type": "stop_warning", "stop_at": "2026-03-01T12:11:00Z",
		"reason": "idle", "host": "dev-box", "instance_id": "i-0abc", "key": m.Key,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("JSON (-want +got):\n%s", diff)
	}
	var back notify.Message
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestText(t *testing.T) {
	end := t0.Add(2*time.Hour + 5*time.Minute + 10*time.Second)
	fwd := *alice
	fwd.Mode, fwd.TTY = session.ModeForward, ""
	wg := session.Session{ID: "wg-1", Kind: session.KindWireGuard, User: "alice", RemoteAddr: "198.51.100.7", RemotePort: 51820, StartedAt: t0,
		VPN: &session.VPN{Server: "wg0", PublicKey: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="}}
	cvpn := session.Session{ID: "cvpn-connection-0a1b", Kind: session.KindAWSClientVPN, User: "bob", StartedAt: t0,
		VPN: &session.VPN{Server: "cvpn-endpoint-0abc", CommonName: "bob.example.com", Username: "bob", VirtualAddr: "172.31.0.225"}}
	for _, tt := range []struct {
		m             notify.Message
		text, subject string
	}{
		{msg(event.Event{Time: t0, Type: event.SessionStart, Session: alice}),
			"alice connected to dev-box (i-0abc) from 198.51.100.7 port 50122 over ssh (tty pts/0)",
			"connwatch: alice connected to dev-box"},
		{msg(event.Event{Time: t0, Type: event.SessionStart, Session: &fwd}),
			"alice connected to dev-box (i-0abc) from 198.51.100.7 port 50122 over ssh (port forwarding only)",
			"connwatch: alice connected to dev-box"},
		{msg(event.Event{Time: end, Type: event.SessionEnd, Session: alice}),
			"session of alice from 198.51.100.7 port 50122 on dev-box (i-0abc) ended after 2h5m",
			"connwatch: alice disconnected from dev-box"},
		{msg(event.Event{Time: t0, Type: event.SessionStart, Session: &wg}),
			"new VPN connection by alice from 198.51.100.7 port 51820 to dev-box (i-0abc) over wireguard wg0",
			"connwatch: new VPN connection by alice to dev-box"},
		{msg(event.Event{Time: t0, Type: event.SessionStart, Session: &cvpn, Reason: "seen only after it ended: it began and ended between two polls"}),
			"new VPN connection by bob (tunnel address 172.31.0.225) to AWS Client VPN endpoint cvpn-endpoint-0abc (seen by dev-box (i-0abc)): seen only after it ended: it began and ended between two polls",
			"connwatch: new VPN connection by bob to cvpn-endpoint-0abc"},
		{msg(event.Event{Time: t0.Add(90 * time.Second), Type: event.SessionEnd, Session: &cvpn}),
			"VPN connection of bob (tunnel address 172.31.0.225) to AWS Client VPN endpoint cvpn-endpoint-0abc (seen by dev-box (i-0abc)) ended after 1m30s",
			"connwatch: bob left the VPN cvpn-endpoint-0abc"},
		{msg(event.Event{Time: t0, Type: event.StopWarning, StopAt: &stopAt, Reason: "idle since …"}),
			"dev-box (i-0abc) will be stopped at 12:11 UTC unless someone connects",
			"connwatch: dev-box will be stopped at 12:11 UTC"},
		{msg(event.Event{Time: t0, Type: event.IdleStart, StopAt: &stopAt}),
			"dev-box (i-0abc) is idle and will be stopped at 12:11 UTC unless someone connects",
			"connwatch: dev-box is idle"},
		{msg(event.Event{Time: t0, Type: event.IdleCancel, Reason: "1 session(s)"}),
			"dev-box (i-0abc) is in use again: 1 session(s)",
			"connwatch: dev-box is in use again"},
		{msg(event.Event{Time: t0, Type: event.Stop, Action: "ec2-stop", Reason: "stopped i-0abc in eu-west-1 (running -> stopping)"}),
			"dev-box (i-0abc) was stopped: stopped i-0abc in eu-west-1 (running -> stopping)",
			"connwatch: dev-box was stopped"},
		{msg(event.Event{Time: t0, Type: event.Stop, Action: "dry-run", Reason: "dry run: would power off this machine"}),
			"dev-box (i-0abc) would have been stopped (dry run): dry run: would power off this machine",
			"connwatch: dev-box was stopped"},
		{msg(event.Event{Time: t0, Type: event.StopFailed, Reason: "UnauthorizedOperation"}),
			"stopping dev-box (i-0abc) failed: UnauthorizedOperation",
			"connwatch: stopping dev-box failed"},
		{msg(event.Event{Time: t0, Type: event.Blind, Reason: "/proc is mounted with hidepid"}),
			"connwatch cannot tell who is connected to dev-box (i-0abc) and will not stop it until it can: /proc is mounted with hidepid",
			"connwatch: cannot tell who is connected to dev-box"},
		{notify.NewMessage(event.Event{Time: t0, Type: event.Sighted}, "", ""),
			"connwatch can tell who is connected to this machine again",
			"connwatch: can tell who is connected to this machine again"},
		{notify.NewMessage(event.Event{Time: t0, Type: event.StopWarning, StopAt: &stopAt}, "", "i-0abc"),
			"i-0abc will be stopped at 12:11 UTC unless someone connects",
			"connwatch: i-0abc will be stopped at 12:11 UTC"},
		{notify.NewMessage(event.Event{Time: t0.Add(-24 * time.Hour), Type: event.StopWarning, StopAt: &stopAt}, "dev-box", ""),
			"dev-box will be stopped at 2026-03-01 12:11 UTC unless someone connects",
			"connwatch: dev-box will be stopped at 2026-03-01 12:11 UTC"},
	} {
		if got := notify.Text(tt.m); got != tt.text {
			t.Errorf("Text(%s):\n got %q\nwant %q", tt.m.Event.Type, got, tt.text)
		}
		if got := notify.Subject(tt.m); got != tt.subject {
			t.Errorf("Subject(%s):\n got %q\nwant %q", tt.m.Event.Type, got, tt.subject)
		}
	}
}

func TestSubjectIsShortASCII(t *testing.T) {
	s := *alice
	s.User = "ålice\n" + strings.Repeat("x", 200)
	got := notify.Subject(msg(event.Event{Time: t0, Type: event.SessionStart, Session: &s}))
	if len(got) != 100 || strings.ContainsAny(got, "\nå") {
		t.Errorf("subject %q", got)
	}
}

func TestDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		42 * time.Second:                 "42s",
		5*time.Minute + 12*time.Second:   "5m12s",
		5 * time.Minute:                  "5m",
		2*time.Hour + 5*time.Minute + 29: "2h5m",
		3 * time.Hour:                    "3h",
		0:                                "0s",
	} {
		if got := notify.Duration(d); got != want {
			t.Errorf("Duration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestParseFilter(t *testing.T) {
	f, err := notify.ParseFilter(" session_start, session_end,stop_warning,stop,stop ")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(notify.Filter{event.SessionStart, event.SessionEnd, event.StopWarning, event.Stop}, f); diff != "" {
		t.Errorf("filter (-want +got):\n%s", diff)
	}
	if !f.Match(event.Stop) || f.Match(event.IdleStart) {
		t.Error("Match")
	}
	if f.String() != "session_start,session_end,stop_warning,stop" {
		t.Errorf("String %q", f)
	}
	all, err := notify.ParseFilter("")
	if err != nil || !all.Match(event.Blind) {
		t.Errorf("empty filter: %v %v", all, err)
	}

	_, err = notify.ParseFilter("session_start,sesion_end,Stop")
	if !errors.Is(err, notify.ErrUnknownEventType) {
		t.Fatalf("error %v", err)
	}
	for _, want := range []string{`"sesion_end"`, `"Stop"`, "valid: session_start, session_end"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	var tf notify.Filter
	if err := tf.UnmarshalText([]byte("stop")); err != nil || len(tf) != 1 {
		t.Errorf("UnmarshalText: %v %v", tf, err)
	}
}

type queue struct {
	keys []string
	err  error
}

func (q *queue) Enqueue(key string, _ time.Time, body any) error {
	if q.err != nil {
		return q.err
	}
	q.keys = append(q.keys, key+" "+string(body.(notify.Message).Event.Type))
	return nil
}

func TestPublisherRoutes(t *testing.T) {
	all, stops, broken := &queue{}, &queue{}, &queue{err: errors.New("disk full")}
	p := &notify.Publisher{Host: "dev-box", Routes: []notify.Route{
		{Name: "all", Queue: all},
		{Name: "stops", Queue: stops, Filter: notify.Filter{event.Stop}},
		{Name: "broken", Queue: broken, Filter: notify.Filter{event.Stop}},
	}}
	start := event.Event{Time: t0, Type: event.SessionStart, Session: alice}
	stop := event.Event{Time: t0, Type: event.Stop}
	if err := p.Write(start); err != nil {
		t.Errorf("Write: %v", err)
	}
	err := p.Write(stop)
	if err == nil || !strings.Contains(err.Error(), "broken") || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Write to a broken queue: %v", err)
	}
	if diff := cmp.Diff([]string{notify.Key(start) + " session_start", notify.Key(stop) + " stop"}, all.keys); diff != "" {
		t.Errorf("all (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{notify.Key(stop) + " stop"}, stops.keys); diff != "" {
		t.Errorf("stops (-want +got):\n%s", diff)
	}
}
