package main

import (
	"strings"

	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// The test binary doubles as connwatch when CONNWATCH_TEST_MAIN is set, so
// tests can run, kill -9 and restart the real thing.
func TestMain(m *testing.M) {
	if os.Getenv("CONNWATCH_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func connwatchCmd(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), "CONNWATCH_TEST_MAIN=1")
	return cmd
}

type line struct {
	Time   time.Time  `json:"time"`
	Type   string     `json:"type"`
	StopAt *time.Time `json:"stop_at"`
}

func readEvents(t *testing.T, path string) []line {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []line
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("bad event line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// TestKillNineMidCountdown kills the agent with SIGKILL halfway through
// the countdown and restarts it: the stop comes when it was due, not a
// whole window after the restart, and only once.
func TestKillNineMidCountdown(t *testing.T) {
	dir := t.TempDir()
	proc := filepath.Join(dir, "proc")
	os.MkdirAll(filepath.Join(proc, "sys", "kernel", "random"), 0o755)
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	os.WriteFile(filepath.Join(proc, "stat"), []byte("btime 1700000000\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "sys", "kernel", "random", "boot_id"), []byte("3a1f6c1e-0000-4000-8000-000000000002\n"), 0o644)
	events := filepath.Join(dir, "events.jsonl")
	marker := filepath.Join(dir, "stopped")
	args := []string{"agent", "--proc", proc, "--state-dir", filepath.Join(dir, "state"), "--events", events,
		"--period", "1s", "--idle-after", "6s", "--boot-grace", "0", "--warn-before", "0", "--wall=false", "--metrics-addr", "", "--sshd-log", "",
		"--action", "command", "--action-command", "date +%s.%N >> " + marker}

	first := connwatchCmd(t, args...)
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	var due time.Time
	for deadline := time.Now().Add(5 * time.Second); ; {
		if evs := readEvents(t, events); len(evs) > 0 && evs[0].Type == "idle_start" && evs[0].StopAt != nil {
			due = *evs[0].StopAt
			break
		}
		if time.Now().After(deadline) {
			first.Process.Kill()
			first.Wait()
			t.Fatalf("no idle_start event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Halfway: kill -9, restart at once.
	time.Sleep(time.Until(due.Add(-3 * time.Second)))
	first.Process.Signal(syscall.SIGKILL)
	first.Wait()
	second := connwatchCmd(t, args...)
	if err := second.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { second.Process.Kill(); second.Wait() }()

	var stopped time.Time
	for deadline := due.Add(4 * time.Second); ; {
		for _, e := range readEvents(t, events) {
			if e.Type == "stop" {
				stopped = e.Time
			}
		}
		if !stopped.IsZero() || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if stopped.IsZero() {
		t.Fatalf("no stop by %v after due %v; events %+v", time.Now(), due, readEvents(t, events))
	}
	if stopped.Before(due) || stopped.After(due.Add(1500*time.Millisecond)) {
		t.Errorf("stopped at %v, due %v: the countdown did not survive kill -9", stopped, due)
	}
	time.Sleep(1500 * time.Millisecond)
	second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Errorf("agent after SIGTERM: %v", err)
	}
	if b, _ := os.ReadFile(marker); len(b) == 0 || countLines(string(b)) != 1 {
		t.Errorf("action ran %d times", countLines(string(b)))
	}
}

func countLines(s string) int {
	n := 0
	for _, c := range s {
		if c == '\n' {
			n++
		}
	}
	return n
}

// TestAgentPublishesToCloudWatch runs the agent with --cloudwatch against
// the loopback AWS server, reached through the SDK's standard endpoint
// settings: datapoints arrive as the classic recipe sent them.
func TestAgentPublishesToCloudWatch(t *testing.T) {
	aws := awstest.New(t)
	aws.Env(t)
	dir := t.TempDir()
	proc := filepath.Join(dir, "proc")
	os.MkdirAll(filepath.Join(proc, "sys", "kernel", "random"), 0o755)
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	os.WriteFile(filepath.Join(proc, "stat"), []byte("btime 1700000000\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "sys", "kernel", "random", "boot_id"), []byte("3a1f6c1e-0000-4000-8000-000000000003\n"), 0o644)
	cmd := connwatchCmd(t, "agent", "--proc", proc, "--state-dir", filepath.Join(dir, "state"), "--events", filepath.Join(dir, "events"),
		"--wall=false", "--metrics-addr", "", "--sshd-log", "", "--cloudwatch", "--cloudwatch-period", "1s")
	var stderr strings.Builder
	cmd.Stderr = &lockedWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	deadline := time.Now().Add(15 * time.Second)
	for len(aws.Datapoints()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no datapoints; agent log:\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, d := range aws.Datapoints() {
		if d.Namespace != "EC2" || d.MetricName != "SSH Connections" || d.Dimension("InstanceId") != aws.InstanceID {
			t.Errorf("datapoint %+v", d)
		}
		if d.Value == nil || *d.Value != 0 {
			t.Errorf("value %v, want 0 (nobody connected)", d.Value)
		}
	}
	for _, r := range aws.Requests() {
		if r.Service == "monitoring" && (r.Auth == nil || !r.Auth.Verified) {
			t.Errorf("unsigned or badly signed CloudWatch request: %+v", r.Auth)
		}
	}
}
