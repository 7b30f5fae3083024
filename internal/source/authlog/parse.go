package authlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxLineBytes bounds a line. sshd's messages are at most 1 KiB
// (MSGBUFSIZ); a journald JSON entry with the fields journalctl prints
// stays well below this.
const MaxLineBytes = 64 << 10

// ParseLine parses one line of an sshd log in any of the shapes described
// in the package comment. It reports false for lines that are not sshd's
// (another syslog identifier) and for sshd lines it has no kind for
// ("Server listening ...", "Received disconnect ...", "User child is on
// pid ...").
//
// now stands in for the time of lines that carry none (sshd -E), and
// gives the year and the location of classic syslog stamps, which have
// neither: a stamp more than a day after now is taken to be from the year
// before. Journald's microsecond stamps are returned in now's location.
// The trailing "\n" or "\r\n" (sshd -E ends lines with "\r\n") is removed.
func ParseLine(line string, now time.Time) (Event, bool) {
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return Event{}, false
	}
	if line[0] == '{' {
		ev, _, ok := parseJournalJSON(line, now)
		return ev, ok
	}
	if t, rest, ok := syslogStamp(line, now); ok {
		ident, pid, msg, ok := syslogHeader(rest)
		if !ok || !isSSHDIdent(ident) {
			return Event{}, false
		}
		ev, ok := finish(msg, line, t, pid)
		ev.Origin = OriginSyslog
		return ev, ok
	}
	// sshd -E: the bare message (OpenSSH 9.2 writes no prefix). A
	// "progname: " prefix, which log.c can put on stderr lines, is
	// accepted in case other versions or modes write one.
	msg := line
	for _, p := range []string{"sshd: ", "sshd-session: ", "sshd-auth: "} {
		if m, ok := strings.CutPrefix(msg, p); ok {
			msg = m
			break
		}
	}
	ev, ok := finish(msg, line, now, 0)
	ev.Origin = OriginFile
	return ev, ok
}

// ParseAll parses every line of r with ParseLine and returns the events.
func ParseAll(r io.Reader, now time.Time) ([]Event, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), MaxLineBytes)
	var out []Event
	for sc.Scan() {
		if ev, ok := ParseLine(sc.Text(), now); ok {
			out = append(out, ev)
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read sshd log: %w", err)
	}
	return out, nil
}

func finish(msg, raw string, t time.Time, pid int) (Event, bool) {
	ev, ok := parseMessage(msg)
	if !ok {
		return Event{}, false
	}
	ev.Time, ev.PID, ev.Raw = t, pid, raw
	return ev, true
}

// isSSHDIdent tells whether a syslog identifier is one of sshd's: sshd
// up to OpenSSH 9.7; sshd-session (and sshd-auth, whose lines the monitor
// relays) from 9.8.
func isSSHDIdent(s string) bool {
	return s == "sshd" || s == "sshd-session" || s == "sshd-auth"
}

// Layouts of the stamps that start syslog lines: RFC 3339 as rsyslog
// writes it, and as journalctl -o short-iso(-precise) writes it (no colon
// in the offset).
const (
	rfc3339Colon   = "2006-01-02T15:04:05.999999999Z07:00"
	rfc3339NoColon = "2006-01-02T15:04:05.999999999Z0700"
)

// syslogStamp parses the stamp a syslog line starts with and returns the
// rest of the line after the following space.
func syslogStamp(line string, now time.Time) (time.Time, string, bool) {
	// RFC 3339: "2026-11-21T23:45:09.123456+00:00 host sshd[1]: ..."
	if len(line) > 20 && line[4] == '-' && line[7] == '-' && line[10] == 'T' {
		stamp, rest, ok := strings.Cut(line, " ")
		if !ok {
			return time.Time{}, "", false
		}
		for _, layout := range []string{rfc3339Colon, rfc3339NoColon} {
			if t, err := time.Parse(layout, stamp); err == nil {
				return t, rest, true
			}
		}
		return time.Time{}, "", false
	}
	// Classic: "Nov 21 23:45:09 host sshd[1]: ...", day padded with a
	// space ("Nov  1").
	if len(line) > len(time.Stamp) && line[3] == ' ' && line[len(time.Stamp)] == ' ' {
		st, err := time.Parse(time.Stamp, line[:len(time.Stamp)])
		if err != nil {
			return time.Time{}, "", false
		}
		t := time.Date(now.Year(), st.Month(), st.Day(), st.Hour(), st.Minute(), st.Second(), 0, now.Location())
		if t.After(now.Add(24 * time.Hour)) {
			t = t.AddDate(-1, 0, 0)
		}
		return t, line[len(time.Stamp)+1:], true
	}
	return time.Time{}, "", false
}

// syslogHeader splits "host tag[pid]: message" (the host may be absent).
func syslogHeader(rest string) (ident string, pid int, msg string, ok bool) {
	first, after, ok := strings.Cut(rest, " ")
	if !ok {
		return "", 0, "", false
	}
	tag := first
	if !strings.HasSuffix(first, ":") { // first is the host
		tag, msg, ok = strings.Cut(after, " ")
		if !ok || !strings.HasSuffix(tag, ":") {
			return "", 0, "", false
		}
	} else {
		msg = after
	}
	tag = strings.TrimSuffix(tag, ":")
	ident = tag
	if i := strings.IndexByte(tag, '['); i > 0 && strings.HasSuffix(tag, "]") {
		ident = tag[:i]
		pid, _ = strconv.Atoi(tag[i+1 : len(tag)-1])
	}
	return ident, pid, msg, true
}

// journalEntry holds the fields of a journalctl -o json line that matter.
// Values are strings, arrays of byte values (non-UTF-8 data), arrays of
// either (a field given more than once) or null (too large).
type journalEntry struct {
	Message        json.RawMessage `json:"MESSAGE"`
	Ident          json.RawMessage `json:"SYSLOG_IDENTIFIER"`
	PID            json.RawMessage `json:"_PID"`
	SyslogPID      json.RawMessage `json:"SYSLOG_PID"`
	Realtime       json.RawMessage `json:"__REALTIME_TIMESTAMP"`
	SourceRealtime json.RawMessage `json:"_SOURCE_REALTIME_TIMESTAMP"`
	Cursor         json.RawMessage `json:"__CURSOR"`
	// Trusted fields: journald sets them from the sender's credentials
	// and /proc, whatever the sender writes.
	UID  json.RawMessage `json:"_UID"`
	Exe  json.RawMessage `json:"_EXE"`
	Comm json.RawMessage `json:"_COMM"`
	Unit json.RawMessage `json:"_SYSTEMD_UNIT"`
}

// fromRootSSHD tells whether journald vouches that a root sshd sent the
// entry: _UID 0, and _EXE or _COMM an sshd program or _SYSTEMD_UNIT
// sshd's unit. When the sender exited before journald looked, _EXE and
// _COMM are missing; root's word is taken then. The syslog identifier
// and pid are the sender's own claims: `logger -t sshd --id=PID` writes
// any.
func (e journalEntry) fromRootSSHD() bool {
	if journalValue(e.UID) != "0" {
		return false
	}
	exe, comm, unit := journalValue(e.Exe), journalValue(e.Comm), journalValue(e.Unit)
	switch {
	case exe == "" && comm == "":
		return true
	case isSSHDIdent(path.Base(strings.TrimSuffix(exe, " (deleted)"))), isSSHDIdent(comm):
		return true
	}
	for _, u := range []string{"ssh", "sshd"} {
		if unit == u+".service" || strings.HasPrefix(unit, u+"@") && strings.HasSuffix(unit, ".service") {
			return true
		}
	}
	return false
}

// parseJournalJSON parses a journalctl -o json line. The cursor is
// returned whenever the line is a journal entry, even one that is not
// sshd's. The time is _SOURCE_REALTIME_TIMESTAMP (when the sender logged
// it) if present, else __REALTIME_TIMESTAMP (when journald received it).
func parseJournalJSON(line string, now time.Time) (ev Event, cursor string, ok bool) {
	var e journalEntry
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		return Event{}, "", false
	}
	cursor = journalValue(e.Cursor)
	if !isSSHDIdent(journalValue(e.Ident)) {
		return Event{}, cursor, false
	}
	pid, err := strconv.Atoi(journalValue(e.PID))
	if err != nil {
		pid, _ = strconv.Atoi(journalValue(e.SyslogPID))
	}
	t := now
	for _, f := range []json.RawMessage{e.SourceRealtime, e.Realtime} {
		if us, err := strconv.ParseInt(journalValue(f), 10, 64); err == nil && us > 0 {
			t = time.UnixMicro(us).In(now.Location())
			break
		}
	}
	ev, ok = finish(journalValue(e.Message), line, t, pid)
	if ok && ev.Kind == Accepted && !e.fromRootSSHD() {
		// A login only root's sshd can report. Other kinds pass from
		// any sender: the post-authentication child that logs session
		// starts and disconnects runs as the user, and none of them can
		// make a session.
		return Event{}, cursor, false
	}
	ev.Origin = OriginJournal
	return ev, cursor, ok
}

// journalValue decodes one journal JSON field value to a string: the
// string itself, bytes given as an array of numbers, or the first of
// several values. Null and anything else give "".
func journalValue(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return ""
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	case '[':
		var arr []json.RawMessage
		if json.Unmarshal(raw, &arr) != nil || len(arr) == 0 {
			return ""
		}
		if first := bytes.TrimSpace(arr[0]); len(first) > 0 && (first[0] == '"' || first[0] == '[') {
			return journalValue(first) // several values: the first
		}
		b := make([]byte, 0, len(arr))
		for _, v := range arr {
			n, err := strconv.ParseUint(string(v), 10, 8)
			if err != nil {
				return ""
			}
			b = append(b, byte(n))
		}
		return string(b)
	}
	return ""
}

// The messages, as OpenSSH formats them (auth.c auth_log, packet.c
// sshpkt_vfatal, serverloop.c, session.c, sshd.c) and pam_unix. A user
// name chosen by a client (invalid users, failed attempts) may hold
// spaces and even " from ... port ...": those patterns are anchored at
// both ends and take the address and port from the end. Accepted names a
// valid account, so its user is the shortest match: a certificate ID in
// the key part cannot move the address.
var (
	reAccepted = lazyRegexp(`^Accepted (\S+) for (.+?) from (\S+) port (\d+) ssh2(?:: (.*))?$`)
	reAuthStep = lazyRegexp(`^(?:Failed|Postponed|Partial) (\S+) for (?:invalid user )?(.*) from (\S+) port (\d+) ssh2(?:: .*)?$`)
	reInvalid  = lazyRegexp(`^Invalid user (.*) from (\S+) port (\d+)$`)
	// The rest of "Connection closed by ", "Connection reset by ",
	// "Disconnected from " and "Timeout, client not responding from ":
	// sshpkt_fmt_connection_id's "[preamble ]ADDR port PORT".
	reConnID    = lazyRegexp(`^(?:(authenticating user|invalid user|user) (.*) )?(\S+) port (\d+)$`)
	reReadError = lazyRegexp(`^Read error from remote host (\S+) port (\d+): .*$`)
	reClosing   = lazyRegexp(`^Closing connection to (\S+) port (\d+)$`)
	reTimeout   = lazyRegexp(`^Timeout before authentication for (\S+) port (\d+)$`)
	reConnFrom  = lazyRegexp(`^Connection from (\S+) port (\d+) on \S+ port \d+(?: rdomain .*)?$`)
	reStarting  = lazyRegexp(`^Starting session: (.*) for (\S+) from (\S+) port (\d+) id \d+$`)
	reOnTTY     = lazyRegexp(`^(.*) on (\S+)$`)
	reClose     = lazyRegexp(`^Close session: user (\S+) from (\S+) port (\d+) id \d+$`)
	rePAMOpen   = lazyRegexp(`^pam_unix\([^:()]+:session\): session opened for user (\S+?)(?:\(uid=\d+\))? by `)
	rePAMClose  = lazyRegexp(`^pam_unix\([^:()]+:session\): session closed for user (\S+)$`)
	reAddrPort  = lazyRegexp(`(\S+) port (\d+)`)
)

// lazyRegexp compiles expr at its first use: most connwatch processes
// (status, tunnel, connect) never parse an sshd log line, and compiled at
// start the patterns above cost every one of them some 200 kB of heap
// and over a millisecond.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// parseMessage classifies an sshd message and takes out its fields.
func parseMessage(msg string) (Event, bool) {
	// Syslog (not -E) prefixes error and fatal messages.
	for _, p := range []string{"error: ", "fatal: "} {
		if m, ok := strings.CutPrefix(msg, p); ok {
			msg = m
			break
		}
	}
	msg, preauth := strings.CutSuffix(msg, " [preauth]")
	ev, ok := parseBody(msg)
	if !preauth {
		return ev, ok
	}
	// The unprivileged pre-authentication child logged it: whatever it
	// says, nobody has authenticated.
	if !ok {
		ev = Event{}
		if m := reAddrPort().FindAllStringSubmatch(msg, -1); m != nil {
			last := m[len(m)-1]
			if port, ok := parsePort(last[2]); ok {
				ev.Addr, ev.Port = last[1], port
			}
		}
	}
	ev.Kind = Preauth
	return ev, true
}

func parseBody(msg string) (Event, bool) {
	switch {
	case strings.HasPrefix(msg, "Accepted "):
		if m := reAccepted().FindStringSubmatch(msg); m != nil {
			ev, ok := withAddr(Event{Kind: Accepted, User: m[2], Method: m[1], Key: m[5]}, m[3], m[4])
			if ok && m[1] != "key" && m[1] != "certificate" {
				return ev, true
			}
		}
		// "Accepted key ED25519 SHA256:... found at FILE:LINE" and
		// "Accepted certificate ID ...": a key matched, no login yet.
		if strings.HasPrefix(msg, "Accepted key ") || strings.HasPrefix(msg, "Accepted certificate ") {
			return Event{Kind: Preauth}, true
		}
		return Event{}, false
	case strings.HasPrefix(msg, "Failed "), strings.HasPrefix(msg, "Postponed "), strings.HasPrefix(msg, "Partial "):
		if m := reAuthStep().FindStringSubmatch(msg); m != nil {
			return withAddr(Event{Kind: Preauth, User: m[2], Method: m[1]}, m[3], m[4])
		}
	case strings.HasPrefix(msg, "Invalid user "):
		if m := reInvalid().FindStringSubmatch(msg); m != nil {
			return withAddr(Event{Kind: Preauth, User: m[1]}, m[2], m[3])
		}
	case strings.HasPrefix(msg, "Disconnected from "):
		return connEnd(msg[len("Disconnected from "):], Disconnected)
	case strings.HasPrefix(msg, "Connection closed by "):
		return connEnd(msg[len("Connection closed by "):], ConnectionClosed)
	case strings.HasPrefix(msg, "Connection reset by "):
		return connEnd(msg[len("Connection reset by "):], ConnectionClosed)
	case strings.HasPrefix(msg, "Timeout, client not responding from "):
		// serverloop.c: ClientAliveInterval x ClientAliveCountMax ran out,
		// which only happens after authentication.
		return connEnd(msg[len("Timeout, client not responding from "):], ConnectionClosed)
	case strings.HasPrefix(msg, "Read error from remote host "):
		if m := reReadError().FindStringSubmatch(msg); m != nil {
			return withAddr(Event{Kind: ConnectionClosed}, m[1], m[2])
		}
	case strings.HasPrefix(msg, "Closing connection to "):
		if m := reClosing().FindStringSubmatch(msg); m != nil {
			return withAddr(Event{Kind: ConnectionClosed}, m[1], m[2])
		}
	case strings.HasPrefix(msg, "Timeout before authentication "):
		if m := reTimeout().FindStringSubmatch(msg); m != nil {
			return withAddr(Event{Kind: Preauth}, m[1], m[2])
		}
	case strings.HasPrefix(msg, "Connection from "):
		if m := reConnFrom().FindStringSubmatch(msg); m != nil {
			return withAddr(Event{Kind: Preauth}, m[1], m[2])
		}
	case strings.HasPrefix(msg, "Starting session: "):
		if m := reStarting().FindStringSubmatch(msg); m != nil {
			ev := Event{Kind: StartingSession, User: m[2], SessionType: m[1]}
			if t := reOnTTY().FindStringSubmatch(m[1]); t != nil {
				ev.SessionType, ev.TTY = t[1], t[2]
			}
			return withAddr(ev, m[3], m[4])
		}
	case strings.HasPrefix(msg, "Close session: "):
		if m := reClose().FindStringSubmatch(msg); m != nil {
			return withAddr(Event{Kind: CloseSession, User: m[1]}, m[2], m[3])
		}
	case strings.HasPrefix(msg, "pam_unix("):
		if m := rePAMOpen().FindStringSubmatch(msg); m != nil {
			return Event{Kind: SessionOpened, User: m[1]}, true
		}
		if m := rePAMClose().FindStringSubmatch(msg); m != nil {
			return Event{Kind: SessionClosed, User: m[1]}, true
		}
	}
	return Event{}, false
}

// connEnd parses "[authenticating user U |invalid user U |user U ]ADDR
// port PORT". Without a preamble the connection may or may not have
// authenticated: sshd logs post-auth ends with "Connection closed by ADDR
// port PORT" too; the pre-auth ones carry "[preauth]", handled by the
// caller. A preamble of a user still authenticating makes it Preauth.
func connEnd(rest string, kind Kind) (Event, bool) {
	m := reConnID().FindStringSubmatch(rest)
	if m == nil {
		return Event{}, false
	}
	switch m[1] {
	case "authenticating user", "invalid user":
		kind = Preauth
	case "":
		if kind == Disconnected {
			kind = ConnectionClosed // the clean end names its user
		}
	}
	return withAddr(Event{Kind: kind, User: m[2]}, m[3], m[4])
}

func withAddr(ev Event, addr, port string) (Event, bool) {
	p, ok := parsePort(port)
	if !ok {
		return Event{}, false
	}
	ev.Addr, ev.Port = addr, p
	return ev, true
}

func parsePort(s string) (int, bool) {
	p, err := strconv.Atoi(s)
	return p, err == nil && p > 0 && p <= 65535
}
