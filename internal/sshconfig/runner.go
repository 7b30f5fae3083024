package sshconfig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Runner runs a program and returns its standard output. On failure the
// error should carry what the program printed on standard error (as
// *RunError does), since sshd and ssh explain themselves there.
type Runner interface {
	Output(ctx context.Context, name string, args ...string) ([]byte, error)
}

// Exec runs programs with os/exec.
type Exec struct{}

var _ Runner = Exec{}

// RunError is a program that failed.
type RunError struct {
	Cmd    string // name and arguments
	Stderr string // trimmed
	Err    error
}

func (e *RunError) Error() string {
	if e.Stderr == "" {
		return fmt.Sprintf("run %s: %v", e.Cmd, e.Err)
	}
	return fmt.Sprintf("run %s: %v: %s", e.Cmd, e.Err, e.Stderr)
}

func (e *RunError) Unwrap() error { return e.Err }

// Output runs name with args, standard input empty, and returns standard
// output; a failure is a *RunError holding standard error.
func (Exec) Output(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), &RunError{Cmd: strings.Join(append([]string{name}, args...), " "), Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return stdout.Bytes(), nil
}

// CombinedRunner is a Runner that can also return standard output and
// standard error together (ssh -V prints its version on standard error).
type CombinedRunner interface {
	Runner
	CombinedOutput(ctx context.Context, name string, args ...string) ([]byte, error)
}

var _ CombinedRunner = Exec{}

// CombinedOutput runs name with args and returns standard output and
// standard error together.
func (Exec) CombinedOutput(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, &RunError{Cmd: strings.Join(append([]string{name}, args...), " "), Stderr: strings.TrimSpace(string(out)), Err: err}
	}
	return out, nil
}

// Default paths of the OpenSSH binaries (sshd must be called by absolute
// path).
const (
	SSHDPath = "/usr/sbin/sshd"
	SSHPath  = "ssh"
	// SystemDir is where relative Include paths of sshd_config and the
	// system ssh_config are resolved.
	SystemDir = "/etc/ssh"
	// SSHDConfig is sshd's default configuration file.
	SSHDConfig = "/etc/ssh/sshd_config"
)

// ErrCannotEvaluate is wrapped when sshd -T could not run for reasons
// other than the configuration (no privileges, unreadable host keys), so
// a caller may fall back to reading the files.
var ErrCannotEvaluate = errors.New("sshd cannot evaluate its configuration here")

// SSHDOptions select what ServerSettings reads.
type SSHDOptions struct {
	Binary     string      // default SSHDPath
	ConfigFile string      // -f FILE; empty: sshd's default
	Connection *Connection // -C spec: evaluate Match blocks for it
}

// ServerSettings runs `sshd -T` and parses its output. Failures that are
// not about the configuration (no host keys, no privileges) wrap
// ErrCannotEvaluate; configuration errors carry sshd's own message, which
// names the file and line.
func ServerSettings(ctx context.Context, r Runner, o SSHDOptions) (Settings, error) {
	bin := o.Binary
	if bin == "" {
		bin = SSHDPath
	}
	args := []string{"-T"}
	if o.ConfigFile != "" {
		args = append(args, "-f", o.ConfigFile)
	}
	if o.Connection != nil {
		args = append(args, "-C", o.Connection.String())
	}
	out, err := r.Output(ctx, bin, args...)
	if err != nil {
		if cannotEvaluate(err) {
			return nil, fmt.Errorf("read sshd settings: %w: %w", ErrCannotEvaluate, err)
		}
		return nil, fmt.Errorf("read sshd settings: %w", err)
	}
	return ParseEffective(bytes.NewReader(out))
}

// cannotEvaluate tells whether sshd failed for lack of privileges or host
// keys rather than because of its configuration.
func cannotEvaluate(err error) bool {
	var re *RunError
	if !errors.As(err, &re) {
		return false
	}
	if errors.Is(re.Err, exec.ErrNotFound) {
		return false
	}
	for _, s := range []string{"no hostkeys available", "Unable to load host key", "Permission denied", "must be owned by root", "Privilege separation user", "Missing privilege separation directory"} {
		if strings.Contains(re.Stderr, s) {
			// A config error is reported before host keys are loaded.
			return !strings.Contains(re.Stderr, "Bad configuration option") && !strings.Contains(re.Stderr, "line ")
		}
	}
	return false
}

// ClientOptions select what ClientSettings reads.
type ClientOptions struct {
	Binary     string // default SSHPath
	ConfigFile string // -F FILE; empty: ~/.ssh/config and /etc/ssh/ssh_config
	Host       string
	// Options are -o keyword=value options; they win over the files.
	Options []string
}

// ClientSettings runs `ssh -G HOST` and parses its output.
func ClientSettings(ctx context.Context, r Runner, o ClientOptions) (Settings, error) {
	bin := o.Binary
	if bin == "" {
		bin = SSHPath
	}
	if o.Host == "" || strings.HasPrefix(o.Host, "-") {
		return nil, fmt.Errorf("read ssh settings: bad host %q", o.Host)
	}
	args := []string{"-G"}
	if o.ConfigFile != "" {
		args = append(args, "-F", o.ConfigFile)
	}
	for _, opt := range o.Options {
		args = append(args, "-o", opt)
	}
	args = append(args, "--", o.Host)
	out, err := r.Output(ctx, bin, args...)
	if err != nil {
		return nil, fmt.Errorf("read ssh settings for %s: %w", o.Host, err)
	}
	return ParseEffective(bytes.NewReader(out))
}

// Version is an OpenSSH release, e.g. 9.2 from "OpenSSH_9.2p1".
type Version struct{ Major, Minor int }

func (v Version) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less tells whether v is older than w.
func (v Version) Less(w Version) bool {
	return v.Major < w.Major || v.Major == w.Major && v.Minor < w.Minor
}

var versionRE = regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`)

// ParseVersion finds the OpenSSH version in `sshd -V` / `ssh -V` output
// ("OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026").
func ParseVersion(text string) (Version, error) {
	m := versionRE.FindStringSubmatch(text)
	if m == nil {
		return Version{}, fmt.Errorf("parse version: no OpenSSH_N.N in %q", strings.TrimSpace(text))
	}
	major, _ := strconv.Atoi(m[1])
	minor, _ := strconv.Atoi(m[2])
	return Version{major, minor}, nil
}

// BinaryVersion runs `BINARY -V` (sshd and ssh print their version on
// standard error; sshd before 9.8 has no -V and prints it with its usage,
// exiting non-zero) and parses it.
func BinaryVersion(ctx context.Context, r Runner, binary string) (Version, error) {
	var out []byte
	var err error
	if cr, ok := r.(CombinedRunner); ok {
		out, err = cr.CombinedOutput(ctx, binary, "-V")
	} else {
		out, err = r.Output(ctx, binary, "-V")
	}
	text := string(out)
	var re *RunError
	if errors.As(err, &re) {
		text += "\n" + re.Stderr
	} else if err != nil {
		return Version{}, fmt.Errorf("read %s version: %w", binary, err)
	}
	v, perr := ParseVersion(text)
	if perr != nil {
		if err != nil {
			return Version{}, fmt.Errorf("read %s version: %w", binary, err)
		}
		return Version{}, fmt.Errorf("read %s version: %w", binary, perr)
	}
	return v, nil
}
