package connect

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
)

// With helperDir set, the test binary is one connect process of
// TestConcurrentProcessesStartOnce.
const (
	helperDir   = "CONNWATCH_CONNECT_HELPER_DIR"
	helperPort  = "CONNWATCH_CONNECT_HELPER_PORT"
	helperStdin = "CONNWATCH_CONNECT_HELPER_STDIN"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperDir); dir != "" {
		os.Exit(helperMain(dir, os.Getenv(helperPort)))
	}
	if os.Getenv(helperStdin) != "" {
		os.Exit(stdinMain())
	}
	code := m.Run()
	if code == 0 && !noLeaks() {
		code = 1
	}
	os.Exit(code)
}

// noLeaks reports whether, within a few seconds, no goroutine of this
// package outlives the tests: lock waiters, dial attempts and splice
// copiers must all end.
func noLeaks() bool {
	var leaked []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		leaked = leaked[:0]
		for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
			if strings.Contains(g, "/internal/connect.") && !strings.Contains(g, "connect.TestMain") {
				leaked = append(leaked, g)
			}
		}
		if len(leaked) == 0 {
			return true
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "%d goroutines leaked:\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
			return false
		}
	}
}

// stdinMain reports whether standard input takes a read deadline before
// and after PollableStdin, then copies one line from it.
func stdinMain() int {
	before := os.Stdin.SetReadDeadline(noDeadline) == nil
	in := PollableStdin()
	after := in.SetReadDeadline(noDeadline) == nil
	line, _ := bufio.NewReader(in).ReadString('\n')
	fmt.Printf("pollable before=%v after=%v same=%v read=%q\n", before, after, in == os.Stdin, line)
	return 0
}

// ssh gives a ProxyCommand a blocking pipe as standard input:
// PollableStdin makes it pollable (so Splice can splice it and stop
// reading it); a terminal or a file is left as it is.
func TestPollableStdin(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperStdin+"=1")
	cmd.Stdin = strings.NewReader("hello\n") // a pipe, blocking in the child
	out, err := cmd.Output()
	if want := "pollable before=false after=true same=false read=\"hello\\n\"\n"; err != nil || string(out) != want {
		t.Errorf("pipe: %q, %v; want %q", out, err, want)
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cmd = exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), helperStdin+"=1")
	cmd.Stdin = devnull
	out, err = cmd.Output()
	if want := "pollable before=false after=false same=true read=\"\"\n"; err != nil || string(out) != want {
		t.Errorf("%s: %q, %v; want %q", os.DevNull, out, err, want)
	}
}

// fileEC2 is a fake EC2 that processes share through files in dir:
// "state" is the instance's state, "starts" gets a line per
// StartInstances, a flock on "mu" serialises them. StartInstances first
// waits for the flock on "gate", which the test holds until every
// process has looked at the instance once. Each process says
// "described" on out after its first look.
type fileEC2 struct {
	dir  string
	out  io.Writer
	once sync.Once
}

func (f *fileEC2) locked(name string, fn func() error) error {
	lk, err := os.OpenFile(filepath.Join(f.dir, name), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lk.Close()
	if err := flock(lk); err != nil {
		return err
	}
	return fn()
}

func (f *fileEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, _ ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	var st []byte
	err := f.locked("mu", func() (err error) {
		st, err = os.ReadFile(filepath.Join(f.dir, "state"))
		return err
	})
	if err != nil {
		return nil, err
	}
	f.once.Do(func() { fmt.Fprintln(f.out, "described") })
	inst := types.Instance{InstanceId: aws.String(id), State: &types.InstanceState{Name: types.InstanceStateName(st)}, InstanceType: "t3.large"}
	if string(st) == "running" {
		inst.PublicIpAddress = aws.String("127.0.0.1")
	}
	return &ec2.DescribeInstancesOutput{Reservations: []types.Reservation{{Instances: []types.Instance{inst}}}}, nil
}

func (f *fileEC2) StartInstances(ctx context.Context, in *ec2.StartInstancesInput, _ ...func(*ec2.Options)) (*ec2.StartInstancesOutput, error) {
	if err := f.locked("gate", func() error { return nil }); err != nil {
		return nil, err
	}
	err := f.locked("mu", func() error {
		starts, err := os.OpenFile(filepath.Join(f.dir, "starts"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		defer starts.Close()
		if _, err := fmt.Fprintf(starts, "start by %d\n", os.Getpid()); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(f.dir, "state"), []byte("running"), 0o600)
	})
	return &ec2.StartInstancesOutput{}, err
}

func (f *fileEC2) CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	return &ec2.CreateTagsOutput{}, nil
}

// helperMain says "ready", waits for a line on stdin, connects and says
// "connected" (or the error).
func helperMain(dir, port string) int {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 3
	}
	p, _ := strconv.Atoi(port)
	conn, err := Dial(context.Background(), Options{
		Client: &fileEC2{dir: dir, out: os.Stdout}, Region: "eu-west-1", Target: Target{ID: id}, Port: p,
		LockDir: filepath.Join(dir, "locks"), Clock: clock.NewFake(t0), Progress: os.Stderr,
	})
	if err != nil {
		fmt.Printf("error: %v\n", err)
		return 1
	}
	buf := make([]byte, len(banner))
	_, err = io.ReadFull(conn, buf)
	conn.Close()
	if err != nil || string(buf) != banner {
		fmt.Printf("error: banner %q, %v\n", buf, err)
		return 1
	}
	fmt.Println("connected")
	return 0
}

// Ten connect processes started together on a stopped instance make one
// StartInstances call, and all ten connect.
func TestConcurrentProcessesStartOnce(t *testing.T) {
	const n = 10
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("stopped"), 0o600); err != nil {
		t.Fatal(err)
	}
	gate, err := os.OpenFile(filepath.Join(dir, "gate"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close()
	if err := unix.Flock(int(gate.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	s := newSSHD(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}

	type proc struct {
		cmd    *exec.Cmd
		stdin  io.WriteCloser
		lines  chan string
		stderr bytes.Buffer
	}
	procs := make([]*proc, n)
	for i := range procs {
		p := &proc{lines: make(chan string, 8)}
		p.cmd = exec.Command(exe, "-test.run=^$")
		p.cmd.Env = append(os.Environ(), helperDir+"="+dir, helperPort+"="+strconv.Itoa(s.port))
		p.cmd.Stderr = &p.stderr
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		stdout, err := p.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.cmd.Process.Kill(); p.cmd.Wait() })
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				p.lines <- sc.Text()
			}
			close(p.lines)
		}()
		procs[i] = p
	}
	// A safety net against a hung helper, not a wait.
	safety := time.After(60 * time.Second)
	expect := func(p *proc, want string) {
		t.Helper()
		select {
		case got := <-p.lines:
			if got != want {
				t.Fatalf("pid %d said %q, want %q; stderr:\n%s", p.cmd.Process.Pid, got, want, p.stderr.String())
			}
		case <-safety:
			t.Fatalf("pid %d did not say %q", p.cmd.Process.Pid, want)
		}
	}
	for _, p := range procs {
		expect(p, "ready")
	}
	for _, p := range procs {
		p.stdin.Write([]byte("go\n"))
	}
	for _, p := range procs {
		expect(p, "described")
	}
	gate.Close() // all have seen it stopped: let the start through
	for _, p := range procs {
		expect(p, "connected")
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("pid %d: %v", p.cmd.Process.Pid, err)
		}
	}
	starts, err := os.ReadFile(filepath.Join(dir, "starts"))
	if err != nil {
		t.Fatal(err)
	}
	if c := strings.Count(string(starts), "\n"); c != 1 {
		t.Errorf("%d StartInstances, want 1:\n%s", c, starts)
	}
	if s.count() != n {
		t.Errorf("%d connections, want %d", s.count(), n)
	}
	waited := 0
	for _, p := range procs {
		if strings.Contains(p.stderr.String(), "waiting for another connwatch") {
			waited++
		}
	}
	t.Logf("%d of %d processes waited for the lock", waited, n)
}
