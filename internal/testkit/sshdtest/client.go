package sshdtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// ErrNoConnection is returned by LocalPort while the client holds no TCP
// connection to the server.
var ErrNoConnection = errors.New("no connection to the server")

// Client is a started client process (ssh, or sftp with its ssh child) in
// its own session and process group. Its stdin is a pipe held open until
// Stop, so sessions reading stdin stay up.
type Client struct {
	Cmd   *exec.Cmd
	Stdin io.WriteCloser

	t        testing.TB
	server   *Server
	stdout   testproc.Buffer
	stderr   testproc.Buffer
	done     chan struct{} // closed when the process has been reaped
	err      error         // from Cmd.Wait, set before done is closed
	stopOnce sync.Once
}

// SSH starts ssh with SSHArgs(extra...) and the remote command, if any.
// Without a remote command the server runs the user's shell on the held
// stdin (title "USER@notty"). t.Cleanup stops it.
func (s *Server) SSH(t testing.TB, extra []string, remoteCmd ...string) *Client {
	t.Helper()
	ssh := RequireBinary(t, "ssh")
	return s.start(t, exec.Command(ssh, append(s.SSHArgs(extra...), remoteCmd...)...))
}

// SFTP starts sftp in batch mode reading commands from the held stdin, so
// an sftp subsystem session stays up until Stop. sftp runs ssh as its
// child; LocalPort finds that child's connection. Write commands (for
// example "ls\n") to Stdin.
func (s *Server) SFTP(t testing.TB) *Client {
	t.Helper()
	sftp := RequireBinary(t, "sftp")
	Require(t, "the sftp server "+sftpServerPath, fileExists(sftpServerPath))
	args := append([]string{"-b", "-"}, s.keyOptions()...)
	args = append(args, "-P", strconv.Itoa(s.Port), s.User+"@"+s.Addr)
	return s.start(t, exec.Command(sftp, args...))
}

// ParkAtPassword starts ssh for user with password authentication only,
// whose password prompt never answers: SSH_ASKPASS is a script that sleeps
// 300 s, forced with SSH_ASKPASS_REQUIRE=force, and ssh has no controlling
// terminal. It returns once ssh runs the prompt, so the connection is at
// the authentication stage with the user name sent (server titles
// "USER [priv]" and "USER [net]", "unknown" for an invalid user) and
// stays there: ssh blocks on the prompt and does not even notice the
// server going away.
func (s *Server) ParkAtPassword(t testing.TB, user string) *Client {
	t.Helper()
	ssh := RequireBinary(t, "ssh")
	cmd := exec.Command(ssh, append(clientOptions(),
		"-o", "PubkeyAuthentication=no",
		"-o", "PreferredAuthentications=password,keyboard-interactive",
		"-p", strconv.Itoa(s.Port),
		user+"@"+s.Addr,
	)...)
	cmd.Env = append(clientEnv(), "SSH_ASKPASS="+s.askpass, "SSH_ASKPASS_REQUIRE=force", "DISPLAY=:0")
	c := s.start(t, cmd)
	mark := filepath.Join(s.Dir, "parked."+strconv.Itoa(cmd.Process.Pid))
	parked := poll(startTimeout, func() bool { return fileExists(mark) || c.Exited() })
	switch {
	case !parked:
		t.Fatalf("sshdtest: wait %v for ssh to ask for the password; stderr %q", startTimeout, c.Stderr())
	case !fileExists(mark):
		t.Fatalf("sshdtest: parked ssh exited (%v) before its password prompt; stderr %q", c.err, c.Stderr())
	}
	return c
}

// start runs cmd as a Client in a new session (so no controlling
// terminal, and its own process group).
func (s *Server) start(t testing.TB, cmd *exec.Cmd) *Client {
	t.Helper()
	c := &Client{Cmd: cmd, t: t, server: s, done: make(chan struct{})}
	if cmd.Env == nil {
		cmd.Env = clientEnv()
	}
	cmd.Stdout, cmd.Stderr = &c.stdout, &c.stderr
	// Bounds Wait if something outside the group holds the output pipes.
	cmd.WaitDelay = 2 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("stdin pipe for %s: %v", cmd.Path, err)
	}
	c.Stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("run %s: %v", cmd, err)
	}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(c.Stop)
	return c
}

// clientEnv is the environment of clients: no agent, so only the given
// key is offered.
func clientEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if k, _, _ := strings.Cut(e, "="); k == "SSH_AUTH_SOCK" || strings.HasPrefix(k, "SSH_ASKPASS") || k == "DISPLAY" {
			continue
		}
		env = append(env, e)
	}
	return env
}

// Stop kills the client's process group and its descendants and waits
// for it (at most 10 s). It is idempotent and registered with t.Cleanup.
func (c *Client) Stop() {
	c.stopOnce.Do(func() {
		pid := c.Cmd.Process.Pid
		if c.t.Failed() {
			state := "running"
			if c.Exited() {
				state = fmt.Sprintf("exited: %v", c.err)
			}
			c.t.Logf("sshdtest: client %d %v (%s); stderr: %q", pid, c.Cmd.Args, state, c.Stderr())
		}
		var procs []procStat
		if !c.Exited() {
			c.server.remember()
			procs = freezeTree(pid)
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		_ = syscall.Kill(pid, syscall.SIGCONT) // SIGKILL needs no CONT; harmless
		if !testproc.WaitClosed(c.done, stopTimeout) {
			c.t.Errorf("sshdtest: client %d (%s) did not exit %v after SIGKILL", pid, c.Cmd.Path, stopTimeout)
			return
		}
		if stuck := killAndReap(procs, stopTimeout); len(stuck) > 0 {
			c.t.Errorf("sshdtest: client processes alive after stop: %s", strings.Join(stuck, "; "))
		}
	})
}

// Wait waits at most timeout for the client to exit and returns its exit
// error (nil for status 0), or an error wrapping ErrTimeout.
func (c *Client) Wait(timeout time.Duration) error {
	if !testproc.WaitClosed(c.done, timeout) {
		return fmt.Errorf("wait %v for %s: %w", timeout, c.Cmd.Path, ErrTimeout)
	}
	return c.err
}

// Exited tells whether the client process has exited.
func (c *Client) Exited() bool { return testproc.IsClosed(c.done) }

// Stdout returns what the client wrote to stdout so far.
func (c *Client) Stdout() string { return c.stdout.String() }

// Stderr returns what the client wrote to stderr so far.
func (c *Client) Stderr() string { return c.stderr.String() }

// LocalPort returns the local port of the client's TCP connection to the
// server, found from the socket inodes in /proc/PID/fd of the client and
// its descendants (sftp's ssh is its child) and /proc/PID/net/tcp.
func (c *Client) LocalPort() (int, error) {
	pid := c.Cmd.Process.Pid
	pids := []int{pid}
	if stats, err := allStats(); err == nil {
		for _, st := range descendants(stats, pid) {
			pids = append(pids, st.pid)
		}
	}
	rows, err := tcpOf(pid, pids)
	if err != nil {
		return 0, fmt.Errorf("find connection of client %d: %w", pid, err)
	}
	for _, r := range rows {
		if r.remote.port == c.server.Port && r.remote.ip.Equal(ipLoopback) && r.state == tcpEstablished {
			return r.local.port, nil
		}
	}
	return 0, fmt.Errorf("find connection of client %d to port %d: %w", pid, c.server.Port, ErrNoConnection)
}

// WaitLocalPort polls LocalPort until the client is connected, at most
// timeout.
func (c *Client) WaitLocalPort(t testing.TB, timeout time.Duration) int {
	t.Helper()
	var port int
	var err error
	if !poll(timeout, func() bool {
		port, err = c.LocalPort()
		return err == nil || c.Exited()
	}) {
		t.Fatalf("sshdtest: wait %v for the connection of %s: %v; stderr %q", timeout, c.Cmd.Path, err, c.Stderr())
	}
	if err != nil {
		t.Fatalf("sshdtest: %s exited (%v) before connecting: %v; stderr %q", c.Cmd.Path, c.err, err, c.Stderr())
	}
	return port
}

var ipLoopback = net.IPv4(127, 0, 0, 1)

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
