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
	// KindWireGuard is a WireGuard peer with a recent handshake.
	KindWireGuard Kind = "wireguard"
	// KindOpenVPN is a client of an OpenVPN server.
	KindOpenVPN Kind = "openvpn"
	// KindAWSClientVPN is a connection to an AWS Client VPN endpoint.
	KindAWSClientVPN Kind = "aws-client-vpn"
)

// Kinds lists every kind, SSH first.
func Kinds() []Kind {
	return []Kind{KindSSH, KindWireGuard, KindOpenVPN, KindAWSClientVPN}
}

// ParseKind returns the kind named s, or false.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds() {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// IsVPN reports whether k is one of the VPN kinds.
func (k Kind) IsVPN() bool {
	return k == KindWireGuard || k == KindOpenVPN || k == KindAWSClientVPN
}

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
	// data received on the TCP connection (SSH); for VPN clients the last
	// time they sent more than keepalives (WireGuard, Client VPN) or their
	// routes were used (OpenVPN). Nil when unknown.
	LastActivityAt *time.Time `json:"last_activity_at"`
	// EndedAt is when the connection ended, when its source knows (set
	// only on Snapshot.Ended and on session_end events).
	EndedAt *time.Time `json:"ended_at,omitempty"`
	// VPN holds what VPN sources know beyond the common fields.
	VPN *VPN `json:"vpn,omitempty"`
}

// VPN is a VPN client's identity and traffic. For VPN sessions, User is
// the best name known (a configured peer name, the username, or the
// certificate's common name), RemoteAddr and RemotePort the client's
// real (outer) address.
type VPN struct {
	// Server is what the client is connected to: the WireGuard
	// interface, the OpenVPN server's name, the Client VPN endpoint id.
	Server string `json:"server"`
	// PublicKey is a WireGuard peer's key (base64).
	PublicKey string `json:"public_key,omitempty"`
	// CommonName is the client certificate's CN (OpenVPN, Client VPN).
	CommonName string `json:"common_name,omitempty"`
	// Username is the name the client authenticated with, if any.
	Username string `json:"username,omitempty"`
	// VirtualAddr is the client's address inside the tunnel.
	VirtualAddr string `json:"virtual_addr,omitempty"`
	// ConnectionID is the source's id of the connection (Client VPN's
	// connection id, OpenVPN's client id).
	ConnectionID string `json:"connection_id,omitempty"`
	// BytesIn were received from the client, BytesOut sent to it.
	BytesIn  uint64 `json:"bytes_in"`
	BytesOut uint64 `json:"bytes_out"`
	// LastHandshakeAt is a WireGuard peer's latest handshake.
	LastHandshakeAt *time.Time `json:"last_handshake_at,omitempty"`
	// Status is the source's own status of the connection (Client VPN:
	// active, terminating, terminated, failed-to-terminate).
	Status string `json:"status,omitempty"`
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
	// WarnUnverifiedSSHD: processes titled as sshd are not root's sshd
	// (not counted), or sshd's executables could not be checked.
	WarnUnverifiedSSHD = "unverified_sshd"
)

// Warning says what a source could not see.
type Warning struct {
	Code   string `json:"code"`
	Source string `json:"source"`
	// Kind limits a blind warning to sessions of one kind (a VPN source
	// that could not be polled); empty means every kind.
	Kind    Kind   `json:"kind,omitempty"`
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
	// Ended are connections that ended since the source's previous
	// snapshot, each with EndedAt set and each listed once. Polled
	// sources that learn of connections after the fact (AWS Client VPN
	// lists those terminated in the last hour) list here connections
	// that began and ended between two polls, which no snapshot saw.
	Ended []Session `json:"ended,omitempty"`
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

// BlindFor reports whether sessions of kind k may be missing: a blind
// warning for every kind or for k.
func (s Snapshot) BlindFor(k Kind) bool {
	for _, w := range s.Warnings {
		if w.Blind && (w.Kind == "" || w.Kind == k) {
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
