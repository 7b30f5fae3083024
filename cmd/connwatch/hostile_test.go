package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// fakeProc makes a /proc with nothing but what the agent needs to start.
func fakeProc(t *testing.T, bootID string) string {
	t.Helper()
	proc := filepath.Join(t.TempDir(), "proc")
	os.MkdirAll(filepath.Join(proc, "sys", "kernel", "random"), 0o755)
	os.MkdirAll(filepath.Join(proc, "net"), 0o755)
	os.WriteFile(filepath.Join(proc, "stat"), []byte("btime 1700000000\n"), 0o644)
	os.WriteFile(filepath.Join(proc, "sys", "kernel", "random", "boot_id"), []byte(bootID+"\n"), 0o644)
	return proc
}

// openTo lets the hostile user reach dir (t.TempDir's parents are 0700).
func openTo(dir string) {
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
}

// A state directory that another user owns (or can write) is refused at
// start: whoever writes policy.json there could make the agent stop the
// machine at once.
func TestAgentRefusesAStateDirAUserControls(t *testing.T) {
	u := testproc.HostileUser(t)
	base := t.TempDir()
	openTo(base)
	theirs := filepath.Join(base, "x")
	os.Mkdir(theirs, 0o755)
	u.Chown(t, theirs)
	u.Run(t, "echo '{}' > "+theirs+"/policy.json")
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o777)
	for dir, want := range map[string]string{theirs: "belongs to uid", open: "writable by group or others"} {
		cmd := connwatchCmd(t, "agent", "--proc", fakeProc(t, "3a1f6c1e-0000-4000-8000-000000000011"), "--state-dir", dir,
			"--events", filepath.Join(t.TempDir(), "events"), "--wall=false", "--metrics-addr", "", "--sshd-log", "", "--period", "1s", "--idle-after", "1s")
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { defer close(done); out, err = cmd.CombinedOutput() }()
		if !testproc.WaitClosed(done, 20*time.Second) {
			cmd.Process.Kill()
			t.Fatalf("agent with state dir %s did not exit", dir)
		}
		if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), dir) {
			t.Errorf("agent --state-dir %s: %v\n%s\nwant a refusal naming the directory and %q", dir, err, out, want)
		}
		if strings.Contains(string(out), `"type":"stop"`) {
			t.Errorf("agent stopped with a forged state:\n%s", out)
		}
	}
}

// A FIFO, a symlink to /dev/zero and a symlink to a root-only file in the
// lock directory: the agent goes on scanning and publishing its view, and
// none of them holds the machine or leaks into the view.
func TestAgentSurvivesPlantedLockFiles(t *testing.T) {
	u := testproc.HostileUser(t)
	base := t.TempDir()
	openTo(base)
	state := filepath.Join(base, "state")
	secret := filepath.Join(t.TempDir(), "secret.json")
	os.WriteFile(secret, []byte(`{"id":"s","reason":"ROOT ONLY SECRET","pid":0,"created":"2026-11-21T12:00:00Z"}`), 0o600)
	cmd := connwatchCmd(t, "agent", "--proc", fakeProc(t, "3a1f6c1e-0000-4000-8000-000000000012"), "--state-dir", state,
		"--events", filepath.Join(t.TempDir(), "events"), "--wall=false", "--metrics-addr", "", "--sshd-log", "",
		"--period", "1s", "--idle-after", "1h", "--boot-grace", "0")
	var stderr testproc.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	holds := filepath.Join(state, agent.HoldsDir)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := agent.LoadView(state); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no view; agent log:\n%s", stderr.String())
		}
	}
	u.Run(t, "cd "+holds+" && mkfifo fifo.json && ln -s /dev/zero zero.json && ln -s "+secret+" secret.json")
	// The view is rewritten at least every 10 s by a live loop.
	planted := time.Now()
	var v *agent.View
	for deadline := planted.Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var err error
		if v, err = agent.LoadView(state); err == nil && v.Updated.After(planted.Add(time.Second)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the view stopped updating after the files were planted; agent log:\n%s", stderr.String())
		}
	}
	if len(v.Policy.Holds) != 0 {
		t.Errorf("planted files hold the machine: %+v", v.Policy.Holds)
	}
	b, _ := os.ReadFile(filepath.Join(state, agent.ViewFile))
	if strings.Contains(string(b), "SECRET") {
		t.Errorf("a root-only file leaked into the view")
	}
	for _, name := range []string{"fifo.json", "zero.json", "secret.json"} {
		if !strings.Contains(stderr.String(), name) {
			t.Errorf("no warning names %s; agent log:\n%s", name, stderr.String())
		}
	}
}
