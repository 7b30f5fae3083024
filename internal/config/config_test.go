package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
