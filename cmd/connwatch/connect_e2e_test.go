package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

const (
	devboxID    = "i-0abcdef1234567890"
	devboxName  = "devbox"
	connectBoot = 1500 * time.Millisecond // from running to sshd listening
)

// connectLab is a stopped EC2 instance in the loopback AWS server whose
// "machine" is a network namespace: sshd starts listening there only
// after the server says the instance runs, on the address the server
// gave it at that start.
type connectLab struct {
	aws     *awstest.Server
	ns      *netnstest.NS
	key     string // client key, made before sshd exists
	sshCfg  string // ssh_config: connwatch connect --print-ssh-config + the test's User
	known   string // known_hosts
	running chan string
	addrs   []string // the public address of each start, in order

	mu    sync.Mutex
	start int // index in addrs of the address the next start gets
	sshd  *sshdtest.Server
}

func newConnectLab(t *testing.T) *connectLab {
	t.Helper()
	ns := netnstest.New(t)
	lab := &connectLab{ns: ns, running: make(chan string, 16)}
	// Every start gets another public address: the namespace's own, then
	// a second one on its interface that the root namespace routes over
	// the veth (10.232/16: netnstest's links are in 10.231/16).
	var rb [2]byte
	_, _ = rand.Read(rb[:])
	second := fmt.Sprintf("10.232.%d.%d", rb[0], 1+rb[1]%250)
	ns.Run(t, "ip", "addr", "add", second+"/32", "dev", ns.If)
	netnstest.Run(t, "", "ip", "route", "add", second+"/32", "dev", ns.HostIf)
	lab.addrs = []string{ns.Addr, second}
	lab.aws = awstest.New(t, awstest.WithRegion("eu-west-1"))
	lab.aws.Env(t)
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
	lab.aws.SetTransitions(awstest.Transitions{Pending: 2 * time.Second, Stopping: time.Second})
	lab.aws.SetAddresser(func(id string) (string, string, string) {
		if id != devboxID {
			return "", "", ""
		}
		lab.mu.Lock()
		defer lab.mu.Unlock()
		return lab.addrs[lab.start], "172.31.9.9", ""
	})
	lab.aws.OnState(func(id, state string) {
		if id == devboxID && state == awstest.InstanceRunning {
			lab.running <- state // buffered: callbacks must not wait
		}
	})
	lab.aws.AddInstance(awstest.Instance{ID: devboxID, Type: "t3.large", State: awstest.InstanceStopped, Tags: map[string]string{"Name": devboxName}})

	dir := t.TempDir()
	lab.key = filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command(sshdtest.RequireBinary(t, "ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", lab.key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	lab.known = filepath.Join(dir, "known_hosts")

	// The stanza a user would paste, from the command itself.
	cmd := connwatchCmd(t, "connect", "--region", "eu-west-1", "--print-ssh-config", devboxName, devboxID)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("connect --print-ssh-config: %v", err)
	}
	for _, want := range []string{"Host " + devboxName + "\n", "HostName " + devboxID, "HostKeyAlias " + devboxName, "ProxyCommand ", " connect --region eu-west-1 %h %p"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("--print-ssh-config lacks %q:\n%s", want, out)
		}
	}
	lab.sshCfg = filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(lab.sshCfg, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return lab
}

// bootOnRunning starts sshd in the namespace connectBoot after the
// instance first runs (as a machine's sshd comes up a while after EC2
// says running), on every address of the namespace.
func (lab *connectLab) bootOnRunning(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-lab.running:
	case <-time.After(timeout):
		t.Fatalf("the instance did not run within %v", timeout)
	}
	time.Sleep(connectBoot)
	s := sshdtest.Start(t, sshdtest.Options{Netns: lab.ns.Name, ListenAddress: "0.0.0.0", ClientKey: lab.key})
	lab.mu.Lock()
	lab.sshd = s
	lab.mu.Unlock()
}

// ssh runs the real OpenSSH client against Host devbox of the printed
// stanza (connwatch connect is its ProxyCommand: this test binary run
// as connwatch), with the test's user, key and known_hosts.
func (lab *connectLab) ssh(t *testing.T, name string, extra []string, args ...string) *exec.Cmd {
	t.Helper()
	bin := sshdtest.RequireBinary(t, name)
	opts := []string{"-F", lab.sshCfg,
		"-o", "User=" + sshdtest.DefaultUser, "-o", "IdentityFile=" + lab.key, "-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + lab.known, "-o", "StrictHostKeyChecking=accept-new",
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes"}
	cmd := exec.Command(bin, append(append(opts, extra...), args...)...)
	cmd.Env = append(os.Environ(), "CONNWATCH_TEST_MAIN=1")
	return cmd
}

type sshResult struct {
	out, errOut string
	err         error
	took        time.Duration
}

func runBounded(cmd *exec.Cmd, d time.Duration) sshResult {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Its own session, so that a timeout kills ssh and the connect it
	// runs (which holds ssh's output open) alike.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.WaitDelay = 2 * time.Second
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		return sshResult{err: err}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(d):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		err = fmt.Errorf("killed after %v: %w", d, <-done)
	}
	return sshResult{stdout.String(), stderr.String(), err, time.Since(begin)}
}

// TestConnectWakesStoppedInstance: ten ssh at once to a stopped instance
// make one StartInstances call, show connect's progress, and all log in
// once sshd answers; scp of 64 MiB round-trips byte-exact through connect;
// after a stop and a start at another address, known_hosts still matches
// (HostKeyAlias), and --hold tags only a start it made.
func TestConnectWakesStoppedInstance(t *testing.T) {
	lab := newConnectLab(t)

	const clients = 10
	results := make([]sshResult, clients)
	var wg sync.WaitGroup
	for i := range clients {
		cmd := lab.ssh(t, "ssh", []string{"-o", "ProxyCommand=" + proxyCommand(t, "--hold", "10m")}, devboxName, "echo", fmt.Sprintf("hello-%d", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = runBounded(cmd, 60*time.Second)
		}()
	}
	lab.bootOnRunning(t, 30*time.Second)
	wg.Wait()
	for i, r := range results {
		if r.err != nil || strings.TrimSpace(r.out) != fmt.Sprintf("hello-%d", i) {
			t.Errorf("ssh %d: %v, stdout %q, stderr:\n%s", i, r.err, r.out, r.errOut)
		}
	}
	if n := len(lab.aws.Calls("ec2", "StartInstances")); n != 1 {
		t.Errorf("%d StartInstances calls for %d clients, want 1", n, clients)
	}
	// The one that started it told the user what was happening.
	var progress string
	for _, r := range results {
		if strings.Contains(r.errOut, "connwatch: starting "+devboxID) {
			progress = r.errOut
		}
	}
	for _, want := range []string{"connwatch: starting " + devboxID + " (stopped, t3.large)", "running after", "sshd answering after"} {
		if !strings.Contains(progress, want) {
			t.Errorf("no client's stderr shows %q; the starter's:\n%s", want, progress)
		}
	}
	in, _ := lab.aws.Instance(devboxID)
	// As the agent on the instance reads it.
	until, err := hold.ParseHoldUntil(in.Tags[hold.StartHoldTag])
	if err != nil || until.Before(time.Now().Add(9*time.Minute)) || until.After(time.Now().Add(11*time.Minute)) {
		t.Errorf("hold tag %q (%v), want about now+10m", in.Tags[hold.StartHoldTag], err)
	}
	if t.Failed() {
		return
	}

	// 64 MiB up and back down through connect, byte-exact.
	dir := t.TempDir()
	src, back := filepath.Join(dir, "src"), filepath.Join(dir, "back")
	data := make([]byte, 64<<20)
	_, _ = rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	remote := devboxName + ":connect-e2e.bin"
	for _, c := range [][2]string{{src, remote}, {remote, back}} {
		r := runBounded(lab.ssh(t, "scp", []string{"-q"}, c[0], c[1]), 60*time.Second)
		if r.err != nil {
			t.Fatalf("scp %s %s: %v\n%s", c[0], c[1], r.err, r.errOut)
		}
		t.Logf("scp %s -> %s: 64 MiB in %v", c[0], c[1], r.took)
	}
	got, err := os.ReadFile(back)
	if err != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("64 MiB round trip differs (%d bytes back, %v)", len(got), err)
	}
	if n := len(lab.aws.Calls("ec2", "StartInstances")); n != 1 {
		t.Errorf("StartInstances called again for a running instance (%d calls)", n)
	}

	// Stop; the next start has another public address. The known_hosts
	// entry is under the alias, so ssh still trusts the host, and without
	// --hold nothing is tagged.
	lab.aws.SetState(devboxID, awstest.InstanceStopped)
	lab.mu.Lock()
	lab.start = 1
	lab.mu.Unlock()
	r := runBounded(lab.ssh(t, "ssh", nil, devboxName, "echo", "again"), 60*time.Second)
	if r.err != nil || strings.TrimSpace(r.out) != "again" {
		t.Fatalf("ssh after a restart: %v, stdout %q, stderr:\n%s", r.err, r.out, r.errOut)
	}
	if !strings.Contains(r.errOut, "connecting to "+lab.addrs[1]+":22") {
		t.Errorf("the second start should connect to %s; stderr:\n%s", lab.addrs[1], r.errOut)
	}
	if n := len(lab.aws.Calls("ec2", "StartInstances")); n != 2 {
		t.Errorf("%d StartInstances calls after a stop and an ssh, want 2", n)
	}
	if n := len(lab.aws.Calls("ec2", "CreateTags")); n != 1 {
		t.Errorf("%d CreateTags calls, want 1 (only the first start had --hold)", n)
	}
	known, _ := os.ReadFile(lab.known)
	if lines := strings.Count(string(known), "\n"); lines != 1 || !strings.HasPrefix(string(known), devboxName+" ") {
		t.Errorf("known_hosts should hold one entry under the alias %q:\n%s", devboxName, known)
	}
}

func proxyCommand(t *testing.T, flags ...string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(append(append([]string{exe, "connect", "--region", "eu-west-1"}, flags...), "%h", "%p"), " ")
}

// TestConnectFailures: every way connect cannot reach an instance makes
// the real ssh fail, with connect's reason on ssh's standard error.
func TestConnectFailures(t *testing.T) {
	sshBin := sshdtest.RequireBinary(t, "ssh")
	closed := freeTCPPort(t) // nothing listens there
	cases := []struct {
		name  string
		setup func(s *awstest.Server)
		host  string
		port  int
		flags []string
		want  []string
	}{
		{
			name: "terminated",
			setup: func(s *awstest.Server) {
				s.AddInstance(awstest.Instance{ID: "i-0000000000000000a", State: awstest.InstanceTerminated})
			},
			host: "i-0000000000000000a",
			want: []string{"i-0000000000000000a", "terminated"},
		},
		{
			name: "not found",
			host: "i-0000000000000000b",
			want: []string{"i-0000000000000000b", "not found"},
		},
		{
			name: "two instances with the name",
			setup: func(s *awstest.Server) {
				for _, id := range []string{"i-0000000000000000c", "i-0000000000000000d"} {
					s.AddInstance(awstest.Instance{ID: id, State: awstest.InstanceStopped, Tags: map[string]string{"Name": "twin"}})
				}
			},
			host: "name:twin",
			want: []string{"i-0000000000000000c", "i-0000000000000000d", "twin"},
		},
		{
			name: "sshd never answers",
			setup: func(s *awstest.Server) {
				s.AddInstance(awstest.Instance{ID: "i-0000000000000000e", State: awstest.InstanceRunning, PublicIP: "127.0.0.1", ElasticIP: true})
			},
			host:  "i-0000000000000000e",
			port:  closed,
			flags: []string{"--timeout", "2s"},
			want:  []string{"timed out", "sshd"},
		},
		{
			name: "never running in time",
			setup: func(s *awstest.Server) {
				s.SetTransitions(awstest.Transitions{Pending: time.Minute})
				s.AddInstance(awstest.Instance{ID: "i-0000000000000000f", State: awstest.InstanceStopped})
			},
			host:  "i-0000000000000000f",
			flags: []string{"--timeout", "2s"},
			want:  []string{"starting i-0000000000000000f", "timed out", "to run"},
		},
		{
			name: "AWS refuses",
			setup: func(s *awstest.Server) {
				s.AddInstance(awstest.Instance{ID: "i-0000000000000001a", State: awstest.InstanceStopped})
				s.SetEC2Failure("UnauthorizedOperation", "You are not authorized to perform this operation.")
			},
			host: "i-0000000000000001a",
			want: []string{"UnauthorizedOperation", "ec2:DescribeInstances"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := awstest.New(t, awstest.WithRegion("eu-west-1"))
			s.Env(t)
			t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
			if c.setup != nil {
				c.setup(s)
			}
			port := c.port
			if port == 0 {
				port = 22
			}
			cmd := exec.Command(sshBin, "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "ProxyCommand="+proxyCommand(t, c.flags...),
				"-p", fmt.Sprint(port), "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "nobody@"+c.host, "true")
			cmd.Env = append(os.Environ(), "CONNWATCH_TEST_MAIN=1")
			r := runBounded(cmd, 30*time.Second)
			if r.err == nil {
				t.Fatalf("ssh succeeded; stderr:\n%s", r.errOut)
			}
			if ee, ok := r.err.(*exec.ExitError); !ok || ee.ExitCode() != 255 {
				t.Errorf("ssh: %v, want exit status 255", r.err)
			}
			for _, w := range c.want {
				if !strings.Contains(r.errOut, w) {
					t.Errorf("ssh's stderr lacks %q:\n%s", w, r.errOut)
				}
			}
			if n := len(s.Calls("ec2", "StartInstances")); c.name != "never running in time" && n != 0 {
				t.Errorf("%d StartInstances calls, want none", n)
			}
		})
	}
}

func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
