package report_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/report"
	"github.com/connwatch/connwatch/internal/session"
)

// Hostile strings as they reach status: each would act on the terminal
// or the table if printed as it is.
var hostile = []struct{ name, s, shown string }{
	{"ESC c resets the terminal", "\x1bc", `\x1bc`},
	{"CSI clears the screen", "\x1b[2J", `\x1b[2J`},
	{"carriage return hides the start", "mallory\rroot   ", `mallory\rroot`},
	{"newline fakes a row", "x\nroot  203.0.113.9:22", `x\nroot`},
	{"tab shifts columns", "a\tb", `a\tb`},
	{"C1 CSI", "\u009b2J", `\u009b2J`},
	{"right-to-left override", "\u202eevil", `\u202eevil`},
	{"invalid UTF-8", "bad\xff", `bad\xff`},
}

// controlFree fails when out holds a byte or rune a terminal acts on,
// other than the newlines that end rows.
func controlFree(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x202e || r == '\ufffd' {
			t.Errorf("%s: output holds %U:\n%q", what, r, out)
			return
		}
	}
}

func TestTableEscapesWhatOthersControl(t *testing.T) {
	now := time.Date(2026, 11, 21, 11, 17, 9, 0, time.UTC)
	for _, h := range hostile {
		snap := session.Snapshot{
			Time: now, Complete: false,
			Sessions: []session.Session{
				{ID: "ssh-1", Kind: session.KindSSH, User: h.s, RemoteAddr: "198.51.100.7", RemotePort: 50122, TTY: "pts/" + h.s, Mode: session.ModeTTY, PID: 10, StartedAt: now},
				{ID: "ovpn-1", Kind: session.KindOpenVPN, User: h.s, RemoteAddr: h.s, VPN: &session.VPN{Server: h.s}, StartedAt: now},
			},
			PendingAuth: []session.PendingAuth{{Kind: session.KindSSH, User: h.s, RemoteAddr: "203.0.113.66", RemotePort: 34682, PID: 11, Since: now}},
			Warnings:    []session.Warning{{Code: "poll_failed", Source: "openvpn", Message: "openvpn office: server said " + h.s, Blind: true}},
		}
		var b bytes.Buffer
		if err := report.Table(&b, snap, now, time.UTC); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		controlFree(t, h.name, out)
		if got := strings.Count(out, h.shown); got < 6 {
			t.Errorf("%s: %q shown %d times, want 6 (users, tty, address, server, pending user, warning):\n%s", h.name, h.shown, got, out)
		}
		// Rows stay rows: the header, two sessions, a blank line, the
		// pending header and row, the warning and the incomplete note.
		if n := strings.Count(out, "\n"); n != 8 {
			t.Errorf("%s: %d lines, want 8:\n%s", h.name, n, out)
		}
	}
}

func TestAgentTableEscapesHolds(t *testing.T) {
	now := time.Date(2026, 11, 21, 11, 17, 9, 0, time.UTC)
	for _, h := range hostile {
		v := &agent.View{PID: 812, Action: "dry-run", Policy: policy.Status{
			Window: "15 of 15 periods of 1m0s",
			Holds:  []policy.Hold{{Kind: "inhibit", Name: "backup.sh " + h.s, Reason: "nightly backup " + h.s}},
		}}
		var b bytes.Buffer
		if err := report.AgentTable(&b, v, now, time.UTC); err != nil {
			t.Fatal(err)
		}
		controlFree(t, h.name, b.String())
		if !strings.Contains(b.String(), "nightly backup "+h.shown) {
			t.Errorf("%s: reason not shown escaped:\n%s", h.name, b.String())
		}
	}
}

// The start hold shows like every hold, with when it ends; the JSON
// carries that end as a time.
func TestAgentStartHold(t *testing.T) {
	now := time.Date(2026, 12, 5, 22, 1, 0, 0, time.UTC)
	until := time.Date(2026, 12, 5, 22, 10, 0, 0, time.UTC)
	v := &agent.View{PID: 812, Action: "ec2-stop", Policy: policy.Status{
		Window: "15 of 15 periods of 1m0s",
		Holds: []policy.Hold{{Kind: policy.HoldStart, Name: hold.StartHoldTag,
			Reason: "until 2026-12-05T22:10:00Z (instance tag connwatch:hold-until)", Until: &until}},
	}}
	var b bytes.Buffer
	if err := report.AgentTable(&b, v, now, time.UTC); err != nil {
		t.Fatal(err)
	}
	want := "  busy: 0 counted session(s), 1 hold(s)\n" +
		"  held by start-hold \"connwatch:hold-until\" until 2026-12-05T22:10:00Z (instance tag connwatch:hold-until)\n"
	if !strings.Contains(b.String(), want) {
		t.Errorf("table:\n%s\nwant it to contain\n%s", b.String(), want)
	}
	b.Reset()
	if err := report.JSON(&b, report.Status{Agent: v}); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Agent struct {
			Policy struct {
				Holds []struct {
					Kind  string    `json:"kind"`
					Until time.Time `json:"until"`
				} `json:"holds"`
			} `json:"policy"`
		} `json:"agent"`
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if hs := back.Agent.Policy.Holds; len(hs) != 1 || hs[0].Kind != "start-hold" || !hs[0].Until.Equal(until) {
		t.Errorf("JSON holds %+v:\n%s", hs, b.String())
	}
}

func TestLocksEscapesReasonsAndCommands(t *testing.T) {
	created := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	for _, h := range hostile {
		var b bytes.Buffer
		locks := []hold.Lock{{ID: "a1b2c3" + h.s, Reason: "deploy " + h.s, Command: "/usr/local/bin/job " + h.s, PID: 4242, Created: created}}
		if err := report.Locks(&b, locks, 1, time.UTC); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		controlFree(t, h.name, out)
		if strings.Count(out, h.shown) != 3 || strings.Count(out, "\n") != 3 {
			t.Errorf("%s: want the id, reason and command escaped on one row:\n%s", h.name, out)
		}
	}
}

// TestJSONIsExact: programs get the strings as they are.
func TestJSONIsExact(t *testing.T) {
	now := time.Date(2026, 11, 21, 11, 17, 9, 0, time.UTC)
	for _, h := range hostile {
		snap := session.Snapshot{Time: now, Complete: true, Sessions: []session.Session{{ID: "ssh-1", User: h.s, StartedAt: now}}}
		var b bytes.Buffer
		if err := report.JSON(&b, report.Status{Snapshot: snap}); err != nil {
			t.Fatal(err)
		}
		var back struct {
			Sessions []struct{ User string } `json:"sessions"`
		}
		if err := json.Unmarshal(b.Bytes(), &back); err != nil {
			t.Fatal(err)
		}
		// JSON cannot carry invalid UTF-8: encoding/json writes U+FFFD.
		want := strings.ToValidUTF8(h.s, "\ufffd")
		if len(back.Sessions) != 1 || back.Sessions[0].User != want {
			t.Errorf("%s: JSON user %+v, want %q", h.name, back.Sessions, want)
		}
	}
}
