package action_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/action"
)

func TestNew(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts action.Options
		want action.Action
	}{
		{"dry-run", action.Options{}, action.DryRun{}},
		{"dry-run", action.Options{DryRunOf: "ec2-stop"}, action.DryRun{Of: "ec2-stop"}},
		{"poweroff", action.Options{Timeout: time.Minute}, &action.Poweroff{Timeout: time.Minute}},
		{"ec2-stop", action.Options{}, &action.EC2Stop{}},
		{"ec2-hibernate", action.Options{}, &action.EC2Hibernate{}},
		{"command", action.Options{Command: "true", Timeout: time.Second}, &action.Command{Command: "true", Timeout: time.Second}},
	} {
		got, err := action.New(tt.name, tt.opts)
		if err != nil {
			t.Errorf("New(%q): %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) || got.Name() != tt.name {
			t.Errorf("New(%q) = %#v named %q, want %#v", tt.name, got, got.Name(), tt.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	for _, tt := range []struct {
		name    string
		opts    action.Options
		want    error
		mention string
	}{
		{"hibernate", action.Options{}, action.ErrUnknownAction, `"hibernate"`},
		{"", action.Options{}, action.ErrUnknownAction, `""`},
		{"EC2-Stop", action.Options{}, action.ErrUnknownAction, `"EC2-Stop"`},
		{"command", action.Options{Command: "  "}, action.ErrInvalidOptions, "empty command"},
		{"dry-run", action.Options{DryRunOf: "halt"}, action.ErrUnknownAction, `"halt"`},
		{"dry-run", action.Options{DryRunOf: "dry-run"}, action.ErrInvalidOptions, `"dry-run"`},
		{"poweroff", action.Options{Timeout: -time.Second}, action.ErrInvalidOptions, "-1s"},
	} {
		_, err := action.New(tt.name, tt.opts)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("New(%q, %+v) = %v, want %v mentioning %s", tt.name, tt.opts, err, tt.want, tt.mention)
		}
	}
	_, err := action.New("halt", action.Options{})
	for _, name := range action.Names() {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list %s", err, name)
		}
	}
}

func TestDryRun(t *testing.T) {
	r := action.Request{Reason: "no SSH session for 15m0s", IdleSince: time.Date(2026, 3, 1, 12, 0, 0, 0, time.FixedZone("CET", 3600))}
	for of, want := range map[string]string{
		"":              "dry run: would power off this machine: no SSH session for 15m0s (idle since 2026-03-01T11:00:00Z)",
		"ec2-hibernate": "dry run: would hibernate this EC2 instance (or stop it if it cannot hibernate): no SSH session for 15m0s (idle since 2026-03-01T11:00:00Z)",
	} {
		res, err := action.DryRun{Of: of}.Do(context.Background(), r)
		if err != nil || res.Summary != want || res.Action != "dry-run" {
			t.Errorf("DryRun{%q}.Do = %+v, %v; want %q", of, res, err, want)
		}
	}
}
