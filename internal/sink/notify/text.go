package notify

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/termtext"
)

// Text is m as one sentence for people, e.g.
//
//	alice connected to dev-box (i-0abc) from 198.51.100.7 port 50122 over ssh (tty pts/0)
//	session of alice from 198.51.100.7 port 50122 on dev-box (i-0abc) ended after 2h5m
//	dev-box (i-0abc) will be stopped at 12:11 UTC unless someone connects
//	dev-box (i-0abc) was stopped: stopped i-0abc in eu-west-1 (running -> stopping)
//	new VPN connection by alice from 198.51.100.7 to dev-box (i-0abc) over wireguard wg0
//	new VPN connection by bob (tunnel address 172.31.0.225) to AWS Client VPN endpoint cvpn-endpoint-0abc (seen by dev-box (i-0abc))
//
// User names, host names, VPN names and reasons come from others (a VPN
// client chooses its username, any local user an inhibit reason): control
// characters, bidirectional overrides and invalid UTF-8 in them are shown
// escaped (termtext.Escape), as the text ends up on terminals, in mail
// and in chat. Formats with markup of their own (Slack) escape it on top.
func Text(m Message) string { return termtext.Escape(text(m)) }

func text(m Message) string {
	e, machine, s := m.Event, m.machine(), m.Event.Session
	if s != nil && s.Kind.IsVPN() && (e.Type == event.SessionStart || e.Type == event.SessionEnd) {
		return vpnText(e, machine, s)
	}
	switch e.Type {
	case event.SessionStart:
		if s == nil {
			return withReason("someone connected to "+machine, e.Reason)
		}
		return withReason(fmt.Sprintf("%s connected to %s%s over %s%s", user(s), machine, from(s), kind(s), mode(s)), e.Reason)
	case event.SessionEnd:
		if s == nil {
			return withReason("a session on "+machine+" ended", e.Reason)
		}
		t := fmt.Sprintf("session of %s%s on %s ended", user(s), from(s), machine)
		if !s.StartedAt.IsZero() && !e.Time.Before(s.StartedAt) {
			t += " after " + Duration(e.Time.Sub(s.StartedAt))
		}
		return withReason(t, e.Reason)
	case event.IdleStart:
		t := machine + " is idle"
		if e.StopAt != nil {
			t += " and will be stopped at " + clockTime(*e.StopAt, e.Time) + " unless someone connects"
		}
		return t
	case event.IdleCancel:
		return withReason(machine+" is in use again", e.Reason)
	case event.StopWarning:
		at := "soon"
		if e.StopAt != nil {
			at = "at " + clockTime(*e.StopAt, e.Time)
		}
		return machine + " will be stopped " + at + " unless someone connects"
	case event.Stop:
		if e.Action == "dry-run" {
			return withReason(machine+" would have been stopped (dry run)", e.Reason)
		}
		return withReason(machine+" was stopped", e.Reason)
	case event.StopFailed:
		return withReason("stopping "+machine+" failed", e.Reason)
	case event.Blind:
		return withReason("connwatch cannot tell who is connected to "+machine+" and will not stop it until it can", e.Reason)
	case event.Sighted:
		return "connwatch can tell who is connected to " + machine + " again"
	}
	return withReason(fmt.Sprintf("%s on %s", e.Type, machine), e.Reason)
}

// Subject is a short title for m (at most 100 characters, printable
// ASCII, as SNS and mail subjects want), e.g. "connwatch: alice connected
// to dev-box".
func Subject(m Message) string {
	e, host, s := m.Event, m.Host, m.Event.Session
	if host == "" {
		host = m.machine()
	}
	var t string
	switch e.Type {
	case event.SessionStart:
		t = "someone connected to " + host
		switch {
		case s != nil && s.Kind.IsVPN():
			t = "new VPN connection by " + user(s) + " to " + vpnTarget(s, host)
		case s != nil:
			t = user(s) + " connected to " + host
		}
	case event.SessionEnd:
		t = "session ended on " + host
		switch {
		case s != nil && s.Kind.IsVPN():
			t = user(s) + " left the VPN " + vpnTarget(s, host)
		case s != nil:
			t = user(s) + " disconnected from " + host
		}
	case event.IdleStart:
		t = host + " is idle"
	case event.IdleCancel:
		t = host + " is in use again"
	case event.StopWarning:
		t = host + " will be stopped soon"
		if e.StopAt != nil {
			t = host + " will be stopped at " + clockTime(*e.StopAt, e.Time)
		}
	case event.Stop:
		t = host + " was stopped"
	case event.StopFailed:
		t = "stopping " + host + " failed"
	case event.Blind:
		t = "cannot tell who is connected to " + host
	case event.Sighted:
		t = "can tell who is connected to " + host + " again"
	default:
		t = string(e.Type) + " on " + host
	}
	return asciiLine("connwatch: "+t, 100)
}

// machine names the machine: "dev-box (i-0abc)", "dev-box", "i-0abc".
func (m Message) machine() string {
	switch {
	case m.Host != "" && m.InstanceID != "":
		return m.Host + " (" + m.InstanceID + ")"
	case m.Host != "":
		return m.Host
	case m.InstanceID != "":
		return m.InstanceID
	}
	return "this machine"
}

// vpnText describes a VPN connection's start or end.
func vpnText(e event.Event, machine string, s *session.Session) string {
	var to string
	server := ""
	if s.VPN != nil {
		server = s.VPN.Server
	}
	if s.Kind == session.KindAWSClientVPN {
		to = "AWS Client VPN endpoint " + cmpOr(server, "(unknown)") + " (seen by " + machine + ")"
	} else {
		to = machine + " over " + string(s.Kind)
		if server != "" {
			to += " " + server
		}
	}
	origin := from(s)
	if origin == "" && s.VPN != nil && s.VPN.VirtualAddr != "" {
		// Client VPN gives only the address it assigned the client.
		origin = " (tunnel address " + s.VPN.VirtualAddr + ")"
	}
	if e.Type == event.SessionStart {
		return withReason(fmt.Sprintf("new VPN connection by %s%s to %s", user(s), origin, to), e.Reason)
	}
	t := fmt.Sprintf("VPN connection of %s%s to %s ended", user(s), origin, to)
	if !s.StartedAt.IsZero() && !e.Time.Before(s.StartedAt) {
		t += " after " + Duration(e.Time.Sub(s.StartedAt))
	}
	return withReason(t, e.Reason)
}

// vpnTarget names what a VPN client connected to, briefly.
func vpnTarget(s *session.Session, host string) string {
	if s.VPN != nil && s.Kind == session.KindAWSClientVPN && s.VPN.Server != "" {
		return s.VPN.Server
	}
	return host
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func withReason(t, reason string) string {
	if reason == "" {
		return t
	}
	return t + ": " + reason
}

func user(s *session.Session) string {
	if s.User == "" {
		return "someone"
	}
	return s.User
}

func from(s *session.Session) string {
	if s.RemoteAddr == "" {
		return ""
	}
	if s.RemotePort == 0 {
		return " from " + s.RemoteAddr
	}
	return " from " + s.RemoteAddr + " port " + strconv.Itoa(s.RemotePort)
}

func kind(s *session.Session) string {
	if s.Kind == "" {
		return string(session.KindSSH)
	}
	return string(s.Kind)
}

func mode(s *session.Session) string {
	switch s.Mode {
	case session.ModeTTY:
		if s.TTY != "" {
			return " (tty " + s.TTY + ")"
		}
		return " (tty)"
	case session.ModeNoTTY:
		return " (no tty)"
	case session.ModeForward:
		return " (port forwarding only)"
	case session.ModeSFTP:
		return " (sftp)"
	}
	return ""
}

// clockTime is t in UTC as "12:11 UTC", with the date in front when it is
// not the day of now.
func clockTime(t, now time.Time) string {
	t, now = t.UTC(), now.UTC()
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04 UTC")
	}
	return t.Format("2006-01-02 15:04 UTC")
}

// Duration is d for people: "42s", "5m12s", "2h5m".
func Duration(d time.Duration) string {
	d = d.Round(time.Second)
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	switch {
	case h > 0 && m > 0:
		return fmt.Sprintf("%dh%dm", h, m)
	case h > 0:
		return fmt.Sprintf("%dh", h)
	case m > 0 && s > 0:
		return fmt.Sprintf("%dm%ds", m, s)
	case m > 0:
		return fmt.Sprintf("%dm", m)
	}
	return fmt.Sprintf("%ds", s)
}

// asciiLine keeps printable ASCII (other characters become '?') and cuts
// the result to max bytes.
func asciiLine(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() == max {
			break
		}
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
