package main

import (
	"testing"

	"github.com/connwatch/connwatch/internal/config"
)

func TestRestartOnly(t *testing.T) {
	old := config.Default()
	new := old
	new.Idle.IdleAfter.Duration *= 2
	new.Action.Type = "poweroff"
	if got := restartOnly(old, new); len(got) != 0 {
		t.Errorf("policy and action changes are reloadable, got %v", got)
	}
	new.StateDir = "/elsewhere"
	new.Notify.Webhook = "https://example.invalid/hook"
	if got := restartOnly(old, new); len(got) != 2 || got[0] != "state_dir" || got[1] != "notify" {
		t.Errorf("got %v", got)
	}
}
