package action

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// DefaultSystemdDir exists exactly when systemd is PID 1 (sd_booted(3)).
const DefaultSystemdDir = "/run/systemd/system"

// ErrNoPoweroffCommand is returned when none of systemctl, shutdown and
// poweroff can be found.
var ErrNoPoweroffCommand = errors.New("no power-off command found")

// Poweroff shuts the operating system down: `systemctl poweroff` when
// systemd is PID 1, else `shutdown -h now`, else `poweroff`. Do returns once
// the command has accepted the request; the machine goes down after.
type Poweroff struct {
	// Runner runs the chosen command; nil means ExecRunner.
	Runner Runner
	// SystemdDir is checked for existence to tell whether systemd is PID 1;
	// empty means DefaultSystemdDir.
	SystemdDir string
	// LookPath finds a command in PATH; nil means exec.LookPath.
	LookPath func(file string) (string, error)
	// Timeout bounds the command; zero means DefaultTimeout.
	Timeout time.Duration
}

var _ Action = (*Poweroff)(nil)

// Name implements Action.
func (*Poweroff) Name() string { return NamePoweroff }

// Do implements Action.
func (p *Poweroff) Do(ctx context.Context, r Request) (Result, error) {
	argv, err := p.argv()
	if err != nil {
		return Result{}, fmt.Errorf("power off: %w", err)
	}
	runner := p.Runner
	if runner == nil {
		runner = ExecRunner{}
	}
	ctx, cancel := context.WithTimeout(ctx, timeoutOr(p.Timeout))
	defer cancel()
	cmdline := strings.Join(argv, " ")
	if out, err := runner.Run(ctx, argv); err != nil {
		if tail := lastLines(out, 3); tail != "" {
			return Result{}, fmt.Errorf("power off: run %s: %w: %s", cmdline, err, tail)
		}
		return Result{}, fmt.Errorf("power off: run %s: %w", cmdline, err)
	}
	return Result{Action: NamePoweroff, Summary: "powering off with " + cmdline + describe(r)}, nil
}

// argv chooses the power-off command for this machine.
func (p *Poweroff) argv() ([]string, error) {
	look := p.LookPath
	if look == nil {
		look = exec.LookPath
	}
	dir := p.SystemdDir
	if dir == "" {
		dir = DefaultSystemdDir
	}
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		if path, err := look("systemctl"); err == nil {
			return []string{path, "poweroff"}, nil
		}
	}
	if path, err := look("shutdown"); err == nil {
		return []string{path, "-h", "now"}, nil
	}
	if path, err := look("poweroff"); err == nil {
		return []string{path}, nil
	}
	return nil, fmt.Errorf("look for systemctl, shutdown, poweroff in PATH: %w", ErrNoPoweroffCommand)
}
