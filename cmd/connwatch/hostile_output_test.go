package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/testkit/procfixture"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// A user name, title or reason that would act on the terminal (ESC c
// resets it, CR returns to the start of the line, U+202E reverses what
// follows) and on Slack (<!channel> notifies everyone in the channel).
// sshd titles hold no brackets or spaces in user names, so neither does
// this.
const (
	hostileName  = "\x1bc<!channel>\rroot\u202e"
	hostileShown = `\x1bc<!channel>\rroot\u202e`
)

// terminalSafe fails when out holds anything a terminal acts on, other
// than the newlines that end lines.
func terminalSafe(t *testing.T, what, out string) {
	t.Helper()
	for _, r := range out {
		if (r < 0x20 && r != '\n') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == 0x202e {
			t.Errorf("%s prints %U to the terminal:\n%q", what, r, out)
			return
		}
	}
}

// TestStatusEscapesHostileTitles: sshd titles name the user, and a
// connection's user child and pending monitor are titled with whatever
// name the account or client has. The table shows it escaped; the JSON
// exactly.
func TestStatusEscapesHostileTitles(t *testing.T) {
	dir := t.TempDir()
	tree := procfixture.Tree{BootTime: 1_700_000_000,
		Procs: []procfixture.Proc{
			{PID: 2, PPID: 1, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 1 of 10-100 startups"},
			{PID: 10, PPID: 2, Comm: "sshd", Title: "sshd: " + hostileName + " [priv]", StartTicks: 500, Sockets: map[int]uint64{4: 100}},
			{PID: 11, PPID: 10, Comm: "sshd", Title: "sshd: " + hostileName + "@pts/0", StartTicks: 501},
			{PID: 20, PPID: 2, Comm: "sshd", Title: "sshd: " + hostileName + " [priv]", StartTicks: 600, Sockets: map[int]uint64{4: 200}},
			{PID: 21, PPID: 20, Comm: "sshd", Title: "sshd: " + hostileName + " [net]", StartTicks: 601},
		},
		TCP: []procfixture.TCP{
			{Local: "10.0.0.1:22", Remote: "198.51.100.1:40000", State: 1, Inode: 100},
			{Local: "10.0.0.1:22", Remote: "203.0.113.66:40001", State: 1, Inode: 200},
		},
	}
	if err := tree.Write(dir); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "no-agent")
	code, stdout, stderr := runCLI(t, []string{"status", "--proc", dir, "--state-dir", state})
	if code != exitOK {
		t.Fatalf("status: exit %d: %s", code, stderr)
	}
	terminalSafe(t, "status", stdout)
	if n := strings.Count(stdout, hostileShown); n != 2 {
		t.Errorf("status shows the escaped name %d times, want 2 (the session and the pending connection):\n%s", n, stdout)
	}

	code, stdout, stderr = runCLI(t, []string{"status", "--json", "--proc", dir, "--state-dir", state})
	if code != exitOK {
		t.Fatalf("status --json: exit %d: %s", code, stderr)
	}
	var got struct {
		Sessions []struct{ User string } `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Sessions) != 1 || got.Sessions[0].User != hostileName {
		t.Errorf("status --json sessions %q, want the user name exactly", got.Sessions)
	}
}

// TestHostileInhibitReasonReachesRootEscaped: any local user may take an
// inhibit lock with any reason and command. A real unprivileged user does
// so with the real binary; root's `connwatch inhibit --list` and, through
// a running agent, `connwatch status` show them escaped.
func TestHostileInhibitReasonReachesRootEscaped(t *testing.T) {
	u := testproc.HostileUser(t)
	bin := testproc.ShareableTestBinary(t)
	state := filepath.Join(filepath.Dir(bin), "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	// As the agent does at start: a sticky, world-writable lock directory.
	if err := hold.EnsureDir(filepath.Join(state, "holds")); err != nil {
		t.Fatal(err)
	}
	inhibit := u.Command(bin, "inhibit", "--state-dir", state, "--ttl", "1h", "--reason", "deploy "+hostileName)
	inhibit.Env = append(inhibit.Env, "CONNWATCH_TEST_MAIN=1")
	if out, err := inhibit.CombinedOutput(); err != nil {
		t.Fatalf("inhibit as %s: %v: %s", u.Name, err, out)
	}
	// A lock held while a command whose arguments are hostile runs.
	held := u.Command(bin, "inhibit", "--state-dir", state, "--reason", "job", "--", "/bin/sh", "-c", "sleep 60", hostileName)
	held.Env = append(held.Env, "CONNWATCH_TEST_MAIN=1")
	var heldOut testproc.Buffer
	held.Stdout, held.Stderr = &heldOut, &heldOut
	held.SysProcAttr.Setpgid = true // so that the sleep goes too
	if err := held.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-held.Process.Pid, syscall.SIGKILL); held.Wait() })

	var list string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, stdout, stderr := runCLI(t, []string{"inhibit", "--list", "--state-dir", state})
		if code != exitOK {
			t.Fatalf("inhibit --list: exit %d: %s", code, stderr)
		}
		if list = stdout; strings.Count(list, hostileShown) == 2 || time.Now().After(deadline) {
			break
		}
	}
	terminalSafe(t, "inhibit --list", list)
	if !strings.Contains(list, "deploy "+hostileShown) || !strings.Contains(list, "sleep 60 "+hostileShown) {
		t.Errorf("inhibit --list does not show the reason and command escaped:\n%s\ninhibit as %s said: %s", list, u.Name, heldOut.String())
	}

	// The agent turns the lock into a hold; status shows the agent's view.
	proc := emptyProc(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan int, 1)
	go func() {
		code, _, _ := runCLIContext(ctx, []string{"agent", "--proc", proc, "--state-dir", state, "--events", filepath.Join(t.TempDir(), "events.jsonl"),
			"--period", "1s", "--idle-after", "2s", "--boot-grace", "0", "--wall=false", "--metrics-addr", "", "--sshd-log", ""})
		done <- code
	}()
	var status string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, status, _ = runCLI(t, []string{"status", "--proc", proc, "--state-dir", state})
		if strings.Contains(status, "held by inhibit") || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	<-done
	terminalSafe(t, "status", status)
	if !strings.Contains(status, "deploy "+hostileShown) {
		t.Errorf("status does not show the hold's reason escaped:\n%s", status)
	}
}

// TestLogQuotesHostileValues guards what needed no change: the agent's
// text log quotes values with control characters (slog's TextHandler
// writes them as Go escapes), so a hostile user name logged with an
// event cannot drive the terminal of whoever tails the log; the JSON log
// escapes C0 controls as JSON does.
func TestLogQuotesHostileValues(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		cfg := config.Default()
		cfg.LogFormat = format
		var b strings.Builder
		newLogger(cfg, &b).Info("event "+hostileName, "session", "ssh-1 "+hostileName+"@198.51.100.7:50122 tty")
		for _, r := range strings.TrimSuffix(b.String(), "\n") {
			if r < 0x20 || r == 0x7f {
				t.Errorf("%s log holds %U: %q", format, r, b.String())
				break
			}
		}
		if format == "text" && strings.ContainsRune(b.String(), '\u202e') {
			t.Errorf("text log holds U+202E: %q", b.String())
		}
	}
}
