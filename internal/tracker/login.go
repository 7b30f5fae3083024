package tracker

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

// Login is an authenticated SSH connection (or its end) read from sshd's
// log.
type Login struct {
	Time time.Time
	User string
	Addr string
	Port int
	// End: the connection ended (else it began).
	End bool
}

// LoginGrace is how far apart a log login and a scanned session without
// an address (scans without root) may start and still be the same
// connection.
const LoginGrace = 2 * time.Second

// Lifetimes of what the log reconciliation remembers.
const (
	// endedMemory: a scanned session that ended is remembered this long,
	// so a login line read after the end still matches it.
	endedMemory = time.Minute
	// loginMemory: a login whose end never shows in the log (a killed
	// client may leave none) is forgotten after this long; scans cover it.
	loginMemory = time.Hour
)

// loginState is a log login not yet ended.
type loginState struct {
	login Login
	seen  bool // a scan saw it as a session
}

// loginKey names a connection by its client address, so that the log's
// "::ffff:192.0.2.1" and the scan's "192.0.2.1" agree.
func loginKey(addr string, port int) string {
	if a, err := netip.ParseAddr(addr); err == nil {
		addr = a.Unmap().String()
	}
	return fmt.Sprintf("%s %d", addr, port)
}

// Login takes a login or logout from sshd's log. Scans report the
// sessions they see; Login adds those no scan saw because they ended
// first: at such a connection's end it returns its session_start and
// session_end, and the session is Transient after the next Apply (it
// keeps the idle policy's open period busy).
func (t *Tracker) Login(l Login) []event.Event {
	key := loginKey(l.Addr, l.Port)
	if !l.End {
		t.logins[key] = &loginState{login: l}
		return nil
	}
	st, ok := t.logins[key]
	if !ok {
		return nil // not a login we saw begin: nothing to add
	}
	delete(t.logins, key)
	if _, ended := t.ended[key]; st.seen || ended {
		return nil // the scans saw it; they report its end
	}
	s := session.Session{
		ID: fmt.Sprintf("ssh-log-%s-%d-%d", l.Addr, l.Port, st.login.Time.UnixNano()), Kind: session.KindSSH,
		User: st.login.User, RemoteAddr: l.Addr, RemotePort: l.Port, StartedAt: st.login.Time,
	}
	t.fromLog = append(t.fromLog, s)
	reason := "seen only in sshd's log: it ended before a scan could see it"
	return []event.Event{
		{Time: st.login.Time, Type: event.SessionStart, Session: &s, Reason: reason},
		{Time: l.Time, Type: event.SessionEnd, Session: &s, Reason: reason},
	}
}

// matchLogins marks the logins that the sessions now tracked are, and
// forgets old logins and ends. ends are the SSH sessions Apply just ended.
func (t *Tracker) matchLogins(now time.Time, ends []session.Session) {
	for _, s := range ends {
		// A short session may end before its login line is read.
		t.ended[loginKey(s.RemoteAddr, s.RemotePort)] = now
	}
	for key, at := range t.ended {
		if now.Sub(at) > endedMemory {
			delete(t.ended, key)
		}
	}
	if len(t.logins) == 0 {
		return
	}
	for _, s := range t.sessions {
		if st, ok := t.logins[loginKey(s.RemoteAddr, s.RemotePort)]; ok {
			st.seen = true
			continue
		}
		if s.RemoteAddr != "" || s.Kind.IsVPN() {
			continue
		}
		// Without root the scan may not know addresses: match by user and
		// time instead.
		for _, st := range t.logins {
			if d := s.StartedAt.Sub(st.login.Time); st.login.User == s.User && d > -LoginGrace && d < LoginGrace {
				st.seen = true
			}
		}
	}
	for key := range t.ended {
		if st, ok := t.logins[key]; ok {
			st.seen = true
		}
	}
	for key, st := range t.logins {
		if now.Sub(st.login.Time) > loginMemory {
			delete(t.logins, key)
		}
	}
}
