package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/connwatch/connwatch/internal/config"
)

// TestConfigCheckRefusesNonsense: the two files of the issue, which
// config check once called ok (the agent then allocated 7 GB, or was held
// up forever), are refused naming the file, the key and the value.
func TestConfigCheckRefusesNonsense(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ name, text, want string }{
		{"window.toml", "[idle]\nperiod = \"1s\"\nidle_after = \"2000000h\"\n", "window.toml: idle.idle_after = 2000000h0m0s: "},
		{"load.toml", "[idle]\nkeep_awake_load = nan\n", "load.toml: idle.keep_awake_load = NaN: must be a finite number"},
	}
	for _, tt := range tests {
		path := filepath.Join(dir, tt.name)
		if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, []string{"config", "check", path})
		if code != exitFailure || stdout != "" || !strings.Contains(stderr, tt.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want %d and %q", tt.name, code, stdout, stderr, exitFailure, tt.want)
		}
	}
}

// TestAgentFlagsValidated: flags go through the same Validate as the file,
// after they are merged into it, and a bad value is a usage error.
func TestAgentFlagsValidated(t *testing.T) {
	resolve := func(args ...string) error {
		f := &agentFlags{}
		fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(append([]string{"--state-dir", t.TempDir()}, args...)); err != nil {
			t.Fatal(err)
		}
		_, err := f.resolve(fs)
		return err
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--period", "1s", "--idle-after", "2000000h"}, "idle.idle_after = 2000000h0m0s"},
		{[]string{"--period", "1h", "--idle-after", "25h"}, "at most 24h0m0s"},
		{[]string{"--keep-awake-load", "NaN"}, "idle.keep_awake_load = NaN"},
		{[]string{"--keep-awake-load", "+Inf"}, "idle.keep_awake_load = +Inf"},
		{[]string{"--keep-awake-load", "-inf"}, "idle.keep_awake_load = -Inf"},
		{[]string{"--boot-grace", "-1s"}, "idle.boot_grace = -1s: must not be negative"},
		{[]string{"--start-hold-max", "-1m"}, "idle.start_hold_max = -1m0s: must not be negative"},
		{[]string{"--cloudwatch-batch", "-1m"}, "cloudwatch.batch = -1m0s: must not be negative"},
		{[]string{"--datapoints-to-alarm", "9223372036854775807"}, "idle.datapoints_to_alarm = 9223372036854775807"},
		{[]string{"--scan-interval", "2000000h"}, "scan_interval = 2000000h0m0s"},
	}
	for _, tt := range tests {
		err := resolve(tt.args...)
		var ue usageError
		if !errors.As(err, &ue) || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want a usage error with %q", tt.args, err, tt.want)
		}
	}
	if err := resolve("--period", "1s", "--idle-after", "24h", "--keep-awake-load", "1.5"); err != nil {
		t.Errorf("one day of 1s periods: %v", err)
	}
}

// --start-hold-max overrides idle.start_hold_max, and the start hold is
// on only with an EC2 action.
func TestStartHoldMaxFlag(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "connwatch.toml")
	if err := os.WriteFile(path, []byte("state_dir = \""+dir+"\"\n[idle]\nstart_hold_max = \"30m\"\n[action]\ntype = \"ec2-stop\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	resolve := func(args ...string) config.Agent {
		t.Helper()
		f := &agentFlags{}
		fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(append([]string{"--config", path}, args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.resolve(fs)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	if got := resolve().StartHoldMax(); got != 30*time.Minute {
		t.Errorf("from the file: %v, want 30m", got)
	}
	if got := resolve("--start-hold-max", "10m").StartHoldMax(); got != 10*time.Minute {
		t.Errorf("--start-hold-max 10m: %v", got)
	}
	if got := resolve("--start-hold-max", "0").StartHoldMax(); got != 0 {
		t.Errorf("--start-hold-max 0: %v, want off", got)
	}
	if got := resolve("--action", "poweroff").StartHoldMax(); got != 0 {
		t.Errorf("--action poweroff: %v, want off (not an EC2 action)", got)
	}
}
