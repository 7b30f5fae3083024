// Package session holds connwatch's model of who is connected to a machine:
// one Session per authenticated connection, the connections still waiting
// for authentication, and a Snapshot that says how complete the view is.
//
// Sources (package source/...) produce Snapshots; everything downstream
// (status output, events, metrics, the idle policy) consumes them.
package session

import (
	"sort"
	"time"
)

// Kind says what kind of connection a session is.
type Kind string

// Session kinds.
const (
	KindSSH Kind = "ssh"
)

// Mode says how an SSH connection is used.
type Mode string

// Session modes.
const (
	// ModeTTY is an interactive session with a pseudo-terminal.
	ModeTTY Mode = "tty"
	// ModeNoTTY is a session channel without a terminal: a remote command,
	// an IDE server (VS Code Remote, Cloud9), scp.
	ModeNoTTY Mode = "notty"
	// ModeForward is an authenticated connection with no session channel,
	// such as `ssh -N` port forwards.
	ModeForward Mode = "forward"
	// ModeSFTP is an sftp subsystem session (sftp-server or internal-sftp).
	ModeSFTP Mode = "sftp"
)

// Session is one authenticated connection.
type Session struct {
	// ID is stable for the life of the connection and unique on this boot.
	ID   string `json:"id"`
	Kind Kind   `json:"kind"`
	User string `json:"user"`
	// RemoteAddr is empty when the connection's socket could not be inspected.
	RemoteAddr string `json:"remote_addr"`
	RemotePort int    `json:"remote_port"`
	LocalAddr  string `json:"local_addr,omitempty"`
	LocalPort  int    `json:"local_port"`
	// TTY is the first pseudo-terminal of the connection ("pts/0"), empty for none.
	TTY  string `json:"tty,omitempty"`
	Mode Mode   `json:"mode"`
	// PID is the connection's privileged monitor process.
	PID int `json:"pid"`
	// UserPID is the unprivileged child that exists only after authentication.
	UserPID   int       `json:"user_pid"`
	StartedAt time.Time `json:"started_at"`
	// LastActivityAt is the newest of the terminal's input time and the last
	// data received on the TCP connection; nil when neither is known.
	LastActivityAt *time.Time `json:"last_activity_at"`
}

// Idle returns how long the session has been idle at now, and false when
// its activity is unknown.
func (s Session) Idle(now time.Time) (time.Duration, bool) {
	if s.LastActivityAt == nil {
		return 0, false
	}
	d := now.Sub(*s.LastActivityAt)
	if d < 0 {
		d = 0
	}
	return d, true
}

// PendingAuth is a connection that has not (yet) authenticated: a user at
// the password prompt, or a bot guessing passwords. It is never a session.
type PendingAuth struct {
	Kind Kind `json:"kind"`
	// User is the user name the client asked for; "unknown" when sshd
	// rejected it as invalid, empty before the client sent one.
	User       string    `json:"user"`
	RemoteAddr string    `json:"remote_addr"`
	RemotePort int       `json:"remote_port"`
	LocalPort  int       `json:"local_port"`
	PID        int       `json:"pid"`
	Since      time.Time `json:"since"`
}

// Warning codes. Callers branch on Code, people read Message.
const (
	// WarnProcHidden: /proc is mounted with hidepid, other users'
	// processes are invisible.
	WarnProcHidden = "proc_hidden"
	// WarnProcUnreadable: some processes could not be read.
	WarnProcUnreadable = "proc_unreadable"
	// WarnSocketUnreadable: a connection's sockets could not be mapped
	// (addresses and ports unknown).
	WarnSocketUnreadable = "socket_unreadable"
	// WarnActivityUnknown: last activity could not be measured.
	WarnActivityUnknown = "activity_unknown"
)

// Warning says what a source could not see.
type Warning struct {
	Code    string `json:"code"`
	Source  string `json:"source"`
	Message string `json:"message"`
	// Blind is true when the warning means sessions may be missing from the
	// snapshot, not just details of sessions.
	Blind bool `json:"blind"`
}

// Snapshot is a source's view of the machine at one moment.
type Snapshot struct {
	Time        time.Time     `json:"time"`
	Sessions    []Session     `json:"sessions"`
	PendingAuth []PendingAuth `json:"pending_auth"`
	// Complete is false when anything at all could not be inspected.
	Complete bool      `json:"complete"`
	Warnings []Warning `json:"warnings"`
}

// Blind reports whether sessions may be missing from the snapshot: a
// policy that acts on "nobody is connected" must not act on a blind one.
func (s Snapshot) Blind() bool {
	for _, w := range s.Warnings {
		if w.Blind {
			return true
		}
	}
	return false
}

// Warn records a warning and marks the snapshot incomplete.
func (s *Snapshot) Warn(w Warning) {
	s.Complete = false
	s.Warnings = append(s.Warnings, w)
}

// Sort orders sessions and pending connections by start time, then ID,
// so output is stable.
func (s *Snapshot) Sort() {
	sort.Slice(s.Sessions, func(i, j int) bool {
		a, b := s.Sessions[i], s.Sessions[j]
		if !a.StartedAt.Equal(b.StartedAt) {
			return a.StartedAt.Before(b.StartedAt)
		}
		return a.ID < b.ID
	})
	sort.Slice(s.PendingAuth, func(i, j int) bool {
		a, b := s.PendingAuth[i], s.PendingAuth[j]
		if !a.Since.Equal(b.Since) {
			return a.Since.Before(b.Since)
		}
		return a.PID < b.PID
	})
}
