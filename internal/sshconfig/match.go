package sshconfig

import (
	"fmt"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
)

// multiValued are sshd_config keywords whose every line adds a value
// rather than the first one winning.
var multiValued = map[string]bool{
	"hostkey": true, "hostcertificate": true, "listenaddress": true, "port": true,
	"acceptenv": true, "subsystem": true, "setenv": true,
	"localforward": true, "remoteforward": true, "dynamicforward": true,
	"identityfile": true, "certificatefile": true, "sendenv": true,
}

// ServerDefaults are the values sshd uses for the keywords connwatch
// audits when a file does not set them (OpenSSH 9.2 as built by Debian,
// as printed by sshd -T on an empty config).
var ServerDefaults = map[string]string{
	"clientaliveinterval": "0",
	"clientalivecountmax": "3",
	"tcpkeepalive":        "yes",
	"logingracetime":      "120",
	"maxstartups":         "10:30:100",
	"usepam":              "no",
	"loglevel":            "INFO",
	"pidfile":             "/run/sshd.pid",
}

// Evaluate returns the settings a file gives to connection c, the way sshd
// reads them: the first value of a keyword wins, and lines of a Match
// block that matches c override the global ones (the first matching
// block's value winning). With c nil no Match block applies
// and all are returned as unevaluated; blocks whose criteria cannot be
// evaluated here (unknown criteria) are returned too and do not apply.
// Keywords the file does not set get defaults.
func (f *File) Evaluate(c *Connection, defaults map[string]string) (Settings, []*Block) {
	s := Settings{}
	verdict := map[*Block]bool{}
	var unevaluated []*Block
	for _, b := range f.Blocks {
		if c == nil {
			unevaluated = append(unevaluated, b)
			continue
		}
		ok, err := b.Matches(c)
		if err != nil {
			unevaluated = append(unevaluated, b)
		}
		verdict[b] = ok && err == nil
	}
	// Global lines: the first value wins. Lines of matching Match blocks
	// override them, the first matching value winning among those.
	global, matched := Settings{}, Settings{}
	for _, d := range f.Directives {
		dst := global
		if len(d.Conditions) > 0 {
			dst = matched
		}
		applies := true
		for _, b := range d.Conditions {
			if !verdict[b] {
				applies = false
			}
		}
		if !applies {
			continue
		}
		v := strings.Join(d.Args, " ")
		if multiValued[d.Key] {
			dst[d.Key] = append(dst[d.Key], v)
		} else if !dst.Has(d.Key) {
			dst[d.Key] = []string{v}
		}
	}
	for k, v := range global {
		s[k] = v
	}
	for k, v := range matched {
		s[k] = v
	}
	for k, v := range defaults {
		if !s.Has(k) {
			s[k] = []string{v}
		}
	}
	return s, unevaluated
}

// Matches evaluates a Match block of sshd_config for c: criteria All,
// User, Group, Host, Address, LocalAddress, LocalPort, RDomain, each with
// a comma-separated pattern list ("*", "?", "!" negation; CIDR for
// addresses).
func (b *Block) Matches(c *Connection) (bool, error) {
	if b.Keyword != "match" {
		return false, fmt.Errorf("evaluate %s: only Match blocks are evaluated", b)
	}
	args := b.Criteria
	if len(args) == 1 && strings.EqualFold(args[0], "all") {
		return true, nil
	}
	if len(args)%2 != 0 {
		return false, fmt.Errorf("evaluate %s: criteria come in pairs", b)
	}
	for i := 0; i < len(args); i += 2 {
		crit, list := strings.ToLower(args[i]), args[i+1]
		var ok bool
		switch crit {
		case "user":
			ok = matchList(c.User, list)
		case "host":
			ok = matchList(strings.ToLower(c.Host), strings.ToLower(list))
		case "address":
			ok = matchAddrList(c.Addr, list)
		case "localaddress":
			ok = c.LAddr != "" && matchAddrList(c.LAddr, list)
		case "localport":
			ok = c.LPort != 0 && matchList(strconv.Itoa(c.LPort), list)
		case "rdomain":
			ok = matchList(c.RDomain, list)
		case "group":
			groups, err := userGroups(c.User)
			if err != nil {
				return false, fmt.Errorf("evaluate %s: %w", b, err)
			}
			for _, g := range groups {
				if matchList(g, list) {
					ok = true
				}
			}
		default:
			return false, fmt.Errorf("evaluate %s: criterion %q is not supported", b, args[i])
		}
		if !ok {
			return false, nil
		}
	}
	return true, nil
}

// userGroups returns the names of the groups of a local user.
func userGroups(name string) ([]string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up user %s: %w", name, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("look up groups of %s: %w", name, err)
	}
	var names []string
	for _, id := range ids {
		if g, err := user.LookupGroupId(id); err == nil {
			names = append(names, g.Name)
		}
	}
	return names, nil
}

// matchList is OpenSSH's match_pattern_list: true when s matches a
// positive pattern of the comma-separated list and no negated one.
func matchList(s, list string) bool {
	got := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if wildcard(p, s) {
			if neg {
				return false
			}
			got = true
		}
	}
	return got
}

// matchAddrList is OpenSSH's addr_match_list: patterns or CIDR blocks.
func matchAddrList(addr, list string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	got := false
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		var ok bool
		if pre, err := netip.ParsePrefix(p); err == nil {
			ok = pre.Contains(a.Unmap())
		} else {
			ok = wildcard(p, addr)
		}
		if ok {
			if neg {
				return false
			}
			got = true
		}
	}
	return got
}

// wildcard matches s against a pattern with * (any run) and ? (one
// character).
func wildcard(pat, s string) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case '*':
			for i := len(s); i >= 0; i-- {
				if wildcard(pat[1:], s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pat[0] {
				return false
			}
		}
		pat, s = pat[1:], s[1:]
	}
	return s == ""
}
