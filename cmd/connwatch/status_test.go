package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/report"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
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

// status says when there is no sshd to connect to and no agent watching,
// which an empty table alone would hide.
func TestStatusSurroundings(t *testing.T) {
	writeView := func(t *testing.T, pid int, updated time.Time) string {
		dir := t.TempDir()
		v := agent.View{PID: pid, Updated: updated, Action: "dry-run"}
		if err := atomicfile.WriteJSON(filepath.Join(dir, agent.ViewFile), v, 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	live := writeView(t, os.Getpid(), time.Now())
	tests := []struct {
		name     string
		proc     string
		stateDir string
		want     map[string]string // notice code -> part of its message
	}{
		{"recorded sshd, live agent", recorded, live, map[string]string{}},
		{"no agent ever", recorded, t.TempDir(), map[string]string{report.NoticeNoAgent: "no agent has run with state directory"}},
		{"agent gone", recorded, writeView(t, dead.Process.Pid, time.Now().Add(-time.Hour)), map[string]string{report.NoticeNoAgent: "is not running"}},
		{"agent stuck", recorded, writeView(t, os.Getpid(), time.Now().Add(-5*time.Minute)), map[string]string{report.NoticeNoAgent: "last wrote its view 5m"}},
		{"no sshd", emptyProc(t, t.TempDir()), live, map[string]string{report.NoticeNoSSHD: "no sshd process found"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, []string{"status", "--json", "--proc", tt.proc, "--state-dir", tt.stateDir})
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var got report.Status
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatal(err)
			}
			if got.AgentRunning != (tt.want[report.NoticeNoAgent] == "") {
				t.Errorf("agent_running %v", got.AgentRunning)
			}
			codes := map[string]string{}
			for _, n := range got.Notices {
				codes[n.Code] = n.Message
			}
			if len(codes) != len(tt.want) {
				t.Errorf("notices %+v, want codes %v", got.Notices, tt.want)
			}
			for code, part := range tt.want {
				if !strings.Contains(codes[code], part) {
					t.Errorf("notice %s = %q, want it to say %q", code, codes[code], part)
				}
			}
			// The table says the same.
			_, table, _ := runCLI(t, []string{"status", "--proc", tt.proc, "--state-dir", tt.stateDir})
			if n := strings.Count(table, "\nnote: "); n != len(tt.want) {
				t.Errorf("table has %d notes, want %d:\n%s", n, len(tt.want), table)
			}
		})
	}
}

// TestStatusFromAgentView: with a running agent whose view is whole and
// fresh, status shows the agent's sessions and pending connections
// without reading /proc (source "agent"); --scan, another procfs root, a
// view older than 15 s, of some ports only, or from an agent that does not
// publish its listeners make it scan.
func TestStatusFromAgentView(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	ag := connwatchCmd(t, "agent", "--proc", recorded, "--state-dir", state, "--events", filepath.Join(dir, "events.jsonl"),
		"--period", "1s", "--idle-after", "1h", "--boot-grace", "0", "--warn-before", "0", "--wall=false",
		"--metrics-addr", "", "--sshd-log", "", "--action", "dry-run")
	var agentErr testproc.Buffer
	ag.Stderr = &agentErr
	if err := ag.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ag.Process.Kill(); _ = ag.Wait() })
	var view *agent.View
	for deadline := time.Now().Add(15 * time.Second); ; {
		if v, err := agent.LoadView(state); err == nil && v.Listeners != nil && len(v.Sessions) > 0 {
			view = v
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no whole agent view in %s within 15 s; agent stderr:\n%s", state, agentErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	status := func(args ...string) report.Status {
		t.Helper()
		code, stdout, stderr := runCLI(t, append([]string{"status", "--json", "--state-dir", state}, args...))
		if code != exitOK {
			t.Fatalf("status %v: exit %d: %s", args, code, stderr)
		}
		var st report.Status
		if err := json.Unmarshal([]byte(stdout), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	type key struct {
		User       string
		RemotePort int
		Mode       string
	}
	keys := func(st report.Status) (sess, pending []key) {
		for _, s := range st.Sessions {
			sess = append(sess, key{s.User, s.RemotePort, string(s.Mode)})
		}
		for _, p := range st.PendingAuth {
			pending = append(pending, key{p.User, p.RemotePort, ""})
		}
		return sess, pending
	}

	scanned := status("--scan", "--proc", recorded)
	fromAgent := status("--proc", recorded)
	if scanned.Source != report.SourceScan || fromAgent.Source != report.SourceAgent {
		t.Fatalf("sources %q and %q, want scan and agent", scanned.Source, fromAgent.Source)
	}
	ss, sp := keys(scanned)
	as, ap := keys(fromAgent)
	if diff := cmp.Diff(ss, as); diff != "" || len(ss) == 0 {
		t.Errorf("the agent's sessions differ from a scan of the same tree (-scan +agent):\n%s", diff)
	}
	if diff := cmp.Diff(sp, ap); diff != "" || len(sp) == 0 {
		t.Errorf("the agent's pending connections differ from a scan's (-scan +agent):\n%s", diff)
	}
	if !fromAgent.Complete || len(fromAgent.Notices) != 0 {
		t.Errorf("complete %v, notices %+v: the recorded tree has a listener and the agent runs", fromAgent.Complete, fromAgent.Notices)
	}
	if st := status("--scan", "--proc", recorded); st.Source != report.SourceScan {
		t.Errorf("--scan: source %q", st.Source)
	}
	if st := status(); st.Source != report.SourceScan {
		t.Errorf("status of /proc with an agent watching %s: source %q", recorded, st.Source)
	}
	_, table, _ := runCLI(t, []string{"status", "--state-dir", state, "--proc", recorded})
	if !strings.Contains(table, "Sessions as the agent (pid") {
		t.Errorf("the table does not say where its sessions come from:\n%s", table)
	}

	// Views status must not stand for a scan: too old, or from an agent
	// that does not publish its listeners. The agent is stopped first so
	// it does not rewrite them.
	_ = ag.Process.Kill()
	_ = ag.Wait()
	for name, v := range map[string]agent.View{
		"20 s old":     {PID: os.Getpid(), Updated: time.Now().Add(-20 * time.Second), Listeners: view.Listeners, Sessions: view.Sessions, Scope: view.Scope},
		"no listeners": {PID: os.Getpid(), Updated: time.Now(), Sessions: view.Sessions, Scope: view.Scope},
		"some ports":   {PID: os.Getpid(), Updated: time.Now(), Listeners: view.Listeners, Sessions: view.Sessions, Scope: agent.Scope{ProcRoot: recorded, Ports: []int{22}}},
	} {
		if err := atomicfile.WriteJSON(filepath.Join(state, agent.ViewFile), v, 0o644); err != nil {
			t.Fatal(err)
		}
		if st := status("--proc", recorded); st.Source != report.SourceScan {
			t.Errorf("%s view: source %q, want a scan", name, st.Source)
		}
	}
}
