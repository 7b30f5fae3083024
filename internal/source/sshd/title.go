package sshd

import "strings"

// Role is what an sshd process does for its connection, read from its
// process title.
type Role int

// Roles of sshd processes.
const (
	RoleUnknown Role = iota
	// RoleListener is the daemon accepting connections ("[listener]").
	RoleListener
	// RoleMonitor is a connection's privileged monitor: "[accepted]" before
	// the client sent a user name, "USER [priv]" after (still before
	// authentication up to 10.4), "USER [postauth]" after authentication on
	// 10.5+.
	RoleMonitor
	// RoleNet is the unprivileged pre-authentication child ("[net]",
	// "USER [net]", "[session-auth]").
	RoleNet
	// RolePAM is the PAM conversation helper ("USER [pam]").
	RolePAM
	// RoleUser is the user child, which sshd creates only after
	// authentication succeeded: "USER" (no session channel yet, e.g. ssh -N),
	// "USER@pts/0", "USER@notty", "USER@internal-sftp".
	RoleUser
)

func (r Role) String() string {
	switch r {
	case RoleListener:
		return "listener"
	case RoleMonitor:
		return "monitor"
	case RoleNet:
		return "net"
	case RolePAM:
		return "pam"
	case RoleUser:
		return "user"
	}
	return "unknown"
}

// Title is a parsed sshd process title.
type Title struct {
	// Prog is the program name sshd put before the colon: "sshd" up to
	// OpenSSH 9.7, "sshd-session" or "sshd-auth" from 9.8 on.
	Prog string
	Role Role
	// User is the user name in the title; "unknown" for an invalid user
	// name, empty when the title has none.
	User string
	// PostAuth is set for a 10.5+ monitor titled "[postauth]".
	PostAuth bool
	// Channels is the user child's session list after the "@": tty names
	// ("pts/0"), "notty" or "internal-sftp"; empty for a connection
	// without session channels.
	Channels []string
}

// ParseTitle parses a process title as written by sshd's setproctitle
// ("PROG: TEXT"). It returns false for anything that is not an sshd title.
func ParseTitle(s string) (Title, bool) {
	prog, rest, ok := strings.Cut(s, ": ")
	if !ok || prog == "" || strings.ContainsAny(prog, " /") {
		return Title{}, false
	}
	t := Title{Prog: prog}
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return Title{}, false
	}
	if strings.Contains(rest, "[listener]") {
		t.Role = RoleListener
		return t, true
	}
	if strings.HasSuffix(rest, "]") {
		open := strings.LastIndexByte(rest, '[')
		if open < 0 {
			return Title{}, false
		}
		tag := rest[open+1 : len(rest)-1]
		user := strings.TrimSpace(rest[:open])
		if strings.ContainsAny(user, " \t") {
			return Title{}, false
		}
		t.User = user
		switch tag {
		case "accepted", "priv":
			t.Role = RoleMonitor
		case "postauth":
			t.Role = RoleMonitor
			t.PostAuth = true
		case "net", "session-auth":
			t.Role = RoleNet
		case "pam":
			t.Role = RolePAM
		default:
			return Title{}, false
		}
		return t, true
	}
	if strings.ContainsAny(rest, " \t[]") {
		// An sshd that has not (yet) set a title, e.g. "sshd -D -f cfg".
		return Title{}, false
	}
	t.Role = RoleUser
	t.User = rest
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		if chans, ok := parseChannels(rest[at+1:]); ok {
			t.User = rest[:at]
			t.Channels = chans
		}
	}
	return t, true
}

// parseChannels parses the list sshd writes after "USER@": a comma
// separated list of ttys, or "notty", or "internal-sftp". Anything else is
// part of a user name that contains '@'.
func parseChannels(s string) ([]string, bool) {
	if s == "notty" || s == "internal-sftp" {
		return []string{s}, true
	}
	parts := strings.Split(s, ",")
	for _, p := range parts {
		if !isTTYName(p) {
			return nil, false
		}
	}
	return parts, true
}

// isTTYName reports whether s looks like a tty name relative to /dev
// ("pts/3", "tty1", "ttyp0").
func isTTYName(s string) bool {
	switch {
	case strings.HasPrefix(s, "pts/"):
		return isDigits(s[len("pts/"):])
	case strings.HasPrefix(s, "tty"):
		return len(s) > 3
	}
	return false
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
