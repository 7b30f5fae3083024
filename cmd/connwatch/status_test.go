package main

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testdata/proc-openssh-9.2 was recorded by scripts/record-proc.sh from a
// real OpenSSH 9.2 sshd with a tty, a notty, an ssh -N and an sftp session
// of cwtest, and three clients parked at the password prompt as root,
// cwtest and an invalid user. Its status (Name, State, Uid, Gid), exe and
// host-files were added afterwards, as the script now records them, from
// what that Debian 12 machine had: root monitors and listener, net
// children as the privilege separation user, user children as cwtest,
// root's /usr/sbin/sshd and /usr/lib/openssh/sftp-server.
const recorded = "testdata/proc-openssh-9.2"

func TestStatusJSONRecorded(t *testing.T) {
	code, stdout, stderr := runCLI(t, []string{"status", "--json", "--proc", recorded})
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got struct {
		Sessions []struct {
			ID             string  `json:"id"`
			Kind           string  `json:"kind"`
			User           string  `json:"user"`
			RemoteAddr     string  `json:"remote_addr"`
			RemotePort     int     `json:"remote_port"`
			LocalPort      int     `json:"local_port"`
			TTY            *string `json:"tty"`
			Mode           string  `json:"mode"`
			PID            int     `json:"pid"`
			StartedAt      string  `json:"started_at"`
			LastActivityAt *string `json:"last_activity_at"`
		} `json:"sessions"`
		PendingAuth []struct {
			User       string `json:"user"`
			RemoteAddr string `json:"remote_addr"`
			RemotePort int    `json:"remote_port"`
		} `json:"pending_auth"`
		Complete bool              `json:"complete"`
		Warnings []json.RawMessage `json:"warnings"`
	}
	dec := json.NewDecoder(strings.NewReader(stdout))
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("decode %q: %v", stdout, err)
	}
	var modes, pending []string
	for _, s := range got.Sessions {
		if s.Kind != "ssh" || s.User != "cwtest" || s.RemoteAddr != "127.0.0.1" || s.LocalPort != 22022 || s.RemotePort == 0 || s.PID == 0 || s.ID == "" || s.StartedAt == "" {
			t.Errorf("session fields wrong: %+v", s)
		}
		if (s.Mode == "tty") != (s.TTY != nil && *s.TTY == "pts/0") {
			t.Errorf("mode %s with tty %v", s.Mode, s.TTY)
		}
		if s.LastActivityAt != nil {
			t.Errorf("a recorded tree has no activity source, got %s", *s.LastActivityAt)
		}
		modes = append(modes, s.Mode)
	}
	for _, p := range got.PendingAuth {
		pending = append(pending, p.User)
	}
	sort.Strings(modes)
	sort.Strings(pending)
	if diff := cmp.Diff([]string{"forward", "notty", "sftp", "tty"}, modes); diff != "" {
		t.Errorf("modes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"cwtest", "root", "unknown"}, pending); diff != "" {
		t.Errorf("pending users (-want +got):\n%s", diff)
	}
	if !got.Complete || got.Warnings == nil || len(got.Warnings) != 0 {
		t.Errorf("complete=%v warnings=%s, want complete with an empty list", got.Complete, got.Warnings)
	}
}

func TestStatusTableRecorded(t *testing.T) {
	code, stdout, _ := runCLI(t, []string{"status", "--proc", recorded})
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"USER", "IDLE", "tty pts/0", "sftp", "forward", "3 connections at the authentication stage (not counted)", "unknown"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
}

func TestStatusDetectionFailed(t *testing.T) {
	code, _, stderr := runCLI(t, []string{"status", "--proc", filepath.Join(t.TempDir(), "none")})
	if code != exitFailure || !strings.Contains(stderr, "process table unavailable") {
		t.Errorf("exit %d stderr %q, want %d naming the failure", code, stderr, exitFailure)
	}
}
