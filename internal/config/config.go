// Package config reads connwatch's one configuration file (TOML), strictly:
// defaults first, then the file, then Validate. Unknown keys are errors
// naming the key, syntax errors name the line, invalid values name the
// key and value. A missing file is a different error (ErrNotFound) from an
// invalid one (ErrInvalid).
package config

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/connwatch/connwatch/internal/alarm"
	"github.com/connwatch/connwatch/internal/secret"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/sink/cloudwatch"
	"github.com/connwatch/connwatch/internal/sink/notify"
	promsink "github.com/connwatch/connwatch/internal/sink/prometheus"
	"github.com/connwatch/connwatch/internal/source/openvpn"
	"github.com/connwatch/connwatch/internal/tunnel"
)

// Sentinels callers branch on.
var (
	ErrNotFound = errors.New("config file not found")
	ErrInvalid  = errors.New("invalid config")
)

// Duration is a time.Duration written as "90s", "15m", "1h30m".
type Duration struct{ time.Duration }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: use a number with a unit, like 90s, 15m or 1h30m", b)
	}
	d.Duration = v
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// Agent is the configuration of `connwatch agent`.
type Agent struct {
	// StateDir holds the agent's state, its view for `connwatch status`
	// and inhibit locks.
	StateDir string `toml:"state_dir"`
	// Events is where events go as JSON lines: a file, or "-" for stdout.
	Events string `toml:"events"`
	// Proc is the procfs root.
	Proc string `toml:"proc"`
	// ScanInterval is the periodic scan; process events and sshd's log
	// trigger quicker ones.
	ScanInterval Duration `toml:"scan_interval"`
	// SSHPorts, when set, limits the agent to connections to these local
	// ports (another sshd for automation, say, is then ignored).
	SSHPorts []int `toml:"ssh_ports"`
	// SSHDLog is sshd's log file to follow ("auto": the -E file on a
	// verified listener's command line, else journald, else
	// /var/log/auth.log; "" off).
	SSHDLog string `toml:"sshd_log"`
	// MetricsAddr serves Prometheus metrics ("" off). Loopback by
	// default: the metrics say who is connected.
	MetricsAddr string `toml:"metrics_addr"`
	// MetricsWebConfigFile is a Prometheus web configuration file for the
	// metrics endpoint (TLS, basic auth), as node_exporter's
	// --web.config.file; re-read at every scrape.
	MetricsWebConfigFile string `toml:"metrics_web_config_file"`
	// MetricsPerUser adds a user label to connwatch_sessions (one series
	// per user: mind the cardinality).
	MetricsPerUser bool       `toml:"metrics_per_user"`
	LogFormat      string     `toml:"log_format"`
	LogLevel       string     `toml:"log_level"`
	Idle           Idle       `toml:"idle"`
	Action         Action     `toml:"action"`
	Notify         Notify     `toml:"notify"`
	CloudWatch     CloudWatch `toml:"cloudwatch"`
	Tunnels        Tunnels    `toml:"tunnels"`
	// VPN sources: their clients are sessions like SSH ones.
	WireGuard    WireGuard    `toml:"wireguard"`
	OpenVPN      OpenVPN      `toml:"openvpn"`
	AWSClientVPN AWSClientVPN `toml:"aws_client_vpn"`
}

// WireGuard watches WireGuard devices (kernel, or userspace such as
// wireguard-go): a peer is connected while its latest handshake is
// recent.
type WireGuard struct {
	Enabled bool `toml:"enabled"`
	// Interfaces to watch; empty: every WireGuard device.
	Interfaces   []string `toml:"interfaces"`
	PollInterval Duration `toml:"poll_interval"`
	// HandshakeTimeout: a peer is connected while its latest handshake
	// is at most this old (WireGuard re-keys every 2 minutes while
	// traffic flows, and drops keys after 3).
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// Peers names public keys: "base64 key" = "alice".
	Peers map[string]string `toml:"peers"`
}

// OpenVPN watches OpenVPN servers through their management interface or
// status file.
type OpenVPN struct {
	Enabled      bool            `toml:"enabled"`
	PollInterval Duration        `toml:"poll_interval"`
	Servers      []OpenVPNServer `toml:"server"`
}

// OpenVPNServer is one OpenVPN server: exactly one of Management and
// StatusFile.
type OpenVPNServer struct {
	// Name tells servers apart in sessions and metrics.
	Name string `toml:"name"`
	// Management is the management interface: "unix:/run/openvpn/server.sock"
	// or "tcp:127.0.0.1:7505". connwatch only runs `status 3`.
	Management string `toml:"management"`
	// PasswordFile holds the management password (its first line).
	PasswordFile string `toml:"password_file"`
	// StatusFile is the server's --status file (any status-version).
	StatusFile string `toml:"status_file"`
}

// AWSClientVPN watches AWS Client VPN endpoints with
// DescribeClientVpnConnections, which also lists connections that ended
// in the last hour, so no connection is missed between polls.
type AWSClientVPN struct {
	Enabled bool `toml:"enabled"`
	// Endpoints are Client VPN endpoint ids (cvpn-endpoint-…).
	Endpoints []string `toml:"endpoints"`
	// Region of the endpoints; default: the SDK's (AWS_REGION, profile),
	// else the instance's (IMDS).
	Region       string   `toml:"region"`
	PollInterval Duration `toml:"poll_interval"`
}

// Kinds returns the session kinds the configuration watches: ssh, then
// the enabled VPN kinds.
func (c Agent) Kinds() []session.Kind {
	kinds := []session.Kind{session.KindSSH}
	if c.WireGuard.Enabled {
		kinds = append(kinds, session.KindWireGuard)
	}
	if c.OpenVPN.Enabled {
		kinds = append(kinds, session.KindOpenVPN)
	}
	if c.AWSClientVPN.Enabled {
		kinds = append(kinds, session.KindAWSClientVPN)
	}
	return kinds
}

// KeepAwakeKinds are the watched kinds that keep the machine up.
func (c Agent) KeepAwakeKinds() []session.Kind {
	ignore := c.IgnoreKinds()
	var out []session.Kind
	for _, k := range c.Kinds() {
		if !slices.Contains(ignore, k) {
			out = append(out, k)
		}
	}
	return out
}

// IgnoreKinds are the watched kinds that do not keep the machine up
// (those missing from idle.keep_awake_kinds, when it is set).
func (c Agent) IgnoreKinds() []session.Kind {
	if c.Idle.KeepAwakeKinds == nil {
		return nil
	}
	var out []session.Kind
	for _, k := range session.Kinds() {
		if !slices.Contains(c.Idle.KeepAwakeKinds, string(k)) {
			out = append(out, k)
		}
	}
	return out
}

// Tunnels are kept up by the agent, as `connwatch tunnel` would, with
// their state on its Prometheus endpoint.
type Tunnels struct {
	// Hosts are ssh_config Host names whose forwards are kept up.
	Hosts []string `toml:"hosts"`
	// SSHConfig is the client config (ssh -F); empty: ssh's default.
	SSHConfig string `toml:"ssh_config"`
	// Options are ssh -o Key=Value options.
	Options []string `toml:"options"`
	// ProbeInterval checks each LocalForward's destination through the
	// server this often (0: off).
	ProbeInterval Duration `toml:"probe_interval"`
	// StandbyAfter is how late a keepalive reply may be before a standby
	// connection is dialled to take over if it answers first (0: off,
	// keep a silent connection until its keepalives run out).
	StandbyAfter Duration `toml:"standby_after"`
}

// CloudWatch publishes the session count, by default exactly as the
// classic cron recipe did (namespace EC2, metric "SSH Connections",
// dimension InstanceId), so existing alarms keep working.
type CloudWatch struct {
	Enabled    bool   `toml:"enabled"`
	Namespace  string `toml:"namespace"`
	MetricName string `toml:"metric_name"`
	// Period of one datapoint: 1m (default) or more, or 1s/5s/10s/30s
	// (high resolution).
	Period Duration `toml:"period"`
	// Batch sends datapoints every Batch instead of every Period (fewer
	// API calls; a first session after idleness is sent at once).
	Batch Duration `toml:"batch"`
	// Dimensions are added to InstanceId ("Role" = "bastion").
	Dimensions map[string]string `toml:"dimensions"`
	// ResetAlarm names an alarm to take out of a stale ALARM state at
	// start ("auto": connwatch-idle-<instance-id>; "" none).
	ResetAlarm string `toml:"reset_alarm"`
	// VPNMetricName is the metric of each watched VPN kind, with a Kind
	// dimension ("wireguard", "openvpn", "aws-client-vpn") besides
	// InstanceId; "" publishes SSH only.
	VPNMetricName string `toml:"vpn_metric_name"`
}

// Notify is where events are sent, through a durable outbox per sink.
type Notify struct {
	// Events lists the event types sent (comma-separated).
	Events string `toml:"events"`
	// Webhook is a URL that gets a JSON POST per event; WebhookSlack
	// sends {"text": …} for Slack-compatible incoming webhooks.
	Webhook string `toml:"webhook"`
	// WebhookURLFile, instead of Webhook, is a file holding the URL on
	// one line, which only its owner may change (a Slack URL is a
	// secret, and a flag is visible in ps). Read at start and on SIGHUP.
	WebhookURLFile string `toml:"webhook_url_file"`
	WebhookSlack   bool   `toml:"webhook_slack"`
	// SNSTopic is an SNS topic ARN to publish to.
	SNSTopic string `toml:"sns_topic"`
	// Command runs (/bin/sh -c) per event with CONNWATCH_EVENT etc.
	Command string `toml:"command"`
	// SpoolDir holds the outboxes; default STATE_DIR/spool.
	SpoolDir string `toml:"spool_dir"`
}

// Idle is the idle policy.
type Idle struct {
	// Period is one datapoint; IdleAfter the window (N = IdleAfter/Period).
	Period            Duration `toml:"period"`
	IdleAfter         Duration `toml:"idle_after"`
	DatapointsToAlarm int      `toml:"datapoints_to_alarm"`
	TreatMissingData  string   `toml:"treat_missing_data"`
	BootGrace         Duration `toml:"boot_grace"`
	// StartHoldMax caps the start hold: the instance tag
	// connwatch:hold-until (written by `connwatch connect --hold`) keeps
	// the machine up until the time it names, but never longer than this
	// after boot. 0 turns the start hold off. Read only with an EC2
	// action (see StartHold).
	StartHoldMax Duration `toml:"start_hold_max"`
	WarnBefore   Duration `toml:"warn_before"`
	// Wall sends the warning to logged-in terminals.
	Wall bool `toml:"wall"`
	// WarnCommand runs (/bin/sh -c) when the warning goes out, with
	// CONNWATCH_STOP_AT, CONNWATCH_REASON and CONNWATCH_EVENT (JSON).
	WarnCommand     string   `toml:"warn_command"`
	IgnoreIdleAfter Duration `toml:"ignore_idle_after"`
	IgnoreUsers     []string `toml:"ignore_users"`
	IgnoreCIDRs     []string `toml:"ignore_cidrs"`
	// KeepAwakeProcesses are regular expressions matched against process
	// command lines.
	KeepAwakeProcesses []string `toml:"keep_awake_processes"`
	// KeepAwakeLoad keeps the machine up while the 1-minute load average
	// is at least this (0: off).
	KeepAwakeLoad float64 `toml:"keep_awake_load"`
	// KeepAwakeKinds are the session kinds that keep the machine up
	// (ssh, wireguard, openvpn, aws-client-vpn); unset: every watched
	// kind. A VPN left out is still watched and reported.
	KeepAwakeKinds []string `toml:"keep_awake_kinds"`
}

// Action is what happens when the machine is idle.
type Action struct {
	// Type is dry-run, poweroff, ec2-stop, ec2-hibernate or command.
	Type    string   `toml:"type"`
	Command string   `toml:"command"`
	Timeout Duration `toml:"timeout"`
}

// Actions are the valid action types.
var Actions = []string{"dry-run", "poweroff", "ec2-stop", "ec2-hibernate", "command"}

// EC2Action reports whether the action stops the instance through the
// EC2 API (ec2-stop, ec2-hibernate).
func (a Action) EC2Action() bool { return a.Type == "ec2-stop" || a.Type == "ec2-hibernate" }

// StartHold reports whether the agent reads the start hold from the
// instance's tags: only with an EC2 action, which needs the instance
// metadata service anyway, and a non-zero idle.start_hold_max. Other
// actions may run anywhere, and the agent does not probe for a metadata
// service it has no other use for.
func (c Agent) StartHold() bool { return c.StartHoldMax() > 0 }

// StartHoldMax is the start hold's cap: idle.start_hold_max with an EC2
// action, else 0 (off: nothing is read).
func (c Agent) StartHoldMax() time.Duration {
	if !c.Action.EC2Action() {
		return 0
	}
	return max(c.Idle.StartHoldMax.Duration, 0)
}

// SystemStateDir is the agent's state directory when it runs as root.
const SystemStateDir = "/var/lib/connwatch"

// DefaultStateDir is SystemStateDir for root or when it exists (so that
// users' `connwatch inhibit` and `status` find the system agent), else
// $XDG_STATE_HOME/connwatch (~/.local/state/connwatch).
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return SystemStateDir
	}
	if st, err := os.Stat(SystemStateDir); err == nil && st.IsDir() {
		return SystemStateDir
	}
	if x := os.Getenv("XDG_STATE_HOME"); x != "" {
		return filepath.Join(x, "connwatch")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "connwatch")
	}
	return SystemStateDir
}

// Default returns the defaults: the classic 15 of 15 one-minute
// datapoints, dry-run.
func Default() Agent {
	return Agent{
		StateDir:     DefaultStateDir(),
		Events:       "-",
		Proc:         "/proc",
		ScanInterval: Duration{time.Second},
		SSHDLog:      "auto",
		MetricsAddr:  "127.0.0.1:9810",
		LogFormat:    "text",
		LogLevel:     "info",
		Idle: Idle{
			Period:       Duration{time.Minute},
			IdleAfter:    Duration{15 * time.Minute},
			BootGrace:    Duration{5 * time.Minute},
			StartHoldMax: Duration{time.Hour},
			WarnBefore:   Duration{5 * time.Minute},
			Wall:         true,
		},
		Action:       Action{Type: "dry-run", Timeout: Duration{2 * time.Minute}},
		Notify:       Notify{Events: "session_start,session_end,stop_warning,stop,stop_failed"},
		CloudWatch:   CloudWatch{Namespace: "EC2", MetricName: "SSH Connections", VPNMetricName: "VPN Connections", Period: Duration{time.Minute}},
		WireGuard:    WireGuard{PollInterval: Duration{5 * time.Second}, HandshakeTimeout: Duration{3 * time.Minute}},
		OpenVPN:      OpenVPN{PollInterval: Duration{5 * time.Second}},
		AWSClientVPN: AWSClientVPN{PollInterval: Duration{time.Minute}},
		Tunnels:      Tunnels{StandbyAfter: Duration{tunnel.DefaultStandbyAfter}},
	}
}

// Load reads path over the defaults and validates the result.
func Load(path string) (Agent, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return cfg, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	if err != nil {
		return cfg, fmt.Errorf("read config %s: %w", path, err)
	}
	if err := Decode(path, string(b), &cfg); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Decode decodes TOML text into cfg, strictly. name is used in errors.
func Decode(name, text string, cfg *Agent) error {
	md, err := toml.Decode(text, cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return fmt.Errorf("%w: %s:%d: %s", ErrInvalid, name, pe.Position.Line, pe.Message)
		}
		return fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return fmt.Errorf("%w: %s: unknown key %s", ErrInvalid, name, strings.Join(keys, ", "))
	}
	return nil
}

// FieldError is a validation error naming the key and value.
type FieldError struct {
	Key   string
	Value any
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("%s = %v: %s", e.Key, e.Value, e.Msg) }

// Unwrap makes every FieldError an ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// MaxWindow bounds the idle window, idle.idle_after (N = idle_after /
// period periods): CloudWatch allows an alarm at most one day of periods
// shorter than an hour, and the policy keeps a datapoint per period.
const MaxWindow = alarm.MaxWindow

// MaxInterval bounds scan and poll intervals: a longer one would leave the
// agent blind for longer than any idle window is useful, and the agent
// multiplies them (gap and staleness limits).
const MaxInterval = time.Hour

// Validate checks values and their combinations. Values no key may have
// (NaN or infinite numbers, negative durations) are reported first and
// alone: the other checks would only repeat them.
func (c Agent) Validate() error {
	if errs := nonsense(reflect.ValueOf(c), ""); len(errs) > 0 {
		return errors.Join(errs...)
	}
	var errs []error
	bad := func(key string, v any, format string, a ...any) {
		errs = append(errs, &FieldError{Key: key, Value: v, Msg: fmt.Sprintf(format, a...)})
	}
	if c.StateDir == "" {
		bad("state_dir", `""`, "must be set")
	}
	for _, p := range c.SSHPorts {
		if p < 1 || p > 65535 {
			bad("ssh_ports", p, "not a TCP port")
		}
	}
	if c.ScanInterval.Duration < 10*time.Millisecond || c.ScanInterval.Duration > MaxInterval {
		bad("scan_interval", c.ScanInterval, "must be between 10ms and %v", MaxInterval)
	}
	if !oneOf(c.LogFormat, "text", "json") {
		bad("log_format", c.LogFormat, "must be text or json")
	}
	if !oneOf(c.LogLevel, "debug", "info", "warn", "error") {
		bad("log_level", c.LogLevel, "must be debug, info, warn or error")
	}
	i := c.Idle
	if i.Period.Duration < time.Second {
		bad("idle.period", i.Period, "must be at least 1s")
	} else if i.IdleAfter.Duration < i.Period.Duration || i.IdleAfter.Duration%i.Period.Duration != 0 {
		bad("idle.idle_after", i.IdleAfter, "must be a whole number of periods (idle.period = %v)", i.Period)
	} else if i.IdleAfter.Duration > MaxWindow {
		bad("idle.idle_after", i.IdleAfter, "the idle window (%d periods of %v) must be at most %v, as for a CloudWatch alarm", c.EvaluationPeriods(), i.Period, MaxWindow)
	} else if n := c.EvaluationPeriods(); i.DatapointsToAlarm < 0 || i.DatapointsToAlarm > n {
		bad("idle.datapoints_to_alarm", i.DatapointsToAlarm, "must be between 1 and the number of periods in idle_after (%d); 0 means all", n)
	}
	if i.TreatMissingData != "" && !oneOf(i.TreatMissingData, "missing", "notBreaching", "breaching", "ignore") {
		bad("idle.treat_missing_data", i.TreatMissingData, "must be missing, notBreaching, breaching or ignore")
	}
	for _, cidr := range i.IgnoreCIDRs {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			bad("idle.ignore_cidrs", cidr, "not a CIDR prefix like 10.0.0.0/8")
		}
	}
	for _, re := range i.KeepAwakeProcesses {
		if _, err := regexp.Compile(re); err != nil {
			bad("idle.keep_awake_processes", re, "not a regular expression: %v", err)
		}
	}
	// !(x >= 0), not x < 0: nonsense has refused NaN, but a comparison
	// with NaN is always false.
	if !(i.KeepAwakeLoad >= 0) {
		bad("idle.keep_awake_load", i.KeepAwakeLoad, "must not be negative")
	}
	if !oneOf(c.Action.Type, Actions...) {
		bad("action.type", c.Action.Type, "must be one of %s", strings.Join(Actions, ", "))
	}
	if c.Action.Type == "command" && strings.TrimSpace(c.Action.Command) == "" {
		bad("action.command", `""`, "must be set when action.type = command")
	}
	if _, err := notify.ParseFilter(c.Notify.Events); err != nil {
		bad("notify.events", c.Notify.Events, "%v", err)
	}
	if w := c.Notify.Webhook; w != "" && !strings.HasPrefix(w, "http://") && !strings.HasPrefix(w, "https://") {
		bad("notify.webhook", "(hidden)", "must be an http:// or https:// URL")
	}
	if c.Notify.Webhook != "" && c.Notify.WebhookURLFile != "" {
		bad("notify.webhook_url_file", c.Notify.WebhookURLFile, "set either webhook or webhook_url_file, not both")
	}
	if t := c.Notify.SNSTopic; t != "" && !strings.HasPrefix(t, "arn:") {
		bad("notify.sns_topic", t, "must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
	}
	if c.CloudWatch.Enabled {
		if !cloudwatch.ValidPeriod(c.CloudWatch.Period.Duration) {
			bad("cloudwatch.period", c.CloudWatch.Period, "must be 1s, 5s, 10s, 30s or a whole number of minutes")
		}
		if c.CloudWatch.Namespace == "" || c.CloudWatch.MetricName == "" {
			bad("cloudwatch.namespace", c.CloudWatch.Namespace, "namespace and metric_name must be set")
		}
	}
	for _, h := range c.Tunnels.Hosts {
		if h == "" || strings.HasPrefix(h, "-") || strings.ContainsAny(h, " \t") {
			bad("tunnels.hosts", fmt.Sprintf("%q", h), "not an ssh_config Host name")
		}
	}
	for _, o := range c.Tunnels.Options {
		if k, _, ok := strings.Cut(o, "="); !ok || k == "" {
			bad("tunnels.options", o, "must be Key=Value, as for ssh -o")
		}
	}
	if c.Action.Timeout.Duration <= 0 {
		bad("action.timeout", c.Action.Timeout, "must be positive")
	}
	errs = append(errs, c.validateVPN()...)
	return errors.Join(errs...)
}

// CheckFiles reads what the agent reads at start from the files the
// settings name, as `connwatch config check` does: the webhook URL file
// and the metrics endpoint's web configuration file.
// Validate does not touch files. Warnings are for files that work but
// should be tightened (one every user can read); an error names the
// file, never a secret in it.
func (c Agent) CheckFiles() (warnings []string, err error) {
	var errs []error
	if p := c.Notify.WebhookURLFile; p != "" {
		f, err := secret.ReadFile(p)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("notify.webhook_url_file: %w", err))
		case !strings.HasPrefix(f.Value, "http://") && !strings.HasPrefix(f.Value, "https://"):
			errs = append(errs, &FieldError{Key: "notify.webhook_url_file", Value: p, Msg: "does not hold an http:// or https:// URL"})
		case f.WorldReadable:
			warnings = append(warnings, fmt.Sprintf("notify.webhook_url_file: %s can be read by every user (chmod o-r)", p))
		}
	}
	if c.MetricsAddr != "" {
		if err := promsink.ValidateWebConfig(c.MetricsWebConfigFile); err != nil {
			errs = append(errs, fmt.Errorf("metrics_web_config_file: %w", err))
		}
	}
	return warnings, errors.Join(errs...)
}

// clientVPNEndpoint is the shape of a Client VPN endpoint id.
var clientVPNEndpoint = regexp.MustCompile(`^cvpn-endpoint-[0-9a-f]{8,17}$`)

func (c Agent) validateVPN() []error {
	var errs []error
	bad := func(key string, v any, format string, a ...any) {
		errs = append(errs, &FieldError{Key: key, Value: v, Msg: fmt.Sprintf(format, a...)})
	}
	watched := c.Kinds()
	if c.Idle.KeepAwakeKinds != nil && len(c.Idle.KeepAwakeKinds) == 0 {
		bad("idle.keep_awake_kinds", "[]", "list at least one kind; leave it unset for every watched kind")
	}
	for _, k := range c.Idle.KeepAwakeKinds {
		kind, ok := session.ParseKind(k)
		switch {
		case !ok:
			bad("idle.keep_awake_kinds", fmt.Sprintf("%q", k), "not a session kind (ssh, wireguard, openvpn, aws-client-vpn)")
		case !slices.Contains(watched, kind):
			bad("idle.keep_awake_kinds", k, "is not enabled: set %s.enabled = true", strings.ReplaceAll(k, "-", "_"))
		}
	}
	if w := c.WireGuard; w.Enabled {
		if w.PollInterval.Duration < 100*time.Millisecond || w.PollInterval.Duration > MaxInterval {
			bad("wireguard.poll_interval", w.PollInterval, "must be between 100ms and %v", MaxInterval)
		}
		if w.HandshakeTimeout.Duration < time.Second {
			bad("wireguard.handshake_timeout", w.HandshakeTimeout, "must be at least 1s (WireGuard's own is 3m)")
		}
		for _, name := range w.Interfaces {
			if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
				bad("wireguard.interfaces", fmt.Sprintf("%q", name), "not a network interface name")
			}
		}
	}
	for key := range c.WireGuard.Peers {
		if b, err := base64.StdEncoding.DecodeString(key); err != nil || len(b) != 32 {
			bad("wireguard.peers", fmt.Sprintf("%q", key), "not a WireGuard public key (44 characters of base64)")
		}
	}
	if o := c.OpenVPN; o.Enabled {
		if o.PollInterval.Duration < 100*time.Millisecond || o.PollInterval.Duration > MaxInterval {
			bad("openvpn.poll_interval", o.PollInterval, "must be between 100ms and %v", MaxInterval)
		}
		if len(o.Servers) == 0 {
			bad("openvpn.server", "[]", "add at least one [[openvpn.server]] with management or status_file")
		}
		names := map[string]bool{}
		for i, srv := range o.Servers {
			key := fmt.Sprintf("openvpn.server[%d]", i)
			if names[srv.Name] {
				bad(key+".name", fmt.Sprintf("%q", srv.Name), "two servers with the same name")
			}
			names[srv.Name] = true
			if (srv.Management == "") == (srv.StatusFile == "") {
				bad(key, cmp.Or(srv.Name, "(unnamed)"), "set exactly one of management and status_file")
			}
			if srv.Management != "" {
				if _, _, err := openvpn.ParseAddr(srv.Management); err != nil {
					bad(key+".management", srv.Management, "want unix:/path, tcp:host:port or host:port")
				}
			}
			if srv.PasswordFile != "" && srv.Management == "" {
				bad(key+".password_file", srv.PasswordFile, "is for the management interface")
			}
		}
	}
	if a := c.AWSClientVPN; a.Enabled {
		if a.PollInterval.Duration < 5*time.Second {
			bad("aws_client_vpn.poll_interval", a.PollInterval, "must be at least 5s (the API is rate limited)")
		} else if a.PollInterval.Duration > 30*time.Minute {
			bad("aws_client_vpn.poll_interval", a.PollInterval, "must be at most 30m (the API lists ended connections for an hour only)")
		}
		if len(a.Endpoints) == 0 {
			bad("aws_client_vpn.endpoints", "[]", "list at least one Client VPN endpoint id")
		}
		for _, e := range a.Endpoints {
			if !clientVPNEndpoint.MatchString(e) {
				bad("aws_client_vpn.endpoints", fmt.Sprintf("%q", e), "not a Client VPN endpoint id like cvpn-endpoint-0123456789abcdef0")
			}
		}
	}
	return errs
}

// nonsense returns an error for every number in v that no key may hold:
// NaN and infinite floats, negative durations. It walks every field, so a
// key added later is checked too; key is the TOML key of v.
func nonsense(v reflect.Value, key string) []error {
	var errs []error
	switch v.Kind() {
	case reflect.Struct:
		if d, ok := v.Interface().(Duration); ok {
			if d.Duration < 0 {
				errs = append(errs, &FieldError{Key: key, Value: d, Msg: "must not be negative"})
			}
			return errs
		}
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
			if name == "" || name == "-" || !t.Field(i).IsExported() {
				continue
			}
			if key != "" {
				name = key + "." + name
			}
			errs = append(errs, nonsense(v.Field(i), name)...)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			errs = append(errs, nonsense(v.Index(i), fmt.Sprintf("%s[%d]", key, i))...)
		}
	case reflect.Float32, reflect.Float64:
		if f := v.Float(); math.IsNaN(f) || math.IsInf(f, 0) {
			errs = append(errs, &FieldError{Key: key, Value: f, Msg: "must be a finite number"})
		}
	}
	return errs
}

// EvaluationPeriods is N = idle_after / period.
func (c Agent) EvaluationPeriods() int {
	if c.Idle.Period.Duration <= 0 {
		return 0
	}
	return int(c.Idle.IdleAfter.Duration / c.Idle.Period.Duration)
}

// IgnoreNets parses IgnoreCIDRs (valid after Validate).
func (c Agent) IgnoreNets() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range c.Idle.IgnoreCIDRs {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// KeepAwakePatterns compiles KeepAwakeProcesses (valid after Validate).
func (c Agent) KeepAwakePatterns() []*regexp.Regexp {
	var out []*regexp.Regexp
	for _, s := range c.Idle.KeepAwakeProcesses {
		if re, err := regexp.Compile(s); err == nil {
			out = append(out, re)
		}
	}
	return out
}

func oneOf(s string, set ...string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}
