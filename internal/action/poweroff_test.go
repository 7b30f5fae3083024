package action_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/action"
)

// fakeRunner records argv instead of running anything.
type fakeRunner struct {
	calls [][]string
	out   []byte
	err   error
}

func (f *fakeRunner) Run(_ context.Context, argv []string) ([]byte, error) {
	f.calls = append(f.calls, argv)
	return f.out, f.err
}

// fakeBus answers PowerOff with via and err, counting the calls.
type fakeBus struct {
	via   string
	err   error
	calls int
}

func (f *fakeBus) PowerOff(context.Context) (string, error) {
	f.calls++
	return f.via, f.err
}

// noBus is a machine without a D-Bus system bus.
func noBus() *fakeBus {
	return &fakeBus{err: fmt.Errorf("connect to unix:path=/run/dbus/system_bus_socket: %w: no such file or directory", action.ErrNoBus)}
}

// TestMain points the system bus at a socket that does not exist, so
// that no test can power off the machine it runs on through a Poweroff
// whose Bus it forgot to set.
func TestMain(m *testing.M) {
	os.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/connwatch-action-test/system_bus_socket")
	os.Exit(m.Run())
}

func TestPoweroffThroughBus(t *testing.T) {
	run := &fakeRunner{}
	bus := &fakeBus{via: "logind over D-Bus"}
	p := &action.Poweroff{Bus: bus, Runner: run, SystemdDir: t.TempDir(), LookPath: lookIn([]string{"systemctl", "shutdown", "poweroff"})}
	res, err := p.Do(t.Context(), action.Request{Reason: "idle"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if want := "powering off through logind over D-Bus: idle"; res.Summary != want || res.Action != "poweroff" {
		t.Errorf("result %+v, want %q", res, want)
	}
	if bus.calls != 1 || len(run.calls) != 0 {
		t.Errorf("%d bus calls and commands %q, want 1 bus call and no command", bus.calls, run.calls)
	}
}

// TestPoweroffBusRefused: a refusal over D-Bus (an inhibitor, a denied
// authorization) is the answer; no command is tried behind its back.
func TestPoweroffBusRefused(t *testing.T) {
	run := &fakeRunner{}
	refused := errors.New("ask logind to power off: Operation denied due to active block inhibitor")
	p := &action.Poweroff{Bus: &fakeBus{err: refused}, Runner: run, SystemdDir: t.TempDir(), LookPath: lookIn([]string{"systemctl"})}
	_, err := p.Do(t.Context(), action.Request{})
	if !errors.Is(err, refused) || errors.Is(err, action.ErrNoBus) {
		t.Errorf("Do = %v, want the bus's refusal", err)
	}
	if len(run.calls) != 0 {
		t.Errorf("ran %q after a refusal, want nothing", run.calls)
	}
}

func TestPoweroffChoosesCommand(t *testing.T) {
	systemd := t.TempDir()
	noSystemd := filepath.Join(t.TempDir(), "absent")
	all := []string{"systemctl", "shutdown", "poweroff"}
	for _, tt := range []struct {
		name       string
		systemdDir string
		installed  []string
		want       []string
	}{
		{"systemd", systemd, all, []string{"/sbin/systemctl", "poweroff"}},
		{"no systemd", noSystemd, all, []string{"/sbin/shutdown", "-h", "now"}},
		{"systemd without systemctl", systemd, []string{"shutdown", "poweroff"}, []string{"/sbin/shutdown", "-h", "now"}},
		{"only poweroff", noSystemd, []string{"systemctl", "poweroff"}, []string{"/sbin/poweroff"}},
		{"busybox", systemd, []string{"poweroff"}, []string{"/sbin/poweroff"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, bus := range []struct {
				bus *fakeBus
				why string
			}{
				{noBus(), "no D-Bus system bus"},
				{&fakeBus{err: fmt.Errorf("%w: logind: ServiceUnknown; systemd: ServiceUnknown", action.ErrNoPowerService)}, "neither logind nor systemd on the D-Bus system bus"},
			} {
				run := &fakeRunner{}
				p := &action.Poweroff{Bus: bus.bus, Runner: run, SystemdDir: tt.systemdDir, LookPath: lookIn(tt.installed)}
				res, err := p.Do(t.Context(), action.Request{Reason: "idle"})
				if err != nil {
					t.Fatalf("Do: %v", err)
				}
				if diff := cmp.Diff([][]string{tt.want}, run.calls); diff != "" {
					t.Errorf("argv (-want +got):\n%s", diff)
				}
				if want := "powering off with " + strings.Join(tt.want, " ") + " (" + bus.why + "): idle"; res.Summary != want {
					t.Errorf("summary %q, want %q", res.Summary, want)
				}
				if bus.bus.calls != 1 {
					t.Errorf("%d bus calls, want D-Bus asked once before any command", bus.bus.calls)
				}
			}
		})
	}
}

func TestPoweroffErrors(t *testing.T) {
	run := &fakeRunner{}
	p := &action.Poweroff{Bus: noBus(), Runner: run, SystemdDir: t.TempDir(), LookPath: lookIn(nil)}
	_, err := p.Do(t.Context(), action.Request{})
	if !errors.Is(err, action.ErrNoPoweroffCommand) || !errors.Is(err, action.ErrNoBus) || len(run.calls) != 0 {
		t.Errorf("no bus, nothing installed: %v, %d runs; want ErrNoBus and ErrNoPoweroffCommand and no run", err, len(run.calls))
	}
	if want := "power off: connect to unix:path=/run/dbus/system_bus_socket: no D-Bus system bus: no such file or directory; look for systemctl, shutdown, poweroff in PATH: no power-off command found"; err == nil || err.Error() != want {
		t.Errorf("error %q,\nwant %q", err, want)
	}

	failed := errors.New("exit status 1")
	run = &fakeRunner{out: []byte("Failed to power off system via logind: Access denied\n"), err: failed}
	p = &action.Poweroff{Bus: noBus(), Runner: run, SystemdDir: t.TempDir(), LookPath: lookIn([]string{"systemctl"})}
	_, err = p.Do(t.Context(), action.Request{})
	if !errors.Is(err, failed) || !errors.Is(err, action.ErrNoBus) || !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("failing command: %v, want why D-Bus was not used, the runner's error and output", err)
	}
}

// TestPoweroffRunsStandIn runs the real SystemBus against a socket that
// does not exist, then the real ExecRunner against harmless stand-ins named
// systemctl, shutdown and poweroff, found through a PATH that holds
// nothing else.
func TestPoweroffRunsStandIn(t *testing.T) {
	bin := t.TempDir()
	log := filepath.Join(t.TempDir(), "argv")
	for _, name := range []string{"systemctl", "shutdown", "poweroff"} {
		script := "#!/bin/sh\necho \"${0##*/} $*\" >> '" + log + "'\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", bin)
	for _, name := range []string{"systemctl", "shutdown", "poweroff"} {
		if path, err := exec.LookPath(name); err != nil || filepath.Dir(path) != bin {
			t.Fatalf("PATH override failed: %s resolves to %q, %v", name, path, err)
		}
	}

	for _, tt := range []struct {
		systemdDir string
		want       string
	}{
		{t.TempDir(), "systemctl poweroff\n"},
		{filepath.Join(t.TempDir(), "absent"), "shutdown -h now\n"},
	} {
		_ = os.Remove(log)
		bus := action.SystemBus{Address: "unix:path=" + filepath.Join(t.TempDir(), "no_bus_socket")}
		res, err := (&action.Poweroff{Bus: bus, SystemdDir: tt.systemdDir}).Do(t.Context(), action.Request{})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		got, err := os.ReadFile(log)
		if err != nil || string(got) != tt.want {
			t.Errorf("stand-in saw %q (%v), want %q; result %q", got, err, tt.want, res.Summary)
		}
	}
}

func lookIn(installed []string) func(string) (string, error) {
	return func(name string) (string, error) {
		for _, n := range installed {
			if n == name {
				return "/sbin/" + name, nil
			}
		}
		return "", exec.ErrNotFound
	}
}
