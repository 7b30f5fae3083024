package sshdtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestServer runs the whole harness against the real sshd: a key login
// that runs a command, a held shell session, an sftp session and a
// connection parked at the password prompt, then checks that stopping
// clients and the server leaves no sshd process of this server alive.
func TestServer(t *testing.T) {
	checkGoroutines(t) // registered first: runs after the harness cleanup
	s := Start(t, Options{})
	t.Logf("sshd %d on %s:%d, dir %s", s.PID, s.Addr, s.Port, s.Dir)

	begin := time.Now()
	run := s.SSH(t, nil, "true")
	if err := run.Wait(15 * time.Second); err != nil {
		t.Fatalf("ssh true: %v; stderr %q; log:\n%s", err, run.Stderr(), s.Log())
	}
	t.Logf("ssh true took %v", time.Since(begin))
	s.WaitLog(t, "Accepted publickey for "+s.User+" from 127.0.0.1", 5*time.Second)

	held := s.SSH(t, nil)
	sftp := s.SFTP(t)
	park := s.ParkAtPassword(t, s.User)
	ports := map[string]int{}
	for name, c := range map[string]*Client{"held": held, "sftp": sftp, "park": park} {
		ports[name] = c.WaitLocalPort(t, 10*time.Second)
		s.WaitLog(t, fmt.Sprintf("Connection from 127.0.0.1 port %d on 127.0.0.1 port %d", ports[name], s.Port), 5*time.Second)
	}
	if ports["held"] == ports["sftp"] || ports["sftp"] == ports["park"] || ports["held"] == ports["park"] {
		t.Fatalf("client ports not distinct: %v", ports)
	}

	// The sessions are alive: the shell answers, sftp answers.
	if _, err := held.Stdin.Write([]byte("echo held-$((20+22))\n")); err != nil {
		t.Fatalf("write to held shell: %v", err)
	}
	if _, err := sftp.Stdin.Write([]byte("pwd\n")); err != nil {
		t.Fatalf("write to sftp: %v", err)
	}
	waitFor(t, "held shell and sftp to answer", 10*time.Second, func() bool {
		return strings.Contains(held.Stdout(), "held-42") && strings.Contains(sftp.Stdout(), "Remote working directory: ")
	})

	user := s.User
	all := s.WaitProcs(t, "3 monitors, 2 user children, 1 pre-auth child, sftp-server", 15*time.Second, func(ps []Proc) bool {
		return count(ps, "sshd: "+user+" [priv]") == 3 &&
			count(ps, "sshd: "+user+"@notty") == 2 &&
			count(ps, "sshd: "+user+" [net]") == 1 &&
			countPrefix(ps, sftpServerPath) == 1 &&
			strings.Contains(ps[0].Title, "[listener]")
	})
	logProcs(t, "with held, sftp and parked connections", all)
	if park.Exited() {
		t.Fatalf("parked client exited: %q", park.Stderr())
	}
	if strings.Contains(s.Log(), fmt.Sprintf("from 127.0.0.1 port %d ssh2", ports["park"])) {
		t.Fatalf("parked connection authenticated; log:\n%s", s.Log())
	}

	// Stopping clients ends their server side.
	begin = time.Now()
	held.Stop()
	park.Stop()
	t.Logf("client Stop took %v", time.Since(begin))
	s.WaitProcs(t, "only the sftp connection left", 10*time.Second, func(ps []Proc) bool {
		return count(ps, "sshd: "+user+" [priv]") == 1 && count(ps, "sshd: "+user+" [net]") == 0 &&
			count(ps, "sshd: "+user+"@notty") == 1
	})

	// Stopping the server with live connections kills all of them. An
	// invalid user is titled "unknown" by both processes on 9.2.
	sleeper := s.SSH(t, nil, "exec", "sleep", "600")
	park2 := s.ParkAtPassword(t, "nosuchuser")
	sleeper.WaitLocalPort(t, 10*time.Second)
	park2.WaitLocalPort(t, 10*time.Second)
	before := s.WaitProcs(t, "sleeper, sftp and an unknown user parked", 15*time.Second, func(ps []Proc) bool {
		return count(ps, "sshd: "+user+" [priv]") == 2 && countPrefix(ps, "sleep 600") == 1 &&
			count(ps, "sshd: unknown [priv]") == 1 && count(ps, "sshd: unknown [net]") == 1
	})
	logProcs(t, "before Stop", before)
	begin = time.Now()
	s.Stop()
	t.Logf("Stop took %v", time.Since(begin))
	for _, p := range before {
		if now, ok := same(procStat{pid: p.PID, start: p.start}); ok && now.state != "Z" {
			t.Errorf("process %d %q alive (%s) after Stop", p.PID, p.Title, now.state)
		}
	}
	stats, err := allStats()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range before {
		if st, ok := stats[p.PID]; ok && st.start == p.start && st.ppid == os.Getpid() && st.state == "Z" {
			t.Errorf("zombie %d %q left unreaped after Stop", p.PID, p.Title)
		}
	}
	for pid, st := range stats {
		if st.state != "Z" && strings.Contains(readTitle(pid), filepath.Join(s.Dir, "sshd_config")) {
			t.Errorf("process %d %q of this server alive after Stop", pid, readTitle(pid))
		}
	}
	// A client running a command notices at once. A client blocked on
	// its askpass prompt, or sftp blocked reading batch commands from
	// stdin, does not exit by itself, but its connection is closed.
	begin = time.Now()
	if err := sleeper.Wait(10 * time.Second); err == nil {
		t.Errorf("ssh sleep exited 0 after the server stopped, want an error")
	} else {
		t.Logf("ssh sleep ended %v after the server stopped: %v", time.Since(begin), err)
	}
	var err1, err2 error
	if !poll(10*time.Second, func() bool {
		_, err1 = sftp.LocalPort()
		_, err2 = park2.LocalPort()
		return errors.Is(err1, ErrNoConnection) && errors.Is(err2, ErrNoConnection)
	}) {
		out, _ := exec.Command("ss", "-tanp").CombinedOutput()
		t.Fatalf("sftp and parked connections still established 10s after Stop: %v; %v\n%s", err1, err2, out)
	}
	if sftp.Exited() || park2.Exited() {
		t.Logf("sftp exited %v, parked ssh exited %v", sftp.Exited(), park2.Exited())
	}
}

// TestCleanup checks that the cleanups Start and SSH register leave no
// process of the server alive, including a session command orphaned by
// its closed connection: sshd does not kill the commands of sessions
// without a pty when the client goes away.
func TestCleanup(t *testing.T) {
	var before []Proc
	var orphan procStat
	t.Run("server", func(t *testing.T) {
		s := Start(t, Options{})
		sleeper := s.SSH(t, nil, "sleep", "600")
		s.SSH(t, []string{"-N"})
		s.ParkAtPassword(t, s.User)
		before = s.WaitProcs(t, "a sleep, a forward-only connection and a parked one", 15*time.Second, func(ps []Proc) bool {
			return countPrefix(ps, "sleep 600") == 1 && count(ps, "sshd: "+s.User) == 1 && count(ps, "sshd: "+s.User+" [net]") == 1
		})
		logProcs(t, "before cleanup", before)
		for _, p := range before {
			if strings.HasPrefix(p.Title, "sleep 600") {
				orphan = procStat{pid: p.PID, start: p.start}
			}
		}
		sleeper.Stop()
		s.WaitProcs(t, "the sleeper's connection to close", 10*time.Second, func(ps []Proc) bool {
			return countPrefix(ps, "sleep 600") == 0 && count(ps, "sshd: "+s.User+"@notty") == 0
		})
		now, ok := same(orphan)
		if !ok || now.state == "Z" {
			t.Logf("sleep 600 ended with its connection (state %q)", now.state)
		} else {
			t.Logf("sleep 600 outlived its connection: parent now %d (this test is %d)", now.ppid, os.Getpid())
		}
	})
	for _, p := range before { // the sleep included
		if now, ok := same(procStat{pid: p.PID, start: p.start}); ok {
			if now.state != "Z" {
				t.Errorf("process %d %q alive (%s) after cleanup", p.PID, p.Title, now.state)
			} else if now.ppid == os.Getpid() {
				t.Errorf("process %d %q left unreaped", p.PID, p.Title)
			}
		}
	}
}

// TestExtraConfig checks that extra lines override defaults, that Match
// blocks end up last, and that sshd accepts the result.
func TestExtraConfig(t *testing.T) {
	s := Start(t, Options{LogLevel: "DEBUG1", ExtraConfig: []string{
		"PasswordAuthentication no",
		"Subsystem sftp internal-sftp",
		"ClientAliveInterval 7",
		"Match User nobody",
		"  PermitTTY no",
	}})
	cfg, err := os.ReadFile(filepath.Join(s.Dir, "sshd_config"))
	if err != nil {
		t.Fatal(err)
	}
	got := string(cfg)
	for _, want := range []string{"PasswordAuthentication no", "Subsystem sftp internal-sftp", "LogLevel DEBUG1", "ClientAliveInterval 7"} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"PasswordAuthentication yes", "Subsystem sftp " + sftpServerPath} {
		if strings.Contains(got, unwanted) {
			t.Errorf("config has overridden %q:\n%s", unwanted, got)
		}
	}
	if !strings.HasSuffix(got, "Match User nobody\n  PermitTTY no\n") {
		t.Errorf("Match block not last:\n%s", got)
	}
	sftp := s.SFTP(t)
	if _, err := sftp.Stdin.Write([]byte("pwd\n")); err != nil {
		t.Fatal(err)
	}
	s.WaitProcs(t, "an internal-sftp session", 15*time.Second, func(ps []Proc) bool {
		return count(ps, "sshd: "+s.User+"@internal-sftp") == 1
	})
	s.WaitLog(t, "debug1: ", 5*time.Second)
}

func TestBuildConfig(t *testing.T) {
	p := configParams{port: 2222, addr: "127.0.0.1", dir: "/d", hostKey: "/d/hk", logLevel: "VERBOSE"}
	want := `# written by sshdtest
ListenAddress 127.0.0.1
Port 2222
HostKey /d/hk
PidFile /d/sshd.pid
AuthorizedKeysFile /d/authorized_keys/%u
StrictModes no
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
MaxStartups 100
LoginGraceTime 0
`
	if got := buildConfig(p); got != want {
		t.Errorf("buildConfig =\n%s\nwant\n%s", got, want)
	}
	p.extra = []string{"loglevel=DEBUG3", "# comment", "", "Subsystem  sftp internal-sftp -l INFO", "Match Address 127.0.0.2", "LogLevel QUIET"}
	got := buildConfig(p)
	for _, bad := range []string{"LogLevel VERBOSE", "Subsystem sftp /usr"} {
		if strings.Contains(got, bad) {
			t.Errorf("default %q not overridden:\n%s", bad, got)
		}
	}
	if !strings.HasSuffix(got, "LoginGraceTime 0\nMatch Address 127.0.0.2\nLogLevel QUIET\n") {
		t.Errorf("Match block not after the defaults:\n%s", got)
	}
}

func TestSSHArgs(t *testing.T) {
	s := &Server{Addr: "127.0.0.1", Port: 2222, User: "u", ClientKey: "/d/k"}
	got := strings.Join(s.SSHArgs("-N", "-o", "X=y"), " ")
	want := "-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes -i /d/k -o IdentitiesOnly=yes -p 2222 -N -o X=y u@127.0.0.1"
	if got != want {
		t.Errorf("SSHArgs =\n%s\nwant\n%s", got, want)
	}
}

func TestConfigKey(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"LogLevel VERBOSE", "loglevel"},
		{"  loglevel=debug", "loglevel"},
		{"Subsystem\tsftp /x", "subsystem sftp"},
		{"# LogLevel", ""},
		{"", ""},
		{"Match User x", "match"},
	} {
		if got := configKey(tc.line); got != tc.want {
			t.Errorf("configKey(%q) = %q, want %q", tc.line, got, tc.want)
		}
	}
}

// fakeTB records what Require does instead of ending the test.
type fakeTB struct {
	testing.TB
	skipped, failed string
}

func (f *fakeTB) Helper()                       {}
func (f *fakeTB) Skipf(format string, a ...any) { f.skipped = fmt.Sprintf(format, a...) }
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.failed = fmt.Sprintf(format, a...)
}

func TestRequire(t *testing.T) {
	for _, tc := range []struct {
		ci         string
		ok         bool
		skip, fail bool
	}{
		{ci: "", ok: true},
		{ci: "true", ok: true},
		{ci: "", ok: false, skip: true},
		{ci: "1", ok: false, skip: true},
		{ci: "true", ok: false, fail: true},
	} {
		t.Run(fmt.Sprintf("CI=%q,ok=%v", tc.ci, tc.ok), func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			f := &fakeTB{TB: t}
			Require(f, "a thing", tc.ok)
			if (f.skipped != "") != tc.skip || (f.failed != "") != tc.fail {
				t.Errorf("skipped %q, failed %q; want skip %v, fail %v", f.skipped, f.failed, tc.skip, tc.fail)
			}
			if msg := f.skipped + f.failed; msg != "" && !strings.Contains(msg, "requires a thing") {
				t.Errorf("message %q does not say what is required", msg)
			}
		})
	}
}

func TestLoginBlocker(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	today := now.Unix() / 86400
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte("u:x:1001:1001::/home/u:/bin/sh\nnosh:x:1002:1002::/:/nonexistent/shell\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, user, shadow, want string
	}{
		{"locked password is fine", "u", fmt.Sprintf("u:!:%d:0:99999:7:::", today), ""},
		{"star password is fine", "u", fmt.Sprintf("u:*:%d:0:99999:7:::", today), ""},
		{"not in shadow", "u", "", ""},
		{"forced change", "u", "u:!:0:0:99999:7:::", "password change forced"},
		{"expired account", "u", fmt.Sprintf("u:!:%d:0:99999:7::%d:", today, today-1), "account expired"},
		{"password too old", "u", fmt.Sprintf("u:!:%d:0:10:7:::", today-20), "password expired"},
		{"inactive", "u", fmt.Sprintf("u:!:%d:0:10:7:5::", today-20), "inactive"},
		{"bad shell", "nosh", "", "not executable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shadow := filepath.Join(t.TempDir(), "shadow")
			if err := os.WriteFile(shadow, []byte(tc.shadow+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			got := loginBlocker(tc.user, passwd, shadow, now)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("loginBlocker = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseAddr4(t *testing.T) {
	// /proc/net/tcp on a little-endian machine; the port is big-endian.
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" && runtime.GOARCH != "386" {
		t.Skip("fixture is little-endian")
	}
	a, err := parseAddr4("0100007F:1F90")
	if err != nil {
		t.Fatal(err)
	}
	if a.ip.String() != "127.0.0.1" || a.port != 8080 {
		t.Errorf("parseAddr4 = %v:%d, want 127.0.0.1:8080", a.ip, a.port)
	}
	if _, err := parseAddr4("7F:1"); err == nil {
		t.Error("parseAddr4 accepted a short address")
	}
}

func count(ps []Proc, title string) int {
	n := 0
	for _, p := range ps {
		if p.State != "Z" && p.Title == title {
			n++
		}
	}
	return n
}

func countPrefix(ps []Proc, prefix string) int {
	n := 0
	for _, p := range ps {
		if p.State != "Z" && strings.HasPrefix(p.Title, prefix) {
			n++
		}
	}
	return n
}

func logProcs(t *testing.T, when string, ps []Proc) {
	t.Helper()
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "\n  %7d %7d %s %s", p.PID, p.PPID, p.State, p.Title)
	}
	t.Logf("processes %s:%s", when, b.String())
}

// waitFor polls cond, at most timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("wait %v for %s", timeout, what)
	}
}

// checkGoroutines fails the test if goroutines of the harness (process
// waiters, output copiers) outlive its cleanup.
func checkGoroutines(t *testing.T) {
	t.Cleanup(func() {
		var leaked []string
		poll(5*time.Second, func() bool {
			buf := make([]byte, 1<<20)
			all := strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n")
			leaked = leaked[:0]
			for _, g := range all[1:] { // all[0] is this goroutine
				if strings.Contains(g, "internal/testkit/sshdtest.") || strings.Contains(g, "os/exec.") {
					leaked = append(leaked, g)
				}
			}
			return len(leaked) == 0
		})
		if len(leaked) > 0 {
			t.Errorf("%d harness goroutines leaked:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
		}
	})
}

// sessionLeftovers finds the command of a session to an sshd on every
// address (its SSH_CONNECTION names the address the client came in on,
// not 0.0.0.0), and only in sshd's network namespace.
func TestSessionLeftoversWildcard(t *testing.T) {
	s := Start(t, Options{ListenAddress: "0.0.0.0"})
	c := s.SSH(t, nil, "sleep", "600")
	ps := s.WaitProcs(t, "the session's sleep", 15*time.Second, func(ps []Proc) bool { return countPrefix(ps, "sleep 600") == 1 })
	var sleep int
	for _, p := range ps {
		if strings.HasPrefix(p.Title, "sleep 600") {
			sleep = p.PID
		}
	}
	found := func(netNS string) bool {
		for _, st := range sessionLeftovers(s.Addr, s.Port, netNS) {
			if st.pid == sleep {
				return true
			}
		}
		return false
	}
	if !found(s.netNS) {
		t.Errorf("sessionLeftovers(%s, %d, %s) misses the session's sleep %d", s.Addr, s.Port, s.netNS, sleep)
	}
	if found("net:[1]") {
		t.Error("sessionLeftovers finds the sleep in another network namespace")
	}
	if found("") {
		t.Error("sessionLeftovers matches by port alone when sshd's namespace is unknown")
	}
	c.Stop()
}
