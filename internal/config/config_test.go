package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExampleIsValidAndDefault(t *testing.T) {
	cfg, err := Load("../../examples/connwatch.toml")
	if err != nil {
		t.Fatal(err)
	}
	def := Default()
	if cfg.Idle.IdleAfter != def.Idle.IdleAfter || cfg.Action.Type != "dry-run" || cfg.EvaluationPeriods() != 15 {
		t.Errorf("example differs from defaults: %+v", cfg)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, text string
		want       []string
	}{
		{"unknown.toml", "[idle]\nidle_aftr = \"15m\"\n", []string{"unknown.toml", "unknown key idle.idle_aftr"}},
		{"syntax.toml", "events = \"-\"\nscan_interval = = 1\n", []string{"syntax.toml:2"}},
		{"duration.toml", "[idle]\nperiod = \"fortnight\"\n", []string{"duration.toml", "fortnight"}},
		{"window.toml", "[idle]\nperiod = \"1m\"\nidle_after = \"90s\"\n", []string{"idle.idle_after = 1m30s", "whole number of periods"}},
		{"m.toml", "[idle]\nidle_after = \"3m\"\ndatapoints_to_alarm = 4\n", []string{"idle.datapoints_to_alarm = 4"}},
		{"action.toml", "[action]\ntype = \"explode\"\n", []string{"action.type = explode", "dry-run"}},
		{"command.toml", "[action]\ntype = \"command\"\n", []string{"action.command"}},
		{"cidr.toml", "[idle]\nignore_cidrs = [\"10.0.0.0/33\"]\n", []string{"idle.ignore_cidrs = 10.0.0.0/33"}},
		{"regexp.toml", "[idle]\nkeep_awake_processes = [\"(\"]\n", []string{"idle.keep_awake_processes"}},
		{"type.toml", "scan_interval = 5\n", []string{"type.toml"}},
		{"nokinds.toml", "[idle]\nkeep_awake_kinds = []\n", []string{"idle.keep_awake_kinds = []", "at least one"}},
		{"kind.toml", "[idle]\nkeep_awake_kinds = [\"ipsec\"]\n", []string{"idle.keep_awake_kinds = \"ipsec\"", "not a session kind"}},
		{"notenabled.toml", "[idle]\nkeep_awake_kinds = [\"ssh\", \"openvpn\"]\n", []string{"idle.keep_awake_kinds = openvpn", "openvpn.enabled = true"}},
		{"wgkey.toml", "[wireguard]\nenabled = true\n[wireguard.peers]\n\"abc\" = \"alice\"\n", []string{"wireguard.peers = \"abc\"", "public key"}},
		{"wgpoll.toml", "[wireguard]\nenabled = true\npoll_interval = \"10ms\"\n", []string{"wireguard.poll_interval = 10ms"}},
		{"ovpn.toml", "[openvpn]\nenabled = true\n[[openvpn.server]]\nname = \"office\"\n", []string{"openvpn.server[0] = office", "exactly one of management and status_file"}},
		{"ovpnaddr.toml", "[openvpn]\nenabled = true\n[[openvpn.server]]\nmanagement = \"unix:relative.sock\"\n", []string{"openvpn.server[0].management = unix:relative.sock"}},
		{"ovpnnone.toml", "[openvpn]\nenabled = true\n", []string{"openvpn.server", "at least one"}},
		{"ovpndup.toml", "[openvpn]\nenabled = true\n[[openvpn.server]]\nstatus_file = \"/a\"\n[[openvpn.server]]\nstatus_file = \"/b\"\n", []string{"openvpn.server[1].name", "same name"}},
		{"cvpn.toml", "[aws_client_vpn]\nenabled = true\nendpoints = [\"vpn-1\"]\n", []string{"aws_client_vpn.endpoints = \"vpn-1\"", "cvpn-endpoint-"}},
		// Values no key may hold, and windows longer than a day.
		{"huge.toml", "[idle]\nperiod = \"1s\"\nidle_after = \"2000000h\"\n", []string{"huge.toml", "idle.idle_after = 2000000h0m0s", "7200000000 periods of 1s", "at most 24h0m0s"}},
		{"day.toml", "[idle]\nperiod = \"1h\"\nidle_after = \"25h\"\n", []string{"day.toml", "idle.idle_after = 25h0m0s", "at most 24h0m0s"}},
		{"nan.toml", "[idle]\nkeep_awake_load = nan\n", []string{"nan.toml", "idle.keep_awake_load = NaN", "finite"}},
		{"inf.toml", "[idle]\nkeep_awake_load = inf\n", []string{"inf.toml", "idle.keep_awake_load = +Inf", "finite"}},
		{"neginf.toml", "[idle]\nkeep_awake_load = -inf\n", []string{"neginf.toml", "idle.keep_awake_load = -Inf", "finite"}},
		{"negload.toml", "[idle]\nkeep_awake_load = -0.5\n", []string{"idle.keep_awake_load = -0.5", "negative"}},
		{"negperiod.toml", "[idle]\nperiod = \"-1m\"\nidle_after = \"-15m\"\n", []string{"idle.period = -1m0s", "idle.idle_after = -15m0s", "must not be negative"}},
		{"neggrace.toml", "[idle]\nboot_grace = \"-1s\"\n", []string{"idle.boot_grace = -1s", "must not be negative"}},
		{"neghold.toml", "[idle]\nstart_hold_max = \"-10m\"\n", []string{"neghold.toml", "idle.start_hold_max = -10m0s", "must not be negative"}},
		{"badhold.toml", "[idle]\nstart_hold_max = \"an hour\"\n", []string{"badhold.toml", "an hour", "like 90s"}},
		{"negbatch.toml", "[cloudwatch]\nbatch = \"-5m\"\n", []string{"cloudwatch.batch = -5m0s", "must not be negative"}},
		{"negprobe.toml", "[tunnels]\nprobe_interval = \"-30s\"\n", []string{"tunnels.probe_interval = -30s", "must not be negative"}},
		{"negtimeout.toml", "[action]\ntimeout = \"-1s\"\n", []string{"action.timeout = -1s", "must not be negative"}},
		{"negwg.toml", "[wireguard]\nhandshake_timeout = \"-3m\"\n", []string{"wireguard.handshake_timeout = -3m0s", "must not be negative"}},
		{"mmax.toml", "[idle]\ndatapoints_to_alarm = 9223372036854775807\n", []string{"idle.datapoints_to_alarm = 9223372036854775807", "between 1 and"}},
		{"mneg.toml", "[idle]\ndatapoints_to_alarm = -1\n", []string{"idle.datapoints_to_alarm = -1", "between 1 and"}},
		{"scan.toml", "scan_interval = \"2000000h\"\n", []string{"scan_interval = 2000000h0m0s", "between 10ms and 1h0m0s"}},
		{"wgslow.toml", "[wireguard]\nenabled = true\npoll_interval = \"2h\"\n", []string{"wireguard.poll_interval = 2h0m0s", "between 100ms and 1h0m0s"}},
		{"cvpnslow.toml", "[aws_client_vpn]\nenabled = true\nendpoints = [\"cvpn-endpoint-0123456789abcdef0\"]\npoll_interval = \"1h\"\n", []string{"aws_client_vpn.poll_interval = 1h0m0s", "at most 30m"}},
		{"webhookboth.toml", "[notify]\nwebhook = \"https://hooks.example.com/x\"\nwebhook_url_file = \"/etc/connwatch/webhook.url\"\n", []string{"notify.webhook_url_file = /etc/connwatch/webhook.url", "not both"}},
		{"cvpnpoll.toml", "[aws_client_vpn]\nenabled = true\nendpoints = [\"cvpn-endpoint-0123456789abcdef0\"]\npoll_interval = \"1s\"\n", []string{"aws_client_vpn.poll_interval = 1s", "rate limited"}},
	}
	for _, tt := range tests {
		_, err := Load(write(tt.name, tt.text))
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", tt.name, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tt.name, err, w)
			}
		}
	}
	if _, err := Load(filepath.Join(dir, "none.toml")); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) {
		t.Errorf("missing file: %v", err)
	}
}

// TestWindowBound: the idle window may be exactly one day, of any period.
func TestWindowBound(t *testing.T) {
	for _, text := range []string{
		"[idle]\nperiod = \"1s\"\nidle_after = \"24h\"\n",
		"[idle]\nperiod = \"24h\"\nidle_after = \"24h\"\n",
		"[idle]\nperiod = \"1m\"\nidle_after = \"1440m\"\ndatapoints_to_alarm = 1440\nkeep_awake_load = 1e308\n",
	} {
		cfg := Default()
		if err := Decode("x", text, &cfg); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%q: %v", text, err)
		}
	}
}

// TestNonsenseEverywhere: every duration and float field, found by
// walking the struct, refuses negative, NaN and infinite values, naming
// its TOML key.
func TestNonsenseEverywhere(t *testing.T) {
	cfg := Default()
	cfg.OpenVPN.Servers = []OpenVPNServer{{StatusFile: "/a"}}
	keys := map[string]bool{}
	var walk func(v reflect.Value, key string)
	walk = func(v reflect.Value, key string) {
		switch v.Kind() {
		case reflect.Struct:
			if d, ok := v.Addr().Interface().(*Duration); ok {
				keys[key] = true
				d.Duration = -time.Nanosecond
				return
			}
			for i := range v.NumField() {
				name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("toml"), ",")
				if key != "" {
					name = key + "." + name
				}
				walk(v.Field(i), name)
			}
		case reflect.Slice:
			for i := range v.Len() {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", key, i))
			}
		case reflect.Float64:
			keys[key] = true
			v.SetFloat(math.NaN())
		}
	}
	walk(reflect.ValueOf(&cfg).Elem(), "")
	if !keys["idle.keep_awake_load"] || !keys["idle.idle_after"] || len(keys) < 15 {
		t.Fatalf("walked %v", keys)
	}
	err := cfg.Validate()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	for k := range keys {
		if !strings.Contains(err.Error(), k+" = ") {
			t.Errorf("error does not name %s: %v", k, err)
		}
	}
}

func TestOverrides(t *testing.T) {
	cfg := Default()
	if err := Decode("x", "[idle]\nperiod = \"1s\"\nidle_after = \"10s\"\nignore_users = [\"backup\"]\n", &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Idle.Period.Duration != time.Second || cfg.EvaluationPeriods() != 10 || cfg.Idle.WarnBefore.Duration != 5*time.Minute {
		t.Errorf("cfg %+v", cfg.Idle)
	}
}

// The start hold is read only with an EC2 action and a non-zero cap.
func TestStartHold(t *testing.T) {
	cfg := Default()
	if cfg.Idle.StartHoldMax.Duration != time.Hour || cfg.StartHold() {
		t.Errorf("default: start_hold_max %v, read %v; want 1h, not read with dry-run", cfg.Idle.StartHoldMax, cfg.StartHold())
	}
	for _, tt := range []struct {
		action string
		max    time.Duration
		want   bool
	}{
		{"ec2-stop", time.Hour, true},
		{"ec2-hibernate", 10 * time.Minute, true},
		{"ec2-stop", 0, false},
		{"poweroff", time.Hour, false},
		{"command", time.Hour, false},
		{"dry-run", time.Hour, false},
	} {
		cfg.Action.Type, cfg.Idle.StartHoldMax.Duration = tt.action, tt.max
		if got := cfg.StartHold(); got != tt.want {
			t.Errorf("%s, start_hold_max %v: StartHold() = %v", tt.action, tt.max, got)
		}
	}
	cfg = Default()
	if err := Decode("x", "[idle]\nstart_hold_max = \"0s\"\n", &cfg); err != nil || cfg.Idle.StartHoldMax.Duration != 0 || cfg.Validate() != nil {
		t.Errorf("start_hold_max = 0s: %v, %v", err, cfg.Idle.StartHoldMax)
	}
}

func TestVPNKinds(t *testing.T) {
	cfg := Default()
	text := `
[idle]
keep_awake_kinds = ["ssh", "aws-client-vpn"]
[wireguard]
enabled = true
[wireguard.peers]
"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=" = "alice"
[aws_client_vpn]
enabled = true
endpoints = ["cvpn-endpoint-0123456789abcdef0"]
`
	if err := Decode("vpn.toml", text, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(cfg.Kinds()); got != "[ssh wireguard aws-client-vpn]" {
		t.Errorf("kinds %s", got)
	}
	if got := fmt.Sprint(cfg.IgnoreKinds()); got != "[wireguard openvpn]" {
		t.Errorf("ignored kinds %s", got)
	}
	if cfg.WireGuard.PollInterval.Duration != 5*time.Second || cfg.AWSClientVPN.PollInterval.Duration != time.Minute {
		t.Errorf("default poll intervals %v %v", cfg.WireGuard.PollInterval, cfg.AWSClientVPN.PollInterval)
	}
	if got := fmt.Sprint(cfg.KeepAwakeKinds()); got != "[ssh aws-client-vpn]" {
		t.Errorf("keep-awake kinds %s", got)
	}
	if def := Default(); def.IgnoreKinds() != nil {
		t.Errorf("by default every watched kind keeps the machine up: %v", def.IgnoreKinds())
	}
}

func TestCheckFiles(t *testing.T) {
	dir := t.TempDir()
	file := func(name, text string, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := Default()
	if w, err := cfg.CheckFiles(); err != nil || len(w) != 0 {
		t.Errorf("defaults: %v %v", w, err)
	}
	cfg.Notify.WebhookURLFile = file("ok.url", "https://hooks.slack.com/services/T0/B0/secret\n", 0o600)
	if w, err := cfg.CheckFiles(); err != nil || len(w) != 0 {
		t.Errorf("a good URL file: %v %v", w, err)
	}
	cfg.Notify.WebhookURLFile = file("open.url", "https://hooks.slack.com/services/T0/B0/secret\n", 0o644)
	if w, err := cfg.CheckFiles(); err != nil || len(w) != 1 || !strings.Contains(w[0], "every user") {
		t.Errorf("a world-readable URL file: %v %v", w, err)
	}
	for name, tt := range map[string]struct {
		text string
		perm os.FileMode
		want string
	}{
		"writable.url": {"https://hooks.example.com/x", 0o662, "lets others change it"},
		"ftp.url":      {"ftp://example.com/XXXXtokenXXXX", 0o600, "does not hold an http"},
		"empty.url":    {"", 0o600, "empty"},
	} {
		cfg.Notify.WebhookURLFile = file(name, tt.text, tt.perm)
		_, err := cfg.CheckFiles()
		if err == nil || !strings.Contains(err.Error(), "notify.webhook_url_file") || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "XXXX") {
			t.Errorf("%s: error %v, want one naming the key, the file and %q", name, err, tt.want)
		}
	}
}
