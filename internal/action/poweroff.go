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

// Poweroff shuts the operating system down through systemd over D-Bus
// (see SystemBus). Only when there is no system bus, or neither logind nor
// systemd is on it, does it run a command: `systemctl poweroff` when
// systemd is PID 1 (it still reaches systemd through its private socket),
// else `shutdown -h now`, else `poweroff`. A refusal over D-Bus (an
// inhibitor lock, a denied authorization) is an error, not a reason to try
// a command that would be refused alike. Do returns once the request was
// accepted; the machine goes down after.
type Poweroff struct {
	// Bus asks systemd over D-Bus; nil means SystemBus{}.
	Bus PowerBus
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
	ctx, cancel := context.WithTimeout(ctx, timeoutOr(p.Timeout))
	defer cancel()
	bus := p.Bus
	if bus == nil {
		bus = SystemBus{}
	}
	via, err := bus.PowerOff(ctx)
	if err == nil {
		return Result{Action: NamePoweroff, Summary: "powering off through " + via + describe(r)}, nil
	}
	if !errors.Is(err, ErrNoBus) && !errors.Is(err, ErrNoPowerService) {
		return Result{}, fmt.Errorf("power off: %w", err)
	}
	busErr := err
	argv, err := p.argv()
	if err != nil {
		return Result{}, fmt.Errorf("power off: %w; %w", busErr, err)
	}
	runner := p.Runner
	if runner == nil {
		runner = ExecRunner{}
	}
	cmdline := strings.Join(argv, " ")
	if out, err := runner.Run(ctx, argv); err != nil {
		if tail := lastLines(out, 3); tail != "" {
			return Result{}, fmt.Errorf("power off: %w; run %s: %w: %s", busErr, cmdline, err, tail)
		}
		return Result{}, fmt.Errorf("power off: %w; run %s: %w", busErr, cmdline, err)
	}
	why := ErrNoBus
	if !errors.Is(busErr, ErrNoBus) {
		why = ErrNoPowerService
	}
	return Result{Action: NamePoweroff, Summary: "powering off with " + cmdline + " (" + why.Error() + ")" + describe(r)}, nil
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
