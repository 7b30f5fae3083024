package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/connwatch/connwatch/internal/action"
	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/alarm"
	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/hook"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/secret"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/sink/cloudwatch"
	promsink "github.com/connwatch/connwatch/internal/sink/prometheus"
)

// agentFlags binds every config setting to a flag; flags that were set
// override the config file.
type agentFlags struct {
	config string
	v      config.Agent
	apply  map[string]func(dst *config.Agent)
}

func (f *agentFlags) register(fs *pflag.FlagSet) {
	f.v = config.Default()
	v := &f.v
	f.apply = map[string]func(dst *config.Agent){}
	bind := func(name string, copyTo func(dst *config.Agent)) { f.apply[name] = copyTo }

	fs.StringVar(&f.config, "config", "", "configuration file (TOML; see examples/connwatch.toml); flags override it")
	fs.StringVar(&v.StateDir, "state-dir", v.StateDir, "directory for the agent's state, its view for 'connwatch status' and inhibit locks")
	bind("state-dir", func(d *config.Agent) { d.StateDir = v.StateDir })
	fs.StringVar(&v.Events, "events", v.Events, `where events go as JSON lines: a file, or "-" for standard output`)
	bind("events", func(d *config.Agent) { d.Events = v.Events })
	fs.StringVar(&v.Proc, "proc", v.Proc, "procfs root")
	bind("proc", func(d *config.Agent) { d.Proc = v.Proc })
	fs.DurationVar(&v.ScanInterval.Duration, "scan-interval", v.ScanInterval.Duration, "periodic scan of /proc (process events trigger quicker scans)")
	bind("scan-interval", func(d *config.Agent) { d.ScanInterval = v.ScanInterval })
	fs.IntSliceVar(&v.SSHPorts, "ssh-port", nil, "count only connections to this local port (repeatable; default: every sshd)")
	bind("ssh-port", func(d *config.Agent) { d.SSHPorts = v.SSHPorts })
	fs.StringVar(&v.SSHDLog, "sshd-log", v.SSHDLog, `sshd log to follow: "auto" (a verified sshd's -E file, else journald, else /var/log/auth.log), a path (a file only root can write), or "" for none`)
	bind("sshd-log", func(d *config.Agent) { d.SSHDLog = v.SSHDLog })
	fs.StringVar(&v.MetricsAddr, "metrics-addr", v.MetricsAddr, `serve Prometheus metrics on this address ("" for none); anything but loopback exposes who is connected; the agent does not start when it cannot listen there`)
	bind("metrics-addr", func(d *config.Agent) { d.MetricsAddr = v.MetricsAddr })
	fs.StringVar(&v.MetricsWebConfigFile, "web.config.file", "", "Prometheus web configuration file for the metrics endpoint: TLS and basic auth, as node_exporter's (re-read at every scrape)")
	bind("web.config.file", func(d *config.Agent) { d.MetricsWebConfigFile = v.MetricsWebConfigFile })
	fs.BoolVar(&v.MetricsPerUser, "metrics-per-user", false, "add a user label to connwatch_sessions (one series per user)")
	bind("metrics-per-user", func(d *config.Agent) { d.MetricsPerUser = v.MetricsPerUser })
	fs.StringVar(&v.LogFormat, "log-format", v.LogFormat, "log format: text or json")
	bind("log-format", func(d *config.Agent) { d.LogFormat = v.LogFormat })
	fs.StringVar(&v.LogLevel, "log-level", v.LogLevel, "log level: debug, info, warn, error")
	bind("log-level", func(d *config.Agent) { d.LogLevel = v.LogLevel })

	i := &v.Idle
	fs.DurationVar(&i.Period.Duration, "period", i.Period.Duration, "length of one datapoint (at least 1s)")
	bind("period", func(d *config.Agent) { d.Idle.Period = i.Period })
	fs.DurationVar(&i.IdleAfter.Duration, "idle-after", i.IdleAfter.Duration, "stop after this long without sessions (at most 24h, as a CloudWatch alarm): N = M = idle-after / period datapoints")
	bind("idle-after", func(d *config.Agent) { d.Idle.IdleAfter = i.IdleAfter })
	fs.IntVar(&i.DatapointsToAlarm, "datapoints-to-alarm", 0, "M: how many of the N periods must be idle (default: all)")
	bind("datapoints-to-alarm", func(d *config.Agent) { d.Idle.DatapointsToAlarm = i.DatapointsToAlarm })
	fs.StringVar(&i.TreatMissingData, "treat-missing-data", "", "periods the agent could not see (blind, not running): notBreaching (default: they break the idle run), missing, breaching, ignore")
	bind("treat-missing-data", func(d *config.Agent) { d.Idle.TreatMissingData = i.TreatMissingData })
	fs.DurationVar(&i.BootGrace.Duration, "boot-grace", i.BootGrace.Duration, "never stop within this long after boot")
	bind("boot-grace", func(d *config.Agent) { d.Idle.BootGrace = i.BootGrace })
	fs.DurationVar(&i.StartHoldMax.Duration, "start-hold-max", i.StartHoldMax.Duration, "with an EC2 action, keep a freshly started instance up until the time in its tag "+hold.StartHoldTag+" ('connwatch connect --hold'; read from instance metadata, whose tags must be enabled), but never longer than this after boot; 0: off")
	bind("start-hold-max", func(d *config.Agent) { d.Idle.StartHoldMax = i.StartHoldMax })
	fs.DurationVar(&i.WarnBefore.Duration, "warn-before", i.WarnBefore.Duration, "warn (event, wall message) this long before stopping; 0: no warning")
	bind("warn-before", func(d *config.Agent) { d.Idle.WarnBefore = i.WarnBefore })
	fs.BoolVar(&i.Wall, "wall", i.Wall, "send the warning to logged-in terminals with wall")
	bind("wall", func(d *config.Agent) { d.Idle.Wall = i.Wall })
	fs.StringVar(&i.WarnCommand, "warn-command", "", "notification hook: shell command run when the warning goes out (gets CONNWATCH_STOP_AT, CONNWATCH_REASON, CONNWATCH_EVENT); after 1m it is killed with everything it started; flags are visible in ps: keep tokens in a script or the config file")
	bind("warn-command", func(d *config.Agent) { d.Idle.WarnCommand = i.WarnCommand })
	fs.DurationVar(&i.IgnoreIdleAfter.Duration, "ignore-idle-after", 0, "sessions idle for longer do not keep the machine up (0: off)")
	bind("ignore-idle-after", func(d *config.Agent) { d.Idle.IgnoreIdleAfter = i.IgnoreIdleAfter })
	fs.StringSliceVar(&i.IgnoreUsers, "ignore-user", nil, "sessions of this user do not keep the machine up (repeatable)")
	bind("ignore-user", func(d *config.Agent) { d.Idle.IgnoreUsers = i.IgnoreUsers })
	fs.StringSliceVar(&i.IgnoreCIDRs, "ignore-cidr", nil, "sessions from this network do not keep the machine up (repeatable)")
	bind("ignore-cidr", func(d *config.Agent) { d.Idle.IgnoreCIDRs = i.IgnoreCIDRs })
	fs.StringArrayVar(&i.KeepAwakeProcesses, "keep-awake-process", nil, "keep the machine up while a process whose command line matches this regular expression runs (repeatable)")
	bind("keep-awake-process", func(d *config.Agent) { d.Idle.KeepAwakeProcesses = i.KeepAwakeProcesses })
	fs.Float64Var(&i.KeepAwakeLoad, "keep-awake-load", 0, "keep the machine up while the 1-minute load average is at least this (0: off)")
	bind("keep-awake-load", func(d *config.Agent) { d.Idle.KeepAwakeLoad = i.KeepAwakeLoad })

	n := &v.Notify
	fs.StringVar(&n.Events, "notify-events", n.Events, "event types sent to notification sinks (comma-separated)")
	bind("notify-events", func(d *config.Agent) { d.Notify.Events = n.Events })
	fs.StringVar(&n.Webhook, "webhook", "", "POST every event as JSON to this URL (durable outbox, retries); a flag is visible to every local user in ps, and Slack URLs are secrets: prefer --webhook-url-file")
	// Either flag replaces the other's setting from the config file; both
	// flags at once are refused by Validate.
	bind("webhook", func(d *config.Agent) {
		d.Notify.Webhook = n.Webhook
		if !fs.Changed("webhook-url-file") {
			d.Notify.WebhookURLFile = ""
		}
	})
	fs.StringVar(&n.WebhookURLFile, "webhook-url-file", "", "like --webhook, with the URL read from this file (one line; refused if group or others can write it), at start and on SIGHUP")
	bind("webhook-url-file", func(d *config.Agent) {
		d.Notify.WebhookURLFile = n.WebhookURLFile
		if !fs.Changed("webhook") {
			d.Notify.Webhook = ""
		}
	})
	fs.BoolVar(&n.WebhookSlack, "webhook-slack", false, `send {"text": "..."} for Slack-compatible incoming webhooks`)
	bind("webhook-slack", func(d *config.Agent) { d.Notify.WebhookSlack = n.WebhookSlack })
	fs.StringVar(&n.SNSTopic, "sns-topic", "", "publish every event to this SNS topic ARN")
	bind("sns-topic", func(d *config.Agent) { d.Notify.SNSTopic = n.SNSTopic })
	fs.StringVar(&n.Command, "notify-command", "", "run this shell command per event (gets CONNWATCH_EVENT, CONNWATCH_TEXT, CONNWATCH_KEY); after 30s it is killed with everything it started, and retried; flags are visible in ps: keep tokens in a script or the config file")
	bind("notify-command", func(d *config.Agent) { d.Notify.Command = n.Command })
	fs.StringVar(&n.SpoolDir, "spool-dir", "", "directory of the notification outboxes (default STATE_DIR/spool)")
	bind("spool-dir", func(d *config.Agent) { d.Notify.SpoolDir = n.SpoolDir })

	cw := &v.CloudWatch
	fs.BoolVar(&cw.Enabled, "cloudwatch", false, `publish the session count to CloudWatch (default: namespace EC2, metric "SSH Connections", dimension InstanceId, one value a minute)`)
	bind("cloudwatch", func(d *config.Agent) { d.CloudWatch.Enabled = cw.Enabled })
	fs.StringVar(&cw.Namespace, "cloudwatch-namespace", cw.Namespace, "CloudWatch namespace")
	bind("cloudwatch-namespace", func(d *config.Agent) { d.CloudWatch.Namespace = cw.Namespace })
	fs.StringVar(&cw.MetricName, "cloudwatch-metric", cw.MetricName, "CloudWatch metric name")
	bind("cloudwatch-metric", func(d *config.Agent) { d.CloudWatch.MetricName = cw.MetricName })
	fs.DurationVar(&cw.Period.Duration, "cloudwatch-period", cw.Period.Duration, "one datapoint per period: 1m or more, or 1s/5s/10s/30s (high resolution)")
	bind("cloudwatch-period", func(d *config.Agent) { d.CloudWatch.Period = cw.Period })
	fs.StringToStringVar(&cw.Dimensions, "cloudwatch-dimension", nil, "extra dimension NAME=VALUE besides InstanceId (repeatable)")
	bind("cloudwatch-dimension", func(d *config.Agent) { d.CloudWatch.Dimensions = cw.Dimensions })
	fs.DurationVar(&cw.Batch.Duration, "cloudwatch-batch", 0, "send datapoints every this long (fewer API calls; a first session after idleness goes at once)")
	bind("cloudwatch-batch", func(d *config.Agent) { d.CloudWatch.Batch = cw.Batch })
	fs.StringVar(&cw.VPNMetricName, "cloudwatch-vpn-metric", cw.VPNMetricName, `metric of each watched VPN kind, with a Kind dimension ("" for none)`)
	bind("cloudwatch-vpn-metric", func(d *config.Agent) { d.CloudWatch.VPNMetricName = cw.VPNMetricName })
	fs.StringVar(&cw.ResetAlarm, "cloudwatch-reset-alarm", "", `at start, take this alarm out of a stale ALARM state so it can fire again ("auto": connwatch-idle-<instance-id>)`)
	bind("cloudwatch-reset-alarm", func(d *config.Agent) { d.CloudWatch.ResetAlarm = cw.ResetAlarm })

	fs.StringSliceVar(&i.KeepAwakeKinds, "keep-awake-kinds", nil, "session kinds that keep the machine up: ssh, wireguard, openvpn, aws-client-vpn (default: every watched kind)")
	bind("keep-awake-kinds", func(d *config.Agent) { d.Idle.KeepAwakeKinds = i.KeepAwakeKinds })

	wg := &v.WireGuard
	fs.BoolVar(&wg.Enabled, "wireguard", false, "watch WireGuard peers (kernel or userspace devices); name peers in the config file's [wireguard.peers]")
	bind("wireguard", func(d *config.Agent) { d.WireGuard.Enabled = wg.Enabled })
	fs.StringSliceVar(&wg.Interfaces, "wireguard-interface", nil, "WireGuard interface to watch (repeatable; default: every one)")
	bind("wireguard-interface", func(d *config.Agent) { d.WireGuard.Enabled, d.WireGuard.Interfaces = true, wg.Interfaces })
	fs.DurationVar(&wg.PollInterval.Duration, "wireguard-poll-interval", wg.PollInterval.Duration, "how often WireGuard devices are read")
	bind("wireguard-poll-interval", func(d *config.Agent) { d.WireGuard.PollInterval = wg.PollInterval })
	fs.DurationVar(&wg.HandshakeTimeout.Duration, "wireguard-handshake-timeout", wg.HandshakeTimeout.Duration, "a peer is connected while its latest handshake is at most this old")
	bind("wireguard-handshake-timeout", func(d *config.Agent) { d.WireGuard.HandshakeTimeout = wg.HandshakeTimeout })

	ov := &v.OpenVPN
	var ovServer config.OpenVPNServer
	// The OpenVPN flags set the fields of the config file's first (or
	// only) server, or make one.
	openvpnServer := func(d *config.Agent) *config.OpenVPNServer {
		d.OpenVPN.Enabled = true
		if len(d.OpenVPN.Servers) == 0 {
			d.OpenVPN.Servers = []config.OpenVPNServer{{}}
		}
		return &d.OpenVPN.Servers[0]
	}
	fs.StringVar(&ovServer.Management, "openvpn-management", "", `watch the OpenVPN server with this management interface ("unix:/run/openvpn/server.sock" or "tcp:127.0.0.1:7505"; only "status 3" is sent)`)
	bind("openvpn-management", func(d *config.Agent) { openvpnServer(d).Management = ovServer.Management })
	fs.StringVar(&ovServer.PasswordFile, "openvpn-password-file", "", "file holding the OpenVPN management password")
	bind("openvpn-password-file", func(d *config.Agent) { openvpnServer(d).PasswordFile = ovServer.PasswordFile })
	fs.StringVar(&ovServer.StatusFile, "openvpn-status-file", "", "watch the OpenVPN server that writes this --status file")
	bind("openvpn-status-file", func(d *config.Agent) { openvpnServer(d).StatusFile = ovServer.StatusFile })
	fs.DurationVar(&ov.PollInterval.Duration, "openvpn-poll-interval", ov.PollInterval.Duration, "how often OpenVPN servers are asked")
	bind("openvpn-poll-interval", func(d *config.Agent) { d.OpenVPN.PollInterval = ov.PollInterval })

	cv := &v.AWSClientVPN
	fs.StringSliceVar(&cv.Endpoints, "aws-client-vpn-endpoint", nil, "watch this AWS Client VPN endpoint (cvpn-endpoint-…; repeatable)")
	bind("aws-client-vpn-endpoint", func(d *config.Agent) { d.AWSClientVPN.Enabled, d.AWSClientVPN.Endpoints = true, cv.Endpoints })
	fs.StringVar(&cv.Region, "aws-client-vpn-region", "", "region of the Client VPN endpoints (default: the SDK's, else this instance's)")
	bind("aws-client-vpn-region", func(d *config.Agent) { d.AWSClientVPN.Region = cv.Region })
	fs.DurationVar(&cv.PollInterval.Duration, "aws-client-vpn-poll-interval", cv.PollInterval.Duration, "how often DescribeClientVpnConnections is called per endpoint (it also lists connections that ended, so none is missed)")
	bind("aws-client-vpn-poll-interval", func(d *config.Agent) { d.AWSClientVPN.PollInterval = cv.PollInterval })

	tu := &v.Tunnels
	fs.StringArrayVar(&tu.Hosts, "tunnel", nil, "keep the forwards of this ssh_config Host up, as 'connwatch tunnel HOST' would, with its state on the metrics endpoint (repeatable)")
	bind("tunnel", func(d *config.Agent) { d.Tunnels.Hosts = tu.Hosts })
	fs.StringVar(&tu.SSHConfig, "tunnel-ssh-config", "", "ssh_config FILE of the tunnels (ssh -F; default: ssh's own)")
	bind("tunnel-ssh-config", func(d *config.Agent) { d.Tunnels.SSHConfig = tu.SSHConfig })
	fs.StringArrayVar(&tu.Options, "tunnel-option", nil, "ssh_config option Key=Value for the tunnels, as ssh -o (repeatable)")
	bind("tunnel-option", func(d *config.Agent) { d.Tunnels.Options = tu.Options })
	fs.DurationVar(&tu.ProbeInterval.Duration, "tunnel-probe-interval", 0, "check each LocalForward's destination through the server this often (0: off)")
	bind("tunnel-probe-interval", func(d *config.Agent) { d.Tunnels.ProbeInterval = tu.ProbeInterval })
	fs.DurationVar(&tu.StandbyAfter.Duration, "tunnel-standby-after", tu.StandbyAfter.Duration, "when a tunnel's keepalive reply is this late, dial a standby connection and move to it if it answers first (0: off)")
	bind("tunnel-standby-after", func(d *config.Agent) { d.Tunnels.StandbyAfter = tu.StandbyAfter })

	a := &v.Action
	fs.StringVar(&a.Type, "action", a.Type, "what to do when idle: "+strings.Join(config.Actions, ", "))
	bind("action", func(d *config.Agent) { d.Action.Type = a.Type })
	fs.StringVar(&a.Command, "action-command", "", "shell command for --action command (gets CONNWATCH_REASON, CONNWATCH_IDLE_SINCE); events and logs name only its program, but flags are visible in ps: keep tokens in a script or the config file")
	bind("action-command", func(d *config.Agent) { d.Action.Command = a.Command })
	fs.DurationVar(&a.Timeout.Duration, "action-timeout", a.Timeout.Duration, "time limit of one action; a command is then killed with everything it started")
	bind("action-timeout", func(d *config.Agent) { d.Action.Timeout = a.Timeout })
}

// resolve returns defaults, overlaid by the config file, overlaid by the
// flags that were set, validated.
func (f *agentFlags) resolve(fs *pflag.FlagSet) (config.Agent, error) {
	cfg := config.Default()
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return cfg, err
		}
	}
	fs.Visit(func(fl *pflag.Flag) {
		if ap, ok := f.apply[fl.Name]; ok {
			ap(&cfg)
		}
	})
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{fmt.Errorf("invalid settings: %w", err)}
	}
	return cfg, nil
}

func newAgentCmd() *cobra.Command {
	f := &agentFlags{}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Watch sessions, emit events, and stop the machine when nobody uses it",
		Long: `agent runs in the foreground (under systemd: Type=notify, with watchdog;
see packaging/connwatch.service). It scans /proc every --scan-interval
and, as root, subscribes to the kernel's process events so that every
authenticated session start and end is seen within a second, even one
that lasts 100 ms. Each is written as a JSON line to --events:

  {"time":"…","type":"session_start","session":{…}}

Types: session_start, session_end, idle_start, idle_cancel, stop_warning,
stop, stop_failed, blind, sighted.

VPN clients are sessions too, each source polled on its own interval:
WireGuard peers with a recent handshake (--wireguard), OpenVPN clients
from the management interface or status file (--openvpn-management,
--openvpn-status-file), AWS Client VPN connections (--aws-client-vpn-
endpoint), including those that began and ended between two polls.
Until a VPN source has answered, or while it fails, its sessions are
kept and the machine is not stopped; --keep-awake-kinds chooses which
kinds keep the machine up.

Idle policy: every --period is one datapoint, idle when no counted
session and no hold existed at any time in it. When M of the last N
datapoints are idle (N = --idle-after / --period, M =
--datapoints-to-alarm, default N: the classic "15 of 15 one-minute
datapoints"), evaluated with CloudWatch's alarm rules, the --action runs,
once per idle period. Before that, a warning goes out --warn-before
ahead (event, wall message). Anyone connecting cancels the countdown.

Never stopped: within --boot-grace of boot; with an EC2 action, until
the time in the instance tag connwatch:hold-until ('connwatch connect
--hold'), at most --start-hold-max after boot; while an inhibit lock is
held ('connwatch inhibit'), a --keep-awake-process runs or the load is
at least --keep-awake-load; while the agent cannot see who is connected
(it says why in a "blind" event). The countdown survives restarts: state
is kept in --state-dir.

The default action is dry-run: it only says what it would do.`,
		Example: `  connwatch agent                                   # dry-run, defaults
  connwatch agent --action ec2-stop --idle-after 30m
  connwatch agent --config /etc/connwatch/connwatch.toml
  connwatch agent --wireguard --openvpn-management unix:/run/openvpn/server.sock
  connwatch agent --aws-client-vpn-endpoint cvpn-endpoint-0123456789abcdef0 --sns-topic arn:aws:sns:…
  connwatch agent --period 1s --idle-after 10s --boot-grace 0 --events /tmp/events.jsonl`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("agent takes no arguments, got %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.resolve(cmd.Flags())
			if err != nil {
				return err
			}
			reload := func() (config.Agent, error) { return f.resolve(cmd.Flags()) }
			return runAgent(cmd.Context(), cfg, reload, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f.register(cmd.Flags())
	registerAgentCompletions(cmd)
	cmd.SetUsageFunc(groupedUsage(agentFlagGroups))
	return cmd
}

func newLogger(cfg config.Agent, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if os.Getenv("JOURNAL_STREAM") != "" {
		// journald stamps every line itself.
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}
	}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// parts are what a configuration turns into; SIGHUP rebuilds them.
type parts struct {
	policy policy.Config
	actor  action.Action
	holds  []agent.HoldSource
}

// buildParts makes the parts of cfg. The start hold, kept across
// reloads, is added by agentRun.parts.
func buildParts(cfg config.Agent, reject func(name string, err error)) (parts, error) {
	act, err := action.New(cfg.Action.Type, action.Options{Command: cfg.Action.Command, Timeout: cfg.Action.Timeout.Duration})
	if err != nil {
		return parts{}, usageError{err}
	}
	locks := hold.Store{Dir: filepath.Join(cfg.StateDir, agent.HoldsDir), ProcRoot: cfg.Proc, Reject: reject}
	patterns := cfg.KeepAwakePatterns()
	return parts{
		policy: policy.Config{
			Period:            cfg.Idle.Period.Duration,
			EvaluationPeriods: cfg.EvaluationPeriods(),
			DatapointsToAlarm: cfg.Idle.DatapointsToAlarm,
			TreatMissingData:  alarm.TreatMissingData(cfg.Idle.TreatMissingData),
			BootGrace:         cfg.Idle.BootGrace.Duration,
			WarnBefore:        cfg.Idle.WarnBefore.Duration,
			IgnoreIdleAfter:   cfg.Idle.IgnoreIdleAfter.Duration,
			IgnoreUsers:       cfg.Idle.IgnoreUsers,
			IgnoreNets:        cfg.IgnoreNets(),
			IgnoreKinds:       cfg.IgnoreKinds(),
			// The agent steps every scan: a longer silence means it was
			// stopped or frozen, or the clock jumped.
			MaxGap: max(30*time.Second, 10*cfg.ScanInterval.Duration),
		},
		actor: act,
		holds: []agent.HoldSource{
			locks.Holds,
			hold.Every(5*time.Second, func(time.Time) ([]policy.Hold, error) { return hold.Processes(cfg.Proc, patterns) }),
			func(time.Time) ([]policy.Hold, error) { return hold.Load(cfg.Proc, cfg.Idle.KeepAwakeLoad) },
		},
	}, nil
}

// hookTimeout bounds the warning hook.
const hookTimeout = time.Minute

// runHook runs the warning hook for event e, bounded in time; on timeout
// its whole process group is killed (package hook).
func runHook(ctx context.Context, command string, e event.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	env := []string{"CONNWATCH_EVENT=" + string(b), "CONNWATCH_REASON=" + e.Reason}
	if e.StopAt != nil {
		env = append(env, "CONNWATCH_STOP_AT="+e.StopAt.UTC().Format(time.RFC3339))
	}
	out := &hook.Tail{}
	if err := (hook.Hook{Command: command, ExtraEnv: env, Timeout: hookTimeout, Stdout: out, Stderr: out}).Run(ctx); err != nil {
		// The command line may hold a token: name its program only.
		return fmt.Errorf("run %s: %w: %s", secret.DescribeCommand("warn command", command), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// wall writes msg to every logged-in terminal.
func wall(ctx context.Context, msg string) error {
	path, err := exec.LookPath("wall")
	if err != nil {
		return fmt.Errorf("send wall message: %w", err)
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Stdin = strings.NewReader(msg + "\n")
	// wall's per-terminal writers inherit its output: do not wait for
	// them beyond a moment after wall itself is done or killed.
	cmd.WaitDelay = 2 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("send wall message: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// metricsObserver feeds every agent iteration to the Prometheus metrics.
type metricsObserver struct{ m *promsink.Metrics }

func (o metricsObserver) Observe(ob agent.Observation) {
	// The tracker's sessions: a VPN source that fails keeps its last
	// sessions there (and in the policy), so the series do not drop to 0.
	snap := ob.Snapshot
	snap.Sessions = ob.Sessions
	o.m.ObserveScan(ob.Source, ob.ScanDuration, snap, ob.ScanErr)
	for _, p := range ob.Polls {
		o.m.ObservePoll(p.Name, p.Duration, p.Err)
	}
	o.m.ObserveEvents(ob.Events)
	o.m.ObservePolicy(ob.Now, ob.Policy)
	o.m.ObserveLoop()
}

// cloudWatchObserver gives a CloudWatch publisher the number of sessions
// of its kinds in every iteration, including sessions seen only in
// passing (sshd's log, a VPN connection that began and ended between two
// polls); an iteration blind to one of its kinds gives nothing, so
// CloudWatch sees missing data, not a false 0.
type cloudWatchObserver struct {
	p     *cloudwatch.Publisher
	kinds []session.Kind
}

func (o cloudWatchObserver) Observe(ob agent.Observation) {
	if n, ok := ob.Count(o.kinds); ok {
		o.p.Observe(ob.Now, n)
	}
}

// restartOnly lists the settings that differ between old and new but are
// not applied by a reload (only the idle policy, holds and action are).
func restartOnly(old, new config.Agent) []string {
	var out []string
	diff := func(key string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, key)
		}
	}
	diff("state_dir", old.StateDir, new.StateDir)
	diff("proc", old.Proc, new.Proc)
	diff("events", old.Events, new.Events)
	diff("scan_interval", old.ScanInterval, new.ScanInterval)
	diff("ssh_ports", old.SSHPorts, new.SSHPorts)
	diff("sshd_log", old.SSHDLog, new.SSHDLog)
	diff("metrics_addr", old.MetricsAddr, new.MetricsAddr)
	diff("metrics_web_config_file", old.MetricsWebConfigFile, new.MetricsWebConfigFile)
	diff("metrics_per_user", old.MetricsPerUser, new.MetricsPerUser)
	diff("log_format", old.LogFormat, new.LogFormat)
	diff("log_level", old.LogLevel, new.LogLevel)
	diff("idle.wall", old.Idle.Wall, new.Idle.Wall)
	diff("idle.warn_command", old.Idle.WarnCommand, new.Idle.WarnCommand)
	diff("notify", old.Notify, new.Notify)
	diff("cloudwatch", old.CloudWatch, new.CloudWatch)
	diff("tunnels", old.Tunnels, new.Tunnels)
	diff("wireguard", old.WireGuard, new.WireGuard)
	diff("openvpn", old.OpenVPN, new.OpenVPN)
	diff("aws_client_vpn", old.AWSClientVPN, new.AWSClientVPN)
	return out
}
