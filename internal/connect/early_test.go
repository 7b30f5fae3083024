package connect

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
	"golang.org/x/sys/unix"
)

// A connect remembers where the instance answered; the next one dials
// there while it asks EC2, and uses that connection: one accept each.
func TestEarlyDialUsesRememberedAddress(t *testing.T) {
	clk := newAutoClock()
	s := newSSHD(t)
	f := newFake(clk, &fakeInstance{id: id, state: types.InstanceStateNameRunning, public: s.host, private: "10.0.0.1"})
	o, _ := setup(t, f, s, clk, id)
	dialOK(t, o)
	hp := net.JoinHostPort(s.host, strconv.Itoa(s.port))
	if b, err := os.ReadFile(filepath.Join(o.LockDir, id+".addr")); err != nil || string(b) != hp {
		t.Fatalf("remembered %q, %v; want %q", b, err, hp)
	}
	// The second connect dials before it hears from EC2: its
	// DescribeInstances waits for that dial.
	var dials atomic.Int32
	dialed := make(chan struct{})
	o.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if dials.Add(1) == 1 {
			close(dialed)
		}
		return f.dial(ctx, network, addr)
	}
	early := make(chan bool, 1)
	o.Client = waitingEC2{f, func() { early <- testproc.WaitClosed(dialed, 5*time.Second) }}
	dialOK(t, o)
	if !<-early {
		t.Errorf("no dial before DescribeInstances")
	}
	if n, d := s.count(), dials.Load(); n != 2 || d != 1 {
		t.Errorf("%d connections to sshd, %d dials in the second connect; want 2 and 1 (the early one used)", n, d)
	}
	if n := f.count("DescribeInstances"); n != 2 {
		t.Errorf("%d DescribeInstances, want 2: the address is always confirmed", n)
	}
}

// waitingEC2 calls wait before each DescribeInstances.
type waitingEC2 struct {
	EC2
	wait func()
}

func (w waitingEC2) DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error) {
	w.wait()
	return w.EC2.DescribeInstances(ctx, in, opts...)
}

// When the instance has another address now, the early connection is
// closed unused and the new address is dialled and remembered.
func TestEarlyDialAddressChanged(t *testing.T) {
	clk := newAutoClock()
	old := newSSHD(t)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(old.port)))
	if err != nil {
		t.Skipf("listen on 127.0.0.2:%d: %v", old.port, err)
	}
	ln.Close()
	now := newSSHDOn(t, "127.0.0.2", old.port)
	inst := &fakeInstance{id: id, state: types.InstanceStateNameRunning, public: old.host}
	f := newFake(clk, inst)
	o, _ := setup(t, f, old, clk, id)
	dialOK(t, o)
	f.mu.Lock()
	inst.public = now.host
	f.mu.Unlock()
	dialOK(t, o)
	if n := now.count(); n != 1 {
		t.Errorf("%d connections to the new address, want 1", n)
	}
	if b, _ := os.ReadFile(filepath.Join(o.LockDir, id+".addr")); string(b) != net.JoinHostPort(now.host, strconv.Itoa(now.port)) {
		t.Errorf("remembered %q after the change", b)
	}
}

// The address file is the user's own, but read as carefully as any:
// anything but a regular file holding an IP address and the port is no
// address.
func TestLastAddrRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	r := &run{Options: Options{LockDir: dir, Port: 22}}
	path := filepath.Join(dir, id+".addr")
	other := filepath.Join(t.TempDir(), "elsewhere")
	if err := os.WriteFile(other, []byte("192.0.2.1:22"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, setup := range map[string]func() error{
		"a symlink":     func() error { return os.Symlink(other, path) },
		"a hard link":   func() error { return os.Link(other, path) },
		"a directory":   func() error { return os.Mkdir(path, 0o700) },
		"a FIFO":        func() error { return unix.Mkfifo(path, 0o600) },
		"no address":    func() error { return os.WriteFile(path, []byte("devbox.example:22"), 0o600) },
		"another port":  func() error { return os.WriteFile(path, []byte("192.0.2.1:2222"), 0o600) },
		"too long":      func() error { return os.WriteFile(path, []byte(strings.Repeat("1", 100)), 0o600) },
		"a second line": func() error { return os.WriteFile(path, []byte("192.0.2.1:22\nProxyCommand x"), 0o600) },
	} {
		t.Run(name, func(t *testing.T) {
			os.RemoveAll(path)
			if err := setup(); err != nil {
				t.Fatal(err)
			}
			if got := r.lastAddr(id); got != "" {
				t.Errorf("lastAddr = %q, want none", got)
			}
		})
	}
	os.RemoveAll(path)
	if err := os.WriteFile(path, []byte("192.0.2.1:22"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := r.lastAddr(id); got != "192.0.2.1:22" {
		t.Errorf("lastAddr of a good file = %q", got)
	}
}

// remember writes only into a lock directory that is this user's alone
// (a connect by name: reads no address first, so remember checks).
func TestRememberRefusesOpenDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	r := &run{Options: Options{LockDir: dir, Port: 22}}
	r.remember(id, "192.0.2.1:22", "")
	if _, err := os.Lstat(filepath.Join(dir, id+".addr")); !os.IsNotExist(err) {
		t.Errorf("remember wrote into a directory others can write: %v", err)
	}
	ok := &run{Options: Options{LockDir: t.TempDir(), Port: 22}}
	ok.remember(id, "192.0.2.1:22", "")
	if got := ok.lastAddr(id); got != "192.0.2.1:22" {
		t.Errorf("lastAddr after remember = %q", got)
	}
}
