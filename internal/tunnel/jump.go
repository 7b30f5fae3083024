package tunnel

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// maxJumpDepth bounds the recursion through jump hosts that have their
// own ProxyJump (a loop in ssh_config would never end).
const maxJumpDepth = 8

// Jump is one ProxyJump entry, [user@]host[:port] (or the same as an
// ssh:// URI). User and Port, when given, override the jump host's
// ssh -G settings, as ssh -J does.
type Jump struct {
	User string
	Host string
	Port int // 0: not given
}

// String is the entry as ProxyJump takes it.
func (j Jump) String() string {
	s := j.Host
	if j.User != "" {
		s = j.User + "@" + s
	}
	if j.Port != 0 {
		if strings.Contains(j.Host, ":") {
			s = strings.Replace(s, j.Host, "["+j.Host+"]", 1)
		}
		s += ":" + strconv.Itoa(j.Port)
	}
	return s
}

// ParseJump parses one ProxyJump entry.
func ParseJump(v string) (Jump, error) {
	s := strings.TrimSpace(v)
	s = strings.TrimPrefix(s, "ssh://")
	var j Jump
	if i := strings.LastIndex(s, "@"); i >= 0 {
		j.User, s = s[:i], s[i+1:]
		if j.User == "" {
			return Jump{}, fmt.Errorf("read proxyjump %q: empty user: %w", v, ErrSpec)
		}
	}
	switch {
	case strings.HasPrefix(s, "["), strings.Count(s, ":") == 1:
		h, p, err := splitHostPort(s, false)
		if err != nil || p == 0 {
			return Jump{}, fmt.Errorf("read proxyjump %q: bad host:port: %w", v, ErrSpec)
		}
		j.Host, j.Port = h, p
	default: // a name, or an IPv6 address without port
		j.Host = s
	}
	if j.Host == "" || strings.ContainsAny(j.Host, " /") || strings.HasPrefix(j.Host, "-") {
		return Jump{}, fmt.Errorf("read proxyjump %q: bad host: %w", v, ErrSpec)
	}
	return j, nil
}

// parseJumps parses ssh -G's proxyjump value: a comma-separated list, or
// "none".
func parseJumps(v string) ([]Jump, error) {
	v = strings.TrimSpace(v)
	if v == "" || strings.EqualFold(v, "none") {
		return nil, nil
	}
	var out []Jump
	for _, e := range strings.Split(v, ",") {
		j, err := ParseJump(e)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, nil
}

// Resolver returns the ssh -G settings of a Host as a Spec (connwatch
// tunnel resolves jump hosts with the same ssh -G as the tunnel's Host).
type Resolver func(ctx context.Context, host string) (Spec, error)

// resolveChain returns the hops to connect through to reach sp, first to
// last, sp itself last. As with ssh -J, the first jump host's own
// ProxyJump is followed (recursively); the later ones' are not (each is
// reached through the one before it).
func resolveChain(ctx context.Context, sp Spec, resolve Resolver, depth int) ([]Spec, error) {
	if len(sp.ProxyJump) == 0 {
		return []Spec{sp}, nil
	}
	if resolve == nil {
		return nil, fmt.Errorf("%s: ProxyJump needs a resolver for the jump hosts: %w", sp.Host, ErrSpec)
	}
	if depth >= maxJumpDepth {
		return nil, fmt.Errorf("%s: more than %d levels of ProxyJump (a loop?): %w", sp.Host, maxJumpDepth, ErrSpec)
	}
	var out []Spec
	for i, j := range sp.ProxyJump {
		js, err := resolve(ctx, j.Host)
		if err != nil {
			return nil, fmt.Errorf("resolve jump host %s: %w", j.Host, err)
		}
		if j.User != "" {
			js.User = j.User
		}
		if j.Port != 0 {
			js.Port = j.Port
		}
		js.Forwards = nil // a jump host's forwards are not ours
		if i > 0 {
			js.ProxyJump = nil
			out = append(out, js)
			continue
		}
		chain, err := resolveChain(ctx, js, resolve, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, chain...)
	}
	return append(out, sp), nil
}
