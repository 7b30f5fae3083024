package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/sink/notify"
)

// Names others choose: an OpenVPN client its username, a certificate its
// CN, any local user an inhibit reason (which reaches idle_cancel).
var (
	hostileSSH = &session.Session{ID: "ssh-1", Kind: session.KindSSH, User: "<!channel>\x1bc", RemoteAddr: "198.51.100.7", RemotePort: 50122,
		TTY: "pts/0", Mode: session.ModeTTY, StartedAt: t0}
	hostileVPN = &session.Session{ID: "ovpn-1", Kind: session.KindOpenVPN, User: "<@U0123ABC> & <http://evil.example|click here> @everyone\r\n",
		RemoteAddr: "203.0.113.9", RemotePort: 1194, StartedAt: t0, VPN: &session.VPN{Server: "office\u202e", Username: "<@U0123ABC>"}}
	hostileEvents = []event.Event{
		{Time: t0, Type: event.SessionStart, Session: hostileSSH},
		{Time: t0, Type: event.SessionStart, Session: hostileVPN},
		{Time: t0, Type: event.IdleCancel, Reason: `held by inhibit "job": <!here> @here @channel, @All. (not @allison)` + "\x1b]0;pwned\a"},
	}
)

// noControls fails when s holds a character a terminal acts on.
func noControls(t *testing.T, what, s string) {
	t.Helper()
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x202e {
			t.Errorf("%s holds %U: %q", what, r, s)
			return
		}
	}
}

func TestTextEscapesControls(t *testing.T) {
	want := []string{
		`<!channel>\x1bc connected to dev-box (i-0abc) from 198.51.100.7 port 50122 over ssh (tty pts/0)`,
		`new VPN connection by <@U0123ABC> & <http://evil.example|click here> @everyone\r\n from 203.0.113.9 port 1194 to dev-box (i-0abc) over openvpn office\u202e`,
		`dev-box (i-0abc) is in use again: held by inhibit "job": <!here> @here @channel, @All. (not @allison)\x1b]0;pwned\a`,
	}
	for i, e := range hostileEvents {
		got := notify.Text(msg(e))
		noControls(t, "Text", got)
		if got != want[i] {
			t.Errorf("Text(%s):\n got %q\nwant %q", e.Type, got, want[i])
		}
	}
}

// TestSlackWebhookEscapesMarkup posts to a Slack-style receiver on
// loopback: what others chose arrives as text, never as a mention, a
// link or a control character; the plain webhook gets the JSON exactly.
func TestSlackWebhookEscapesMarkup(t *testing.T) {
	h := newHook(t, nil)
	slack, err := notify.NewWebhook(notify.WebhookOptions{URL: h.URL + "/services/T0/B0/x", Slack: true})
	if err != nil {
		t.Fatal(err)
	}
	var recs []outbox.Record
	for i, e := range hostileEvents {
		recs = append(recs, record(t, uint64(i+1), e))
	}
	if n, err := slack.Deliver(context.Background(), recs); n != len(recs) || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	want := []string{
		`&lt;!channel&gt;\x1bc connected to dev-box (i-0abc) from 198.51.100.7 port 50122 over ssh (tty pts/0)`,
		`new VPN connection by &lt;@U0123ABC&gt; &amp; &lt;http://evil.example|click here&gt; @` + "\u200b" + `everyone\r\n from 203.0.113.9 port 1194 to dev-box (i-0abc) over openvpn office\u202e`,
		`dev-box (i-0abc) is in use again: held by inhibit "job": &lt;!here&gt; @` + "\u200b" + `here @` + "\u200b" + `channel, @` + "\u200b" + `All. (not @allison)\x1b]0;pwned\a`,
	}
	reqs := h.accepted()
	if len(reqs) != len(want) {
		t.Fatalf("%d requests, want %d", len(reqs), len(want))
	}
	for i, r := range reqs {
		var body map[string]string
		if err := json.Unmarshal(r.body, &body); err != nil || len(body) != 1 {
			t.Fatalf("body %s: %v", r.body, err)
		}
		got := body["text"]
		noControls(t, "Slack text", got)
		if strings.ContainsAny(got, "<>") {
			t.Errorf("Slack text keeps markup: %q", got)
		}
		if got != want[i] {
			t.Errorf("Slack text %d:\n got %q\nwant %q", i, got, want[i])
		}
	}

	// The plain webhook is JSON for programs: exact.
	plain, _ := notify.NewWebhook(notify.WebhookOptions{URL: h.URL})
	if n, err := plain.Deliver(context.Background(), recs[:2]); n != 2 || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	reqs = h.accepted()
	for i, r := range reqs[len(reqs)-2:] {
		var m notify.Message
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		if want := hostileEvents[i].Session.User; m.Event.Session == nil || m.Event.Session.User != want {
			t.Errorf("JSON webhook user %+v, want %q exactly", m.Event.Session, want)
		}
	}
}

// TestCommandHookTextEscaped: CONNWATCH_TEXT is for people (logger, a
// terminal), CONNWATCH_EVENT for programs.
func TestCommandHookTextEscaped(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	c, err := notify.NewCommand(notify.CommandOptions{Command: `printf '%s\0%s' "$CONNWATCH_TEXT" "$CONNWATCH_EVENT" > "` + out + `"`})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.Deliver(context.Background(), []outbox.Record{record(t, 1, hostileEvents[0])}); n != 1 || err != nil {
		t.Fatalf("Deliver: %d, %v", n, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	text, js, _ := bytes.Cut(b, []byte{0})
	noControls(t, "CONNWATCH_TEXT", string(text))
	var m notify.Message
	if err := json.Unmarshal(js, &m); err != nil || m.Event.Session.User != hostileSSH.User {
		t.Errorf("CONNWATCH_EVENT %s (%v), want the user exactly", js, err)
	}
}

func TestSNSMessageTextEscaped(t *testing.T) {
	s, err := notify.NewSNS(context.Background(), notify.SNSOptions{TopicARN: "arn:aws:sns:eu-west-1:123456789012:logins"})
	if err != nil {
		t.Fatal(err)
	}
	in, err := s.Format(msg(hostileEvents[1]))
	if err != nil {
		t.Fatal(err)
	}
	text, js, _ := strings.Cut(*in.Message, "\n\n")
	noControls(t, "SNS text", text)
	noControls(t, "SNS subject", *in.Subject)
	var m notify.Message
	if err := json.Unmarshal([]byte(js), &m); err != nil || m.Event.Session.User != hostileVPN.User {
		t.Errorf("SNS JSON %s (%v), want the user exactly", js, err)
	}
}
