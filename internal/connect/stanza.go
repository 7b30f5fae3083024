package connect

import (
	"fmt"
	"regexp"
	"strings"
)

// Stanza is an ssh_config Host block that connects through connwatch
// connect.
type Stanza struct {
	// Host is the name given to ssh: letters, digits, '.', '_', '-'.
	Host string
	// Instance is an instance id or name:TAG, the HostName.
	Instance string
	// Executable is the connwatch to run.
	Executable string
	// Flags go between "connect" and "%h %p", e.g. --region eu-west-1.
	Flags []string
}

var (
	// At most 253 bytes, checked apart: a counted repetition would
	// compile to 252 copies (1.5 ms and 230 KB at every start).
	hostRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	// safeRE is what passes through ssh_config and sh -c unquoted. %
	// is not in it: ssh expands % tokens in ProxyCommand.
	safeRE = regexp.MustCompile(`^[A-Za-z0-9._+=@:,/-]+$`)
)

// SSHConfig returns the stanza's text. It refuses anything that could
// add ssh_config lines or shell syntax: a Host that is a pattern or has
// spaces, a Name tag or a flag outside a safe set of characters; the
// executable's path is quoted for the shell ssh runs ProxyCommand with.
func (s Stanza) SSHConfig() (string, error) {
	if len(s.Host) > 253 || !hostRE.MatchString(s.Host) {
		return "", fmt.Errorf("host %q: want a plain name (letters, digits, '.', '_', '-'), not a pattern: %w", s.Host, ErrBadTarget)
	}
	t, err := ParseTarget(s.Instance)
	if err != nil {
		return "", err
	}
	if t.Name != "" && !safeRE.MatchString(t.Name) {
		return "", fmt.Errorf("instance %q: a Name tag with spaces or other special characters cannot go into ssh_config; give the instance id: %w", s.Instance, ErrBadTarget)
	}
	exe, err := shellQuote(s.Executable)
	if err != nil {
		return "", err
	}
	cmd := []string{exe, "connect"}
	for _, f := range s.Flags {
		if !safeRE.MatchString(f) {
			return "", fmt.Errorf("flag %q: characters that cannot go into ProxyCommand: %w", f, ErrBadTarget)
		}
		cmd = append(cmd, f)
	}
	cmd = append(cmd, "%h", "%p")
	var b strings.Builder
	fmt.Fprintf(&b, "Host %s\n", s.Host)
	fmt.Fprintf(&b, "    HostName %s\n", s.Instance)
	fmt.Fprintf(&b, "    HostKeyAlias %s\n", s.Host)
	fmt.Fprintf(&b, "    ProxyCommand %s\n", strings.Join(cmd, " "))
	return b.String(), nil
}

// shellQuote quotes a path for sh -c inside ProxyCommand: single quotes
// if it needs any, and % doubled, as ssh expands % tokens first.
func shellQuote(path string) (string, error) {
	if path == "" || strings.ContainsAny(path, "\x00\n\r#") {
		return "", fmt.Errorf("executable %q: cannot go into ProxyCommand: %w", path, ErrBadTarget)
	}
	path = strings.ReplaceAll(path, "%", "%%")
	if safeRE.MatchString(path) {
		return path, nil
	}
	return "'" + strings.ReplaceAll(path, "'", `'\''`) + "'", nil
}
