package authlog_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

// TestCaptureE records the log lines a real sshd writes with -E into
// testdata/sshd-9.2-E, one file per scenario. It runs only when asked:
//
//	AUTHLOG_CAPTURE=1 go test -run TestCaptureE ./internal/source/authlog/
//
// Each scenario runs alone; its lines are the bytes the log grew by
// between its start and the line that ends it.
func TestCaptureE(t *testing.T) {
	if os.Getenv("AUTHLOG_CAPTURE") != "1" {
		t.Skip("set AUTHLOG_CAPTURE=1 to record testdata/sshd-9.2-E from a real sshd")
	}
	srv := sshdtest.Start(t, sshdtest.Options{})
	out := filepath.Join("testdata", "sshd-9.2-E")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	offset := func() int { return len(srv.Log()) }
	// record waits until the log after from holds all of ends, then
	// saves it.
	record := func(name string, from int, ends ...string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			got := srv.Log()[from:]
			ok := true
			for _, e := range ends {
				ok = ok && strings.Contains(got, e)
			}
			if ok {
				time.Sleep(300 * time.Millisecond) // let trailing lines land
				got = srv.Log()[from:]
				if err := os.WriteFile(filepath.Join(out, name+".log"), []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: wait for %q; log:\n%s", name, ends, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait := func(c *sshdtest.Client) {
		t.Helper()
		if err := c.Wait(15 * time.Second); err != nil {
			t.Fatalf("%v: %v; stderr %q", c.Cmd.Args, err, c.Stderr())
		}
	}
	srv.WaitLog(t, "Server listening", 5*time.Second)
	if err := os.WriteFile(filepath.Join(out, "listen.log"), []byte(srv.Log()), 0o644); err != nil {
		t.Fatal(err)
	}

	// Key logins that end by themselves.
	from := offset()
	c := srv.SSH(t, nil, "true")
	wait(c)
	record("notty-command", from, "Disconnected from user")

	from = offset()
	c = srv.SSH(t, []string{"-tt"}, "true")
	wait(c)
	record("tty-command", from, "Disconnected from user")

	from = offset()
	c = srv.SSH(t, []string{"-tt"})
	c.WaitLocalPort(t, 10*time.Second)
	srv.WaitLog(t, "Starting session: shell", 10*time.Second)
	if _, err := c.Stdin.Write([]byte("exit\n")); err != nil {
		t.Fatal(err)
	}
	wait(c)
	record("tty-shell-exit", from, "Disconnected from user")

	from = offset()
	c = srv.SFTP(t)
	if _, err := c.Stdin.Write([]byte("pwd\n")); err != nil {
		t.Fatal(err)
	}
	c.Stdin.Close()
	wait(c)
	record("sftp", from, "Disconnected from user")

	// Sessions whose client is killed.
	from = offset()
	c = srv.SSH(t, []string{"-N"})
	port := c.WaitLocalPort(t, 10*time.Second)
	srv.WaitLog(t, "port "+strconv.Itoa(port)+" ssh2:", 10*time.Second)
	time.Sleep(time.Second) // killed at once, it may end with no line at all
	c.Stop()
	record("forward-killed", from, "Closing connection to 127.0.0.1 port "+strconv.Itoa(port))

	from = offset()
	c = srv.SSH(t, nil, "sleep", "60")
	port = c.WaitLocalPort(t, 10*time.Second)
	srv.WaitLog(t, "Starting session: command for "+srv.User+" from 127.0.0.1 port "+strconv.Itoa(port), 10*time.Second)
	c.Stop()
	record("notty-killed", from, "Closing connection to 127.0.0.1 port "+strconv.Itoa(port))

	// Password prompts that never answer, then disconnect.
	for _, u := range []struct{ name, user string }{
		{"park-root", "root"},
		{"park-valid", srv.User},
		{"park-invalid", "nosuchuser"},
	} {
		from = offset()
		c = srv.ParkAtPassword(t, u.user)
		port = c.WaitLocalPort(t, 10*time.Second)
		time.Sleep(500 * time.Millisecond)
		c.Stop()
		record(u.name, from, "port "+strconv.Itoa(port)+" [preauth]")
	}

	// Wrong passwords (an askpass that answers "wrong"), three tries.
	askpass := filepath.Join(t.TempDir(), "wrong.sh")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho wrong-password\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct{ name, user string }{
		{"wrong-password-valid", srv.User},
		{"wrong-password-invalid", "nosuchuser"},
		{"wrong-password-root", "root"},
	} {
		from = offset()
		cmd := exec.Command("ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
			"-o", "LogLevel=ERROR", "-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password",
			"-o", "NumberOfPasswordPrompts=3", "-p", strconv.Itoa(srv.Port), u.user+"@127.0.0.1", "true")
		cmd.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("%s: wrong password accepted: %s", u.name, out)
		}
		record(u.name, from, "[preauth]")
	}

	// A client that stops answering: ClientAlive drops it.
	alive := sshdtest.Start(t, sshdtest.Options{ExtraConfig: []string{"ClientAliveInterval 1", "ClientAliveCountMax 2"}})
	from = len(alive.Log())
	c = alive.SSH(t, []string{"-N"})
	port = c.WaitLocalPort(t, 10*time.Second)
	alive.WaitLog(t, "port "+strconv.Itoa(port)+" ssh2:", 10*time.Second)
	if err := c.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	alive.WaitLog(t, "Timeout, client not responding", 15*time.Second)
	time.Sleep(300 * time.Millisecond)
	if err := os.WriteFile(filepath.Join(out, "client-alive-timeout.log"), []byte(alive.Log()[from:]), 0o644); err != nil {
		t.Fatal(err)
	}
	c.Stop()
}
