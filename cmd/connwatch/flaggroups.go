package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// flagGroup is a titled part of a command's flags in its help.
type flagGroup struct {
	title string
	names []string
}

// agentFlagGroups orders the agent's many flags in its help. Every flag
// is in exactly one group (a test checks).
var agentFlagGroups = []flagGroup{
	{"General", []string{"config", "state-dir", "events", "log-format", "log-level"}},
	{"Sources: SSH", []string{"proc", "scan-interval", "ssh-port", "sshd-log"}},
	{"Sources: VPN", []string{
		"wireguard", "wireguard-interface", "wireguard-poll-interval", "wireguard-handshake-timeout",
		"openvpn-management", "openvpn-password-file", "openvpn-status-file", "openvpn-poll-interval",
		"aws-client-vpn-endpoint", "aws-client-vpn-region", "aws-client-vpn-poll-interval",
	}},
	{"Idle policy", []string{
		"period", "idle-after", "datapoints-to-alarm", "treat-missing-data", "boot-grace", "start-hold-max",
		"warn-before", "wall", "warn-command",
		"ignore-idle-after", "ignore-user", "ignore-cidr",
		"keep-awake-kinds", "keep-awake-process", "keep-awake-load",
	}},
	{"Action", []string{"action", "action-command", "action-timeout"}},
	{"Publishing: Prometheus", []string{"metrics-addr", "web.config.file", "metrics-per-user"}},
	{"Publishing: CloudWatch", []string{
		"cloudwatch", "cloudwatch-namespace", "cloudwatch-metric", "cloudwatch-period",
		"cloudwatch-dimension", "cloudwatch-batch", "cloudwatch-vpn-metric", "cloudwatch-reset-alarm",
	}},
	{"Publishing: notifications", []string{
		"notify-events", "webhook", "webhook-url-file", "webhook-slack", "sns-topic", "notify-command", "spool-dir",
	}},
	{"Tunnels", []string{"tunnel", "tunnel-ssh-config", "tunnel-option", "tunnel-probe-interval", "tunnel-standby-after"}},
	{"Help", []string{"help"}},
}

// groupedUsage is a usage function that prints cmd's local flags in
// groups, then whatever flag no group names (so none is ever hidden).
func groupedUsage(groups []flagGroup) func(*cobra.Command) error {
	return func(cmd *cobra.Command) error {
		var b strings.Builder
		fmt.Fprintf(&b, "Usage:\n  %s\n", cmd.UseLine())
		if cmd.HasExample() {
			fmt.Fprintf(&b, "\nExamples:\n%s\n", cmd.Example)
		}
		local := cmd.LocalFlags()
		placed := map[string]bool{}
		for _, g := range groups {
			set := pflag.NewFlagSet(g.title, pflag.ContinueOnError)
			set.SortFlags = false // the group's own order
			for _, name := range g.names {
				if f := local.Lookup(name); f != nil && !f.Hidden {
					set.AddFlag(f)
					placed[name] = true
				}
			}
			if set.HasFlags() {
				fmt.Fprintf(&b, "\n%s flags:\n%s", g.title, set.FlagUsages())
			}
		}
		rest := pflag.NewFlagSet("other", pflag.ContinueOnError)
		local.VisitAll(func(f *pflag.Flag) {
			if !placed[f.Name] && !f.Hidden {
				rest.AddFlag(f)
			}
		})
		if rest.HasFlags() {
			fmt.Fprintf(&b, "\nOther flags:\n%s", rest.FlagUsages())
		}
		if cmd.HasAvailableInheritedFlags() {
			fmt.Fprintf(&b, "\nGlobal flags:\n%s", cmd.InheritedFlags().FlagUsages())
		}
		_, err := fmt.Fprint(cmd.OutOrStderr(), b.String())
		return err
	}
}
