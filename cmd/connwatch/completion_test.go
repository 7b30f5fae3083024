package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/connwatch/connwatch/internal/tunnel"
)

// complete asks connwatch for completions as the shell scripts do (the
// hidden __complete command) and returns the values and the directive.
func complete(t *testing.T, args ...string) (values []string, directive string) {
	t.Helper()
	code, stdout, stderr := runCLI(t, append([]string{"__complete"}, args...))
	if code != exitOK {
		t.Fatalf("__complete %q: exit %d: %s", args, code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	for _, l := range lines[:len(lines)-1] {
		v, _, _ := strings.Cut(l, "\t") // value, then description
		values = append(values, v)
	}
	return values, lines[len(lines)-1]
}

func TestCompletion(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"agent", "--action", ""}, []string{"dry-run", "poweroff", "ec2-stop", "ec2-hibernate", "command"}},
		{[]string{"agent", "--action", "ec2"}, []string{"ec2-stop", "ec2-hibernate"}},
		{[]string{"agent", "--treat-missing-data", ""}, []string{"notBreaching", "missing", "breaching", "ignore"}},
		{[]string{"agent", "--log-level", ""}, []string{"debug", "info", "warn", "error"}},
		{[]string{"agent", "--keep-awake-kinds", ""}, []string{"ssh", "wireguard", "openvpn", "aws-client-vpn"}},
		{[]string{"agent", "--keep-awake-kinds", "ssh,wireguard,"}, []string{"ssh,wireguard,openvpn", "ssh,wireguard,aws-client-vpn"}},
		{[]string{"connect", "--address", ""}, []string{"public", "private", "ipv6"}},
		{[]string{"sta"}, []string{"status"}},
		{[]string{"config", ""}, []string{"check"}},
	}
	for _, tt := range tests {
		got, _ := complete(t, tt.args...)
		// cobra filters by prefix only for some shells; the list must
		// hold every wanted value and nothing that does not match.
		var matching []string
		for _, v := range got {
			if strings.HasPrefix(v, tt.args[len(tt.args)-1]) {
				matching = append(matching, v)
			}
		}
		if d := cmp.Diff(tt.want, matching); d != "" {
			t.Errorf("complete %q (-want +got):\n%s", tt.args, d)
		}
	}
}

// tunnel and agent --tunnel complete ssh_config Host names, never
// patterns.
func TestCompletionSSHHosts(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(cfg, []byte("Host *\n  ServerAliveInterval 30\nHost mqtt-broker devbox *.corp\n  HostName 127.0.0.1\nHost !old edge\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"tunnel", "-F", cfg, ""},
		{"agent", "--tunnel-ssh-config", cfg, "--tunnel", ""},
	} {
		got, directive := complete(t, args...)
		if d := cmp.Diff([]string{"mqtt-broker", "devbox", "edge"}, got); d != "" {
			t.Errorf("complete %q (-want +got):\n%s", args, d)
		}
		if directive != ":4" { // ShellCompDirectiveNoFileComp
			t.Errorf("complete %q: directive %s, want :4 (no file names)", args, directive)
		}
	}
	got, _ := complete(t, "tunnel", "-F", cfg, "devbox", "")
	if slices.Contains(got, "devbox") {
		t.Errorf("tunnel devbox <TAB> offers devbox again: %q", got)
	}
	got, _ = complete(t, "tunnel", "-F", filepath.Join(t.TempDir(), "missing"), "")
	if len(got) != 0 {
		t.Errorf("a missing ssh_config offers %q", got)
	}
}

// Every agent flag is in exactly one help group, and the groups name
// only flags that exist.
func TestAgentFlagGroups(t *testing.T) {
	cmd := newAgentCmd()
	seen := map[string]string{}
	for _, g := range agentFlagGroups {
		for _, name := range g.names {
			if prev, ok := seen[name]; ok {
				t.Errorf("flag %s is in groups %q and %q", name, prev, g.title)
			}
			seen[name] = g.title
			if name != "help" && cmd.Flags().Lookup(name) == nil {
				t.Errorf("group %q names %s, which is not an agent flag", g.title, name)
			}
		}
	}
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if _, ok := seen[f.Name]; !ok {
			t.Errorf("agent flag --%s is in no help group", f.Name)
		}
	})
	_, stdout, _ := runCLI(t, []string{"agent", "--help"})
	for _, title := range []string{"Sources: SSH flags:", "Idle policy flags:", "Action flags:", "Publishing: CloudWatch flags:", "Tunnels flags:"} {
		if !strings.Contains(stdout, "\n"+title+"\n") {
			t.Errorf("agent --help has no %q section", title)
		}
	}
	if strings.Contains(stdout, "Other flags:") {
		t.Errorf("agent --help has ungrouped flags")
	}
	// In its group's order: action first in "Action flags".
	if i, j := strings.Index(stdout, "      --action string"), strings.Index(stdout, "      --action-timeout"); i < 0 || j < i {
		t.Errorf("Action flags are not in the group's order")
	}
}

// The agent's tunnel flags reach the configuration.
func TestAgentTunnelFlags(t *testing.T) {
	f := &agentFlags{}
	fs2 := pflag.NewFlagSet("agent", pflag.ContinueOnError)
	f.register(fs2)
	if err := fs2.Parse([]string{"--tunnel", "mqtt", "--tunnel", "db", "--tunnel-ssh-config", "/etc/connwatch/ssh_config", "--tunnel-option", "User=tunnel", "--tunnel-probe-interval", "30s", "--tunnel-standby-after", "5s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := f.resolve(fs2)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"mqtt", "db"}, cfg.Tunnels.Hosts); d != "" || cfg.Tunnels.SSHConfig != "/etc/connwatch/ssh_config" || !slices.Equal(cfg.Tunnels.Options, []string{"User=tunnel"}) || cfg.Tunnels.ProbeInterval.Seconds() != 30 || cfg.Tunnels.StandbyAfter.Seconds() != 5 {
		t.Errorf("tunnels from flags: %+v", cfg.Tunnels)
	}
	// Without the flag: the default; "0s": off.
	for _, c := range []struct {
		args []string
		conf time.Duration
		opt  time.Duration
	}{
		{nil, tunnel.DefaultStandbyAfter, tunnel.DefaultStandbyAfter},
		{[]string{"--tunnel-standby-after", "0s"}, 0, -1},
	} {
		f := &agentFlags{}
		fs := pflag.NewFlagSet("agent", pflag.ContinueOnError)
		f.register(fs)
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.resolve(fs)
		if err != nil {
			t.Fatal(err)
		}
		tt := tunnelTuning{standby: cfg.Tunnels.StandbyAfter.Duration}
		if cfg.Tunnels.StandbyAfter.Duration != c.conf || tt.standbyAfter() != c.opt {
			t.Errorf("%q: standby_after %s (option %s), want %s (%s)", c.args, cfg.Tunnels.StandbyAfter, tt.standbyAfter(), c.conf, c.opt)
		}
	}
}
