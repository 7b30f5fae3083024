package sshconfig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// ClientEnv is what EvaluateClient needs to know about the local user.
// Zero fields are filled from the current user (as ssh does, from the
// password database rather than $HOME).
type ClientEnv struct {
	LocalUser string // Match localuser, default User
	Home      string // ~ and %d
	// User is the remote user given on the command line (user@host);
	// empty: the User keyword, else LocalUser.
	User string
}

func (e ClientEnv) fill() (ClientEnv, error) {
	if e.LocalUser == "" || e.Home == "" {
		u, err := user.Current()
		if err != nil {
			return e, fmt.Errorf("look up current user: %w", err)
		}
		if e.LocalUser == "" {
			e.LocalUser = u.Username
		}
		if e.Home == "" {
			e.Home = u.HomeDir
		}
	}
	return e, nil
}

// clientMultiValued are ssh_config keywords whose every line adds values.
var clientMultiValued = map[string]bool{
	"identityfile": true, "certificatefile": true, "sendenv": true, "setenv": true,
	"localforward": true, "remoteforward": true, "dynamicforward": true,
}

// EvaluateClient returns the settings ssh would use for host, read from f
// (a Client dialect file, Includes expanded) the way `ssh -G` prints them
// for the keywords connwatch uses: Host and Match blocks are evaluated top
// to bottom, the first value of a keyword wins, forwards and identity
// files accumulate, and defaults and token expansion follow OpenSSH 9.2.
// Keywords are not otherwise normalised: values connwatch does not use are
// returned as written. The notes explain blocks that could not be
// evaluated (Match exec, canonical, final), which are taken as not
// matching.
func EvaluateClient(f *File, host string, env ClientEnv) (Settings, []string, error) {
	return evaluateClient([]*File{f}, host, env)
}

func evaluateClient(files []*File, host string, env ClientEnv) (Settings, []string, error) {
	env, err := env.fill()
	if err != nil {
		return nil, nil, err
	}
	origHost := host
	s := Settings{}
	var notes []string
	for _, f := range files {
		if f == nil {
			continue
		}
		verdict := map[*Block]bool{}
		for _, d := range f.Directives {
			applies := true
			for _, b := range d.Conditions {
				ok, seen := verdict[b]
				if !seen {
					var note string
					ok, note = matchClientBlock(b, origHost, s, env)
					verdict[b] = ok
					if note != "" {
						notes = append(notes, note)
					}
				}
				if !ok {
					applies = false
					break
				}
			}
			if !applies {
				continue
			}
			if err := setClient(s, d); err != nil {
				return nil, notes, err
			}
		}
	}
	if err := clientDefaults(s, origHost, env); err != nil {
		return nil, notes, err
	}
	return s, notes, nil
}

// setClient applies one directive: multi-valued keywords accumulate
// (duplicates dropped, as ssh does), others keep their first value.
func setClient(s Settings, d Directive) error {
	where := func(msg string) error { return &ParseError{File: d.File, Line: d.Line, Msg: msg} }
	if len(d.Args) == 0 {
		return where(fmt.Sprintf("%s: missing argument", d.Key))
	}
	v := strings.Join(d.Args, " ")
	switch d.Key {
	case "localforward", "remoteforward", "dynamicforward":
		fv, err := formatForward(d.Key, d.Args)
		if err != nil {
			return where(err.Error())
		}
		v = fv
	case "serveraliveinterval", "connecttimeout":
		if d.Key == "connecttimeout" && strings.EqualFold(v, "none") {
			break
		}
		t, err := ParseTime(v)
		if err != nil {
			return where(fmt.Sprintf("%s: invalid time value %q", d.Key, v))
		}
		v = strconv.Itoa(int(t.Seconds()))
	case "serveralivecountmax", "port":
		if _, err := strconv.Atoi(v); err != nil {
			return where(fmt.Sprintf("%s: bad number %q", d.Key, v))
		}
	case "stricthostkeychecking":
		switch strings.ToLower(v) {
		case "yes", "true":
			v = "true"
		case "no", "off", "false":
			v = "false"
		case "ask", "accept-new":
			v = strings.ToLower(v)
		default:
			return where(fmt.Sprintf("stricthostkeychecking: unsupported %q", v))
		}
	case "exitonforwardfailure", "identitiesonly":
		switch strings.ToLower(v) {
		case "yes", "true":
			v = "yes"
		case "no", "false":
			v = "no"
		default:
			return where(fmt.Sprintf("%s: unsupported %q", d.Key, v))
		}
	}
	if clientMultiValued[d.Key] {
		for _, old := range s[d.Key] {
			if old == v {
				return nil
			}
		}
		s[d.Key] = append(s[d.Key], v)
	} else if !s.Has(d.Key) {
		s[d.Key] = []string{v}
	}
	return nil
}

// matchClientBlock evaluates a Host or Match line of ssh_config at the
// point it is reached, with the settings read so far.
func matchClientBlock(b *Block, origHost string, s Settings, env ClientEnv) (bool, string) {
	if b.Keyword == "host" {
		got := false
		for _, p := range b.Criteria {
			neg := strings.HasPrefix(p, "!")
			if neg {
				p = p[1:]
			}
			if wildcard(p, origHost) {
				if neg {
					return false, ""
				}
				got = true
			}
		}
		return got, ""
	}
	host := origHost
	if hn := s.Get("hostname"); hn != "" {
		host = strings.ReplaceAll(hn, "%h", origHost)
	}
	ruser := s.Get("user")
	if env.User != "" {
		ruser = env.User
	}
	if ruser == "" {
		ruser = env.LocalUser
	}
	args := b.Criteria
	result := true
	for i := 0; i < len(args); i++ {
		crit := strings.ToLower(args[i])
		neg := strings.HasPrefix(crit, "!")
		crit = strings.TrimPrefix(crit, "!")
		var ok bool
		switch crit {
		case "all":
			ok = true
		case "canonical", "final", "exec", "localnetwork", "tagged":
			return false, fmt.Sprintf("%s: Match %s is not supported without ssh; block skipped", b, crit)
		case "host", "originalhost", "user", "localuser":
			if i+1 >= len(args) {
				return false, fmt.Sprintf("%s: Match %s without an argument; block skipped", b, crit)
			}
			i++
			list := args[i]
			switch crit {
			case "host":
				ok = matchList(host, strings.ToLower(list))
			case "originalhost":
				ok = matchList(origHost, strings.ToLower(list))
			case "user":
				ok = matchList(ruser, list)
			case "localuser":
				ok = matchList(env.LocalUser, list)
			}
		default:
			return false, fmt.Sprintf("%s: unknown Match criterion %q; block skipped", b, args[i])
		}
		if ok == neg {
			result = false
		}
	}
	return result, ""
}

// clientDefaults fills what ssh -G prints for keywords left unset, and
// expands tokens as ssh does before printing.
func clientDefaults(s Settings, origHost string, env ClientEnv) error {
	host := origHost
	if hn := s.Get("hostname"); hn != "" {
		host = strings.ReplaceAll(hn, "%h", origHost)
	}
	host = strings.ToLower(host)
	s["hostname"] = []string{host}
	if env.User != "" {
		s["user"] = []string{env.User}
	} else if !s.Has("user") {
		s["user"] = []string{env.LocalUser}
	}
	def := func(k string, v ...string) {
		if !s.Has(k) {
			s[k] = v
		}
	}
	def("port", "22")
	def("identityfile", "~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk", "~/.ssh/id_ed25519", "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss", "~/.ssh/id_dsa")
	def("identitiesonly", "no")
	def("stricthostkeychecking", "ask")
	def("serveraliveinterval", "0")
	def("serveralivecountmax", "3")
	def("connecttimeout", "none")
	def("exitonforwardfailure", "no")
	def("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2")
	def("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2")
	if strings.EqualFold(s.Get("proxyjump"), "none") {
		delete(s, "proxyjump")
	}
	tokens := strings.NewReplacer("%%", "%", "%h", host, "%p", s.Get("port"), "%r", s.Get("user"), "%u", env.LocalUser, "%d", env.Home, "%n", origHost)
	var files []string
	for _, p := range strings.Fields(s.Get("userknownhostsfile")) {
		files = append(files, tokens.Replace(expandTilde(p, env.Home)))
	}
	s["userknownhostsfile"] = []string{strings.Join(files, " ")}
	return nil
}

func expandTilde(p, home string) string {
	if p == "~" {
		return home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(home, p[2:])
	}
	return p
}

// formatForward normalises a forward as ssh -G prints it: listen
// "port" or "[host]:port", connect "[host]:port".
func formatForward(key string, args []string) (string, error) {
	var listen, connect string
	switch {
	case key == "dynamicforward" && len(args) == 1:
		listen = args[0]
	case key == "remoteforward" && len(args) == 1:
		listen, connect = args[0], "socks:0"
	case key != "dynamicforward" && len(args) == 2:
		listen, connect = args[0], args[1]
	default:
		return "", fmt.Errorf("%s: bad forwarding specification %q", key, strings.Join(args, " "))
	}
	lh, lp, err := splitHostPort(listen, true)
	if err != nil {
		return "", fmt.Errorf("%s: %w", key, err)
	}
	out := lp
	if lh != "" {
		out = "[" + lh + "]:" + lp
	}
	if connect != "" {
		if strings.HasPrefix(connect, "/") {
			return out + " " + connect, nil
		}
		ch, cp, err := splitHostPort(connect, false)
		if err != nil || ch == "" {
			return "", fmt.Errorf("%s: bad forwarding target %q", key, connect)
		}
		out += " [" + ch + "]:" + cp
	}
	return out, nil
}

// splitHostPort splits "port", "host:port" or "[host]:port".
func splitHostPort(v string, hostOptional bool) (string, string, error) {
	if strings.HasPrefix(v, "/") && hostOptional {
		return "", v, nil
	}
	host, port := "", v
	if strings.HasPrefix(v, "[") {
		end := strings.Index(v, "]:")
		if end < 0 {
			return "", "", fmt.Errorf("bad address %q", v)
		}
		host, port = v[1:end], v[end+2:]
	} else if i := strings.LastIndexByte(v, ':'); i >= 0 {
		host, port = v[:i], v[i+1:]
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", fmt.Errorf("bad port in %q", v)
	}
	if host == "" && !hostOptional {
		return "", "", fmt.Errorf("no host in %q", v)
	}
	return host, port, nil
}

// ErrParsedFallback is wrapped in the note ClientSettingsOrParse returns
// when the ssh binary is missing and the files were parsed instead.
var ErrParsedFallback = errors.New("ssh not installed: settings parsed from ssh_config")

// SystemClientConfig is the system-wide ssh_config.
const SystemClientConfig = "/etc/ssh/ssh_config"

// ParseClientSettings evaluates ssh_config files for o.Host without
// running ssh: o.ConfigFile alone if set, else ~/.ssh/config then
// /etc/ssh/ssh_config (missing files skipped). Notes list Match blocks
// that could not be evaluated.
func ParseClientSettings(o ClientOptions, env ClientEnv) (Settings, []string, error) {
	if o.Host == "" || strings.HasPrefix(o.Host, "-") {
		return nil, nil, fmt.Errorf("parse ssh settings: bad host %q", o.Host)
	}
	env, err := env.fill()
	if err != nil {
		return nil, nil, err
	}
	userDir := filepath.Join(env.Home, ".ssh")
	type src struct{ path, base string }
	var srcs []src
	if o.ConfigFile != "" {
		srcs = []src{{o.ConfigFile, userDir}}
	} else {
		srcs = []src{{filepath.Join(userDir, "config"), userDir}, {SystemClientConfig, SystemDir}}
	}
	var files []*File
	if len(o.Options) > 0 {
		var text strings.Builder
		for _, opt := range o.Options {
			text.WriteString(opt + "\n")
		}
		f, err := Parse(strings.NewReader(text.String()), "command line", Client, userDir)
		if err != nil {
			return nil, nil, fmt.Errorf("parse ssh settings for %s: %w", o.Host, err)
		}
		files = append(files, f)
	}
	for _, sc := range srcs {
		f, err := ReadFile(sc.path, Client, sc.base)
		if err != nil {
			if o.ConfigFile == "" && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, nil, fmt.Errorf("parse ssh settings for %s: %w", o.Host, err)
		}
		files = append(files, f)
	}
	s, notes, err := evaluateClient(files, o.Host, env)
	if err != nil {
		return nil, notes, fmt.Errorf("parse ssh settings for %s: %w", o.Host, err)
	}
	return s, notes, nil
}

// ClientResult is what ClientSettingsOrParse found.
type ClientResult struct {
	Settings Settings
	// Parsed is true when ssh was not installed and the files were
	// parsed; Notes then say what the parser could not evaluate.
	Parsed bool
	Notes  []string
}

// ClientSettingsOrParse runs `ssh -G` (ClientSettings) and, when the ssh
// binary is not found, parses the configuration files instead.
func ClientSettingsOrParse(ctx context.Context, r Runner, o ClientOptions) (ClientResult, error) {
	s, err := ClientSettings(ctx, r, o)
	if err == nil || !errors.Is(err, exec.ErrNotFound) {
		return ClientResult{Settings: s}, err
	}
	s, notes, perr := ParseClientSettings(o, ClientEnv{})
	if perr != nil {
		return ClientResult{}, fmt.Errorf("%w; %w", err, perr)
	}
	return ClientResult{Settings: s, Parsed: true, Notes: notes}, nil
}
