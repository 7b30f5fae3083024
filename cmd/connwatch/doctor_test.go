package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/doctor"
	"github.com/connwatch/connwatch/internal/sshconfig"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

// runDoctor runs "connwatch doctor ARGS" as run does, with the doctor
// command added to the root if main.go does not add it (yet).
func runDoctor(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return runCLI(t, append([]string{"doctor"}, args...))
}

type doctorJSON struct {
	Findings []doctor.Finding `json:"findings"`
	Fix      *struct {
		File     string `json:"file"`
		Backup   string `json:"backup"`
		Changed  bool   `json:"changed"`
		Reloaded int    `json:"reloaded_pid"`
	} `json:"fix"`
}

func decodeDoctor(t *testing.T, stdout string) doctorJSON {
	t.Helper()
	var d doctorJSON
	if err := json.Unmarshal([]byte(stdout), &d); err != nil {
		t.Fatalf("decode --json output: %v\n%s", err, stdout)
	}
	return d
}

func severities(fs []doctor.Finding) map[string]doctor.Severity {
	m := map[string]doctor.Severity{}
	for _, f := range fs {
		m[f.ID] = f.Severity
	}
	return m
}

func TestDoctorUsage(t *testing.T) {
	for _, args := range [][]string{
		{"extra"}, {"--host", "h", "--sshd-config", "x"}, {"--ssh-config", "x"}, {"--reload"},
		{"--fix-file", "x"}, {"--connection", "user=alice"}, {"--host", "h", "--agent-config", "x"}, {"--bogus"},
	} {
		code, _, stderr := runDoctor(t, args...)
		if code != exitUsage || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want %d with a message", args, code, stderr, exitUsage)
		}
	}
}

func TestDoctorClient(t *testing.T) {
	sshdtest.RequireBinary(t, "ssh")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	orig := "Host tunnel\n  HostName 192.0.2.10\n  LocalForward 8080 localhost:80\n\nHost fast\n  ServerAliveInterval 15\n  TCPKeepAlive no\n"
	if err := os.WriteFile(cfg, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runDoctor(t, "--host", "fast", "-F", cfg)
	if code != exitOK || !strings.Contains(stdout, "a dead link is noticed after 45 s") || !strings.Contains(stdout, "1.4 MB a day") {
		t.Errorf("fast: exit %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = runDoctor(t, "--host", "tunnel", "-F", cfg, "--json")
	if code != exitFindings {
		t.Fatalf("tunnel: exit %d, want %d\n%s%s", code, exitFindings, stdout, stderr)
	}
	got := severities(decodeDoctor(t, stdout).Findings)
	if got[doctor.IDTCPKeepAliveOnly] != doctor.Warning || got[doctor.IDExitOnForwardFailure] != doctor.Warning {
		t.Errorf("tunnel findings %v", got)
	}

	code, stdout, stderr = runDoctor(t, "--host", "tunnel", "-F", cfg, "--fix", "--json")
	if code != exitOK {
		t.Fatalf("tunnel --fix: exit %d\n%s%s", code, stdout, stderr)
	}
	d := decodeDoctor(t, stdout)
	if d.Fix == nil || !d.Fix.Changed || d.Fix.Backup != cfg+doctor.BackupSuffix {
		t.Errorf("fix report %+v", d.Fix)
	}
	if b, _ := os.ReadFile(cfg + doctor.BackupSuffix); string(b) != orig {
		t.Errorf("backup %q", b)
	}
	// The other host is untouched by the block.
	code, stdout, _ = runDoctor(t, "--host", "fast", "-F", cfg)
	if code != exitOK || !strings.Contains(stdout, "45 s") {
		t.Errorf("fast after tunnel's fix: exit %d\n%s", code, stdout)
	}

	code, _, stderr = runDoctor(t, "--host", "x", "-F", filepath.Join(dir, "missing"))
	if code != exitFailure || !strings.Contains(stderr, "missing") {
		t.Errorf("missing config: exit %d, %q", code, stderr)
	}
}

// TestDoctorFixRoundTrip audits a real sshd started for the test, fixes
// it through a drop-in its config Includes, reloads it, and audits again.
func TestDoctorFixRoundTrip(t *testing.T) {
	dropDir := t.TempDir()
	srv := sshdtest.Start(t, sshdtest.Options{ExtraConfig: []string{"Include " + dropDir + "/*.conf"}})
	cfg := filepath.Join(srv.Dir, "sshd_config")
	agent := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(agent, []byte("[idle]\nperiod = \"1m\"\nidle_after = \"15m\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runDoctor(t, "--sshd-config", cfg, "--agent-config", agent, "--json")
	if code != exitFindings {
		t.Fatalf("before: exit %d, want %d\n%s%s", code, exitFindings, stdout, stderr)
	}
	before := severities(decodeDoctor(t, stdout).Findings)
	if before[doctor.IDClientAliveOff] != doctor.Warning || before[doctor.IDLoginGraceOff] != doctor.Warning {
		t.Errorf("before: findings %v, want clientalive-off and logingrace-off warnings", before)
	}

	target := filepath.Join(dropDir, doctor.DropInName)
	code, stdout, stderr = runDoctor(t, "--sshd-config", cfg, "--agent-config", agent, "--fix", "--fix-file", target, "--reload", "--json")
	if code != exitOK {
		t.Fatalf("--fix: exit %d\n%s%s", code, stdout, stderr)
	}
	d := decodeDoctor(t, stdout)
	if d.Fix == nil || !d.Fix.Changed || d.Fix.File != target || d.Fix.Backup != "" || d.Fix.Reloaded != srv.PID {
		t.Errorf("fix report %+v, want %s written and pid %d reloaded", d.Fix, target, srv.PID)
	}
	if out, err := exec.Command(sshconfig.SSHDPath, "-t", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t after the fix: %v: %s", err, out)
	}

	// The reloaded sshd still accepts logins.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ssh", append(srv.SSHArgs(), "true")...).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh after reload: %v: %s", err, out)
		}
		<-time.After(50 * time.Millisecond)
	}

	code, stdout, stderr = runDoctor(t, "--sshd-config", cfg, "--agent-config", agent)
	if code != exitOK || !strings.Contains(stdout, "a client that vanishes is dropped after 2 min") {
		t.Errorf("after: exit %d\n%s%s", code, stdout, stderr)
	}
	fixed, _ := os.ReadFile(target)

	// A fix that would not validate is refused, nothing changed: the
	// drop-in holds a value sshd rejects, here one doctor would replace;
	// doctor cannot read the settings and stops before writing.
	if err := os.WriteFile(filepath.Join(dropDir, "40-broken.conf"), []byte("ClientAliveIntervall 5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runDoctor(t, "--sshd-config", cfg, "--fix", "--fix-file", target)
	if code != exitFailure || !strings.Contains(stderr, "40-broken.conf: line 1: Bad configuration option") {
		t.Errorf("broken drop-in: exit %d\n%s%s", code, stdout, stderr)
	}
	if b, _ := os.ReadFile(target); !bytes.Equal(b, fixed) {
		t.Errorf("drop-in changed to %q", b)
	}
}
