// Package authlog reads sshd's own log lines, a signal independent of the
// /proc scan: an authenticated connection that lasts 100 ms leaves an
// "Accepted" line with its user, address and port even when no scan saw
// its processes.
//
// ParseLine understands the three shapes real systems produce: the bare
// lines sshd writes with -E FILE (OpenSSH 9.2 puts neither a time nor a
// pid on them), syslog lines (classic "Nov 21 23:45:09 host sshd[1234]:"
// and RFC 3339 rsyslog prefixes) and journalctl -o json entries.
// FileTailer follows a log file like tail -F; Journal follows journald
// through journalctl.
//
// A log is text anybody may have written unless something vouches for
// its sender (Origin): FileTailer follows only files root alone can
// write, Journal delivers logins only when journald says root's sshd sent
// them, and syslog lines (auth.log) carry only the sender's own claims,
// which a consumer must check.
//
// Only Accepted means that a user authenticated. Every other kind either
// ends a connection (Disconnected, ConnectionClosed), describes a session
// inside an authenticated connection, or is Preauth: lines of connections
// still at the authentication stage (bots, wrong passwords, parked
// password prompts), from which a consumer must never create a session.
package authlog

import (
	"context"
	"fmt"
	"time"
)

// Both followers have the shape of a long-running source.
var (
	_ interface {
		Run(context.Context, chan<- Event) error
	} = (*FileTailer)(nil)
	_ interface {
		Run(context.Context, chan<- Event) error
	} = (*Journal)(nil)
)

// Kind is what a log line says.
type Kind int

const (
	// Accepted: authentication succeeded, "Accepted publickey for alice
	// from 203.0.113.5 port 51234 ssh2: ED25519 SHA256:...". The only
	// kind that tells of a new authenticated connection.
	Accepted Kind = iota + 1
	// Disconnected: an authenticated connection ended cleanly,
	// "Disconnected from user alice 203.0.113.5 port 51234".
	Disconnected
	// ConnectionClosed: an authenticated connection ended otherwise:
	// "Connection closed by 203.0.113.5 port 51234" (no [preauth]),
	// "Closing connection to ...", "Read error from remote host ...",
	// "Connection reset by ...", and "Timeout, client not responding from
	// user alice ..." (ClientAliveInterval ran out; only post-auth code
	// logs it). User is set only when the line names it.
	ConnectionClosed
	// StartingSession: a session channel started (LogLevel VERBOSE),
	// "Starting session: shell on pts/0 for alice from 127.0.0.1 port
	// 5555 id 0". TTY and SessionType are set.
	StartingSession
	// CloseSession: a session channel closed (LogLevel VERBOSE), "Close
	// session: user alice from 127.0.0.1 port 5555 id 0".
	CloseSession
	// SessionOpened: pam_unix opened the PAM session, "pam_unix(sshd:
	// session): session opened for user alice(uid=1000) by (uid=0)". Only
	// in syslog and journald: PAM does not write to sshd's -E file. No
	// address; PID is the connection's monitor.
	SessionOpened
	// SessionClosed: pam_unix closed the PAM session, "pam_unix(sshd:
	// session): session closed for user alice".
	SessionClosed
	// Preauth: a line about a connection that has not authenticated:
	// anything ending in "[preauth]", "Connection from ...", "Invalid user
	// ...", "Failed password ...", "Postponed ...", "Accepted key ...
	// found at ..." (a key matched, not yet a login), "Connection closed
	// by authenticating user ...", "Timeout before authentication ...".
	Preauth
)

var kindNames = [...]string{
	Accepted:         "accepted",
	Disconnected:     "disconnected",
	ConnectionClosed: "connection-closed",
	StartingSession:  "starting-session",
	CloseSession:     "close-session",
	SessionOpened:    "session-opened",
	SessionClosed:    "session-closed",
	Preauth:          "preauth",
}

// String returns the kind's name, as in events and logs.
func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Ends tells whether the kind ends an authenticated connection, found by
// Addr and Port.
func (k Kind) Ends() bool { return k == Disconnected || k == ConnectionClosed }

// Event is one recognised sshd log line.
type Event struct {
	Kind Kind
	// Time is the line's own time, or the time it was read when the line
	// carries none (sshd -E lines).
	Time time.Time
	// PID is the process that logged the line, from "sshd[1234]:" or
	// journald's _PID; 0 when the line does not say (sshd -E lines).
	// Accepted and the PAM lines come from the connection's monitor,
	// Starting session and Disconnected from its user child.
	PID  int
	User string
	// Addr and Port are the client's, as sshd logs them.
	Addr string
	Port int
	// Method is the authentication method of Accepted and failed
	// attempts: "publickey", "password", "keyboard-interactive/pam", ...
	Method string
	// Key is what follows "ssh2: " on Accepted lines: key type and
	// fingerprint ("ED25519 SHA256:..."), for certificates also ID,
	// serial and CA. It tells apart people sharing one account.
	Key string
	// SessionType ("shell", "command", "subsystem 'sftp'",
	// "forced-command ...") and TTY ("pts/0", or "" without a terminal)
	// are set on StartingSession.
	SessionType string
	TTY         string
	// Raw is the line as read, without its line ending.
	Raw string
	// Origin says what vouches for the line's sender.
	Origin Origin
}

// Origin is the kind of log a line came from, which says who could have
// written it.
type Origin int

const (
	// OriginFile: a bare line of sshd's -E file. FileTailer follows only
	// files that root alone can write (ErrUntrustedLog), and only sshd
	// writes to its -E file.
	OriginFile Origin = iota + 1
	// OriginSyslog: a syslog line (auth.log). Its identifier and pid are
	// what the sender claimed: any local user can write "sshd[PID]:
	// Accepted ... for root" with logger -t sshd --id=PID. A consumer
	// must check PID against what it knows of sshd's processes before
	// believing a login.
	OriginSyslog
	// OriginJournal: a journald entry. Accepted lines are delivered only
	// when journald itself (_UID, _EXE, _COMM, _SYSTEMD_UNIT) says root's
	// sshd sent them.
	OriginJournal
)
