package sshconfig

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Connection is the connection spec of `sshd -T -C`: who connects from
// where, so Match blocks can be evaluated.
type Connection struct {
	User    string
	Host    string
	Addr    string
	LAddr   string
	LPort   int
	RDomain string
}

// ParseConnection parses "user=alice,host=x,addr=1.2.3.4" (also laddr,
// lport, rdomain), as sshd -C takes it. user and addr are required, as
// sshd requires them; host defaults to addr.
func ParseConnection(spec string) (*Connection, error) {
	c := &Connection{}
	for _, kv := range strings.Split(spec, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("parse connection %q: %q is not key=value", spec, kv)
		}
		switch strings.ToLower(k) {
		case "user":
			c.User = v
		case "host":
			c.Host = v
		case "addr":
			if _, err := netip.ParseAddr(v); err != nil {
				return nil, fmt.Errorf("parse connection %q: addr: %w", spec, err)
			}
			c.Addr = v
		case "laddr":
			c.LAddr = v
		case "lport":
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("parse connection %q: lport: %w", spec, err)
			}
			c.LPort = n
		case "rdomain":
			c.RDomain = v
		default:
			return nil, fmt.Errorf("parse connection %q: unknown key %q (want user, host, addr, laddr, lport, rdomain)", spec, k)
		}
	}
	if c.User == "" || c.Addr == "" {
		return nil, fmt.Errorf("parse connection %q: user= and addr= are required", spec)
	}
	if c.Host == "" {
		c.Host = c.Addr
	}
	return c, nil
}

// String returns the spec for sshd -C.
func (c *Connection) String() string {
	parts := []string{"user=" + c.User, "host=" + c.Host, "addr=" + c.Addr}
	if c.LAddr != "" {
		parts = append(parts, "laddr="+c.LAddr)
	}
	if c.LPort != 0 {
		parts = append(parts, "lport="+strconv.Itoa(c.LPort))
	}
	if c.RDomain != "" {
		parts = append(parts, "rdomain="+c.RDomain)
	}
	return strings.Join(parts, ",")
}
