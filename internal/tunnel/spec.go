// Package tunnel keeps SSH port forwards alive in native Go, the way
// autossh keeps an ssh process alive: it resolves a Host through `ssh -G`
// into a Spec, connects with golang.org/x/crypto/ssh, serves every
// LocalForward, RemoteForward and DynamicForward of that Host, checks the
// link with keepalive@openssh.com requests that carry a reply deadline,
// and reconnects for as long as Run runs: with staggered connection
// attempts at sub-second intervals while the network is down (dial.go),
// with jittered exponential backoff after failures that retrying soon
// will not fix. One forward failing never takes the others down.
package tunnel

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/connwatch/connwatch/internal/sshconfig"
)

// Defaults used when ssh -G says 0 (off): a tunnel without keepalives
// cannot notice a dead link for hours (TCP keepalive), so they are always on.
const (
	DefaultServerAliveInterval = 15 * time.Second
	DefaultServerAliveCountMax = 3
)

// ErrSpec is wrapped by the errors of settings a tunnel cannot use.
var ErrSpec = errors.New("unusable ssh settings")

// HostKeyPolicy is StrictHostKeyChecking.
type HostKeyPolicy string

// StrictHostKeyChecking values. "ask" is treated as yes: nobody is there
// to answer.
const (
	HostKeyStrict    HostKeyPolicy = "yes"
	HostKeyAcceptNew HostKeyPolicy = "accept-new"
	HostKeyOff       HostKeyPolicy = "no"
)

// Kind is the kind of a forward.
type Kind string

// Forward kinds, named after their ssh_config keywords.
const (
	Local   Kind = "LocalForward"
	Remote  Kind = "RemoteForward"
	Dynamic Kind = "DynamicForward"
)

// Forward is one port forward. For Local and Dynamic the bind address is
// on this machine and the destination is dialled by the server; for
// Remote the bind address is on the server and the destination is dialled
// from here. Dynamic has no destination.
type Forward struct {
	Kind     Kind   `json:"kind"`
	BindHost string `json:"bind_host,omitempty"` // "" means loopback (ssh's default without GatewayPorts)
	BindPort int    `json:"bind_port"`
	DestHost string `json:"dest_host,omitempty"`
	DestPort int    `json:"dest_port,omitempty"`
}

// BindAddr is the host:port to listen on; an empty bind host is 127.0.0.1.
func (f Forward) BindAddr() string {
	h := f.BindHost
	switch h {
	case "", "localhost":
		h = "127.0.0.1"
	case "*":
		h = ""
	}
	return net.JoinHostPort(h, strconv.Itoa(f.BindPort))
}

// DestAddr is the host:port to dial ("" for Dynamic).
func (f Forward) DestAddr() string {
	if f.Kind == Dynamic {
		return ""
	}
	return net.JoinHostPort(f.DestHost, strconv.Itoa(f.DestPort))
}

// String is the forward as ssh -L/-R/-D would take it.
func (f Forward) String() string {
	flag := map[Kind]string{Local: "-L", Remote: "-R", Dynamic: "-D"}[f.Kind]
	b := strconv.Itoa(f.BindPort)
	if f.BindHost != "" {
		b = "[" + f.BindHost + "]:" + b
	}
	if f.Kind == Dynamic {
		return flag + " " + b
	}
	return flag + " " + b + ":" + f.DestAddr()
}

// Spec is what a tunnel needs from one Host's effective ssh settings.
type Spec struct {
	Host                  string // the name given to ssh -G
	HostName              string
	Port                  int
	User                  string
	IdentityFiles         []string // as ssh -G prints them ("~/" not expanded)
	IdentitiesOnly        bool
	UserKnownHostsFiles   []string
	GlobalKnownHostsFiles []string
	StrictHostKeyChecking HostKeyPolicy
	HostKeyAlgorithms     []string // ssh -G's list, used for the algorithms not in known_hosts
	ServerAliveInterval   time.Duration
	ServerAliveCountMax   int
	ConnectTimeout        time.Duration // 0: none
	ExitOnForwardFailure  bool
	Forwards              []Forward // LocalForward, RemoteForward, DynamicForward in that order
	// ProxyJump lists the jump hosts, first to last (nil: direct). Their
	// settings come from Options.ResolveJump. ProxyCommand is refused.
	ProxyJump []Jump
}

// Addr is the server's host:port.
func (s Spec) Addr() string { return net.JoinHostPort(s.HostName, strconv.Itoa(s.Port)) }

// SpecFromSettings reads a Spec from the output of `ssh -G host`.
func SpecFromSettings(host string, s sshconfig.Settings) (Spec, error) {
	sp := Spec{
		Host:                  host,
		HostName:              s.Get("hostname"),
		User:                  s.Get("user"),
		IdentityFiles:         s.All("identityfile"),
		IdentitiesOnly:        sshconfig.ParseYes(s.Get("identitiesonly")),
		UserKnownHostsFiles:   fieldsOf(s.All("userknownhostsfile")),
		GlobalKnownHostsFiles: fieldsOf(s.All("globalknownhostsfile")),
		ExitOnForwardFailure:  sshconfig.ParseYes(s.Get("exitonforwardfailure")),
		ServerAliveCountMax:   DefaultServerAliveCountMax,
	}
	if sp.HostName == "" {
		sp.HostName = host
	}
	if v := s.Get("hostkeyalgorithms"); v != "" {
		sp.HostKeyAlgorithms = strings.Split(v, ",")
	}
	sp.Port = 22
	if v := s.Get("port"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			return Spec{}, fmt.Errorf("read port %q: %w", v, ErrSpec)
		}
		sp.Port = p
	}
	switch v := strings.ToLower(s.Get("stricthostkeychecking")); v {
	case "", "yes", "true", "ask":
		sp.StrictHostKeyChecking = HostKeyStrict
	case "accept-new":
		sp.StrictHostKeyChecking = HostKeyAcceptNew
	case "no", "false", "off":
		sp.StrictHostKeyChecking = HostKeyOff
	default:
		return Spec{}, fmt.Errorf("read stricthostkeychecking %q: %w", v, ErrSpec)
	}
	var err error
	if sp.ProxyJump, err = parseJumps(s.Get("proxyjump")); err != nil {
		return Spec{}, err
	}
	if v := s.Get("proxycommand"); sp.ProxyJump == nil && v != "" && !strings.EqualFold(v, "none") {
		return Spec{}, fmt.Errorf("proxycommand %q: ProxyCommand is not supported (ProxyJump is): %w", v, ErrSpec)
	}
	if sp.ServerAliveInterval, err = timeSetting(s, "serveraliveinterval"); err != nil {
		return Spec{}, err
	}
	if sp.ServerAliveInterval == 0 {
		sp.ServerAliveInterval = DefaultServerAliveInterval
	}
	if v := s.Get("serveralivecountmax"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return Spec{}, fmt.Errorf("read serveralivecountmax %q: %w", v, ErrSpec)
		}
		if n > 0 {
			sp.ServerAliveCountMax = n
		}
	}
	if sp.ConnectTimeout, err = timeSetting(s, "connecttimeout"); err != nil {
		return Spec{}, err
	}
	for _, kv := range []struct {
		kind Kind
		key  string
	}{{Local, "localforward"}, {Remote, "remoteforward"}, {Dynamic, "dynamicforward"}} {
		for _, v := range s.All(kv.key) {
			f, err := ParseForward(kv.kind, v)
			if err != nil {
				return Spec{}, err
			}
			sp.Forwards = append(sp.Forwards, f)
		}
	}
	return sp, nil
}

func timeSetting(s sshconfig.Settings, key string) (time.Duration, error) {
	v := s.Get(key)
	if v == "" {
		return 0, nil
	}
	d, err := sshconfig.ParseTime(v)
	if err != nil {
		return 0, fmt.Errorf("read %s %q: %w", key, v, errors.Join(ErrSpec, err))
	}
	return d, nil
}

// fieldsOf splits values that ssh -G prints space-separated on one line.
func fieldsOf(vals []string) []string {
	var out []string
	for _, v := range vals {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// ParseForward parses a forward as ssh -G prints it, or as written in
// ssh_config: "[bind:]port host:hostport" (Local, Remote) or
// "[bind:]port" (Dynamic); addresses may be in brackets. Unix socket
// forwards and remote dynamic forwards are not supported.
func ParseForward(kind Kind, v string) (Forward, error) {
	f := Forward{Kind: kind}
	fields := strings.Fields(v)
	want := 2
	if kind == Dynamic {
		want = 1
	}
	if len(fields) != want {
		return Forward{}, fmt.Errorf("read %s %q: want %d fields: %w", kind, v, want, ErrSpec)
	}
	var err error
	if f.BindHost, f.BindPort, err = splitHostPort(fields[0], true); err != nil {
		return Forward{}, fmt.Errorf("read %s %q: %w", kind, v, err)
	}
	if kind == Dynamic {
		return f, nil
	}
	if strings.Contains(fields[1], "/") {
		return Forward{}, fmt.Errorf("read %s %q: unix socket forwards are not supported: %w", kind, v, ErrSpec)
	}
	if f.DestHost, f.DestPort, err = splitHostPort(fields[1], false); err != nil {
		return Forward{}, fmt.Errorf("read %s %q: %w", kind, v, err)
	}
	if kind == Remote && f.DestHost == "socks" && f.DestPort == 0 {
		return Forward{}, fmt.Errorf("read %s %q: remote dynamic forwards are not supported: %w", kind, v, ErrSpec)
	}
	if f.DestHost == "" || f.DestPort <= 0 {
		return Forward{}, fmt.Errorf("read %s %q: no destination: %w", kind, v, ErrSpec)
	}
	return f, nil
}

// splitHostPort splits "port", "host:port", "[host]:port" or, for IPv6
// without brackets, "a:b::c:port" (the last colon separates the port).
func splitHostPort(s string, hostOptional bool) (string, int, error) {
	var host, port string
	switch i := strings.LastIndex(s, ":"); {
	case strings.HasPrefix(s, "["):
		end := strings.Index(s, "]")
		if end < 0 || !strings.HasPrefix(s[end+1:], ":") {
			return "", 0, fmt.Errorf("bad address %q: %w", s, ErrSpec)
		}
		host, port = s[1:end], s[end+2:]
	case i < 0:
		if !hostOptional {
			return "", 0, fmt.Errorf("no host in %q: %w", s, ErrSpec)
		}
		port = s
	default:
		host, port = s[:i], s[i+1:]
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port in %q: %w", s, ErrSpec)
	}
	return host, p, nil
}
