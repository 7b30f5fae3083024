package sshd

import (
	"strings"

	"github.com/connwatch/connwatch/internal/session"
)

// connection is one sshd connection: its monitor and, once authenticated,
// its user child.
type connection struct {
	monitor *proc
	user    *proc
	// sftp is set when a child of the user child is an sftp server.
	sftp bool
}

// assemble groups sshd processes into connections. A monitor is any live
// process titled as one that verification trusts (root's sshd); its
// connection is authenticated exactly when a live, trusted child of it is
// titled as a user child. Zombies never count.
func assemble(procs []proc, trusted map[int]struct{}) []connection {
	isTrusted := func(p *proc) bool {
		_, ok := trusted[p.pid]
		return ok
	}
	byParent := make(map[int][]*proc, len(procs))
	for i := range procs {
		p := &procs[i]
		if p.zombie {
			continue
		}
		byParent[p.ppid] = append(byParent[p.ppid], p)
	}
	var conns []connection
	for i := range procs {
		m := &procs[i]
		if m.zombie || !m.titled || m.title.Role != RoleMonitor || !isTrusted(m) {
			continue
		}
		c := connection{monitor: m}
		for _, ch := range byParent[m.pid] {
			if ch.titled && ch.title.Role == RoleUser && isTrusted(ch) {
				c.user = ch
				break
			}
		}
		if c.user != nil {
			for _, g := range byParent[c.user.pid] {
				if g.comm == "sftp-server" || (g.titled && g.title.Role == RoleUser && hasChannel(g.title.Channels, "internal-sftp")) {
					c.sftp = true
				}
			}
		}
		conns = append(conns, c)
	}
	return conns
}

func hasChannel(chans []string, want string) bool {
	for _, c := range chans {
		if c == want {
			return true
		}
	}
	return false
}

func (c connection) ttys() []string {
	var out []string
	for _, ch := range c.user.title.Channels {
		if strings.HasPrefix(ch, "pts/") || strings.HasPrefix(ch, "tty") {
			out = append(out, ch)
		}
	}
	return out
}

func (c connection) mode() session.Mode {
	chans := c.user.title.Channels
	switch {
	case len(c.ttys()) > 0:
		return session.ModeTTY
	case c.sftp || hasChannel(chans, "internal-sftp"):
		return session.ModeSFTP
	case hasChannel(chans, "notty"):
		return session.ModeNoTTY
	}
	return session.ModeForward
}
