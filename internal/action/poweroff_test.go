package action_test

import (
	"context"
	"errors"
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
			run := &fakeRunner{}
			p := &action.Poweroff{Runner: run, SystemdDir: tt.systemdDir, LookPath: lookIn(tt.installed)}
			res, err := p.Do(t.Context(), action.Request{Reason: "idle"})
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			if diff := cmp.Diff([][]string{tt.want}, run.calls); diff != "" {
				t.Errorf("argv (-want +got):\n%s", diff)
			}
			if want := "powering off with " + strings.Join(tt.want, " ") + ": idle"; res.Summary != want {
				t.Errorf("summary %q, want %q", res.Summary, want)
			}
		})
	}
}

func TestPoweroffErrors(t *testing.T) {
	run := &fakeRunner{}
	p := &action.Poweroff{Runner: run, SystemdDir: t.TempDir(), LookPath: lookIn(nil)}
	if _, err := p.Do(t.Context(), action.Request{}); !errors.Is(err, action.ErrNoPoweroffCommand) || len(run.calls) != 0 {
		t.Errorf("nothing installed: %v, %d runs; want ErrNoPoweroffCommand and no run", err, len(run.calls))
	}

	failed := errors.New("exit status 1")
	run = &fakeRunner{out: []byte("Failed to power off system via logind: Access denied\n"), err: failed}
	p = &action.Poweroff{Runner: run, SystemdDir: t.TempDir(), LookPath: lookIn([]string{"systemctl"})}
	_, err := p.Do(t.Context(), action.Request{})
	if !errors.Is(err, failed) || !strings.Contains(err.Error(), "Access denied") {
		t.Errorf("failing command: %v, want the runner's error and output", err)
	}
}

// TestPoweroffRunsStandIn runs the real ExecRunner against harmless
// stand-ins named systemctl, shutdown and poweroff, found through a PATH
// that holds nothing else.
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
		res, err := (&action.Poweroff{SystemdDir: tt.systemdDir}).Do(t.Context(), action.Request{})
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
