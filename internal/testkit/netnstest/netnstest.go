// Package netnstest makes network namespaces for tests: real hosts on
// real links, joined to the root namespace or to each other by veth
// pairs on /30s of 10.231.0.0/16, removed with every process left in them
// when the test ends. Tests send traffic only to these namespaces and to
// loopback.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// Require skips the test with a clear reason when ok is false, or fails
// it when the environment variable CI is "true".
func Require(t testing.TB, what string, ok bool) {
	t.Helper()
	testproc.Require(t, "netnstest", what, ok)
}

// RequireBinary requires an executable and returns its path.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	return testproc.RequireBinary(t, "netnstest", name)
}

// NS is a network namespace made for one test.
type NS struct {
	Name string
	// Addr is the namespace's address on its link to the root namespace,
	// HostAddr the root namespace's end; If and HostIf their interfaces.
	Addr, HostAddr string
	If, HostIf     string

	mu        sync.Mutex
	afterKill []func()
}

var (
	subnetMu sync.Mutex
	taken    = map[string]bool{}
)

// freeSubnet returns a /30 prefix ("10.231.7.") and host offset no
// interface here is on yet.
func freeSubnet(t testing.TB) (string, string) {
	t.Helper()
	subnetMu.Lock()
	defer subnetMu.Unlock()
	inUse := func(p string) bool {
		addrs, _ := net.InterfaceAddrs()
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && strings.HasPrefix(ipn.IP.String(), p) {
				return true
			}
		}
		return false
	}
	for range 50 {
		x, _ := rand.Int(rand.Reader, big.NewInt(256))
		y, _ := rand.Int(rand.Reader, big.NewInt(64))
		prefix := fmt.Sprintf("10.231.%d.", x.Int64())
		if inUse(prefix) || taken[prefix] {
			continue
		}
		taken[prefix] = true
		base := int(y.Int64()) * 4
		return prefix + strconv.Itoa(base+1), prefix + strconv.Itoa(base+2)
	}
	t.Fatal("netnstest: no free /30 in 10.231.0.0/16")
	return "", ""
}

func randomID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run runs a command and fails the test with its output when it fails;
// it returns the output.
func Run(t testing.TB, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// New creates a namespace joined to the root namespace by a veth pair,
// and registers its removal (and that of every process left inside). It
// requires root and ip(8).
func New(t testing.TB) *NS {
	t.Helper()
	Require(t, "root (network namespaces)", os.Geteuid() == 0)
	RequireBinary(t, "ip")
	id := randomID()
	n := &NS{Name: "cwns-" + id, HostIf: "cwh" + id, If: "cwn" + id}
	n.HostAddr, n.Addr = freeSubnet(t)
	Run(t, "", "ip", "netns", "add", n.Name)
	t.Cleanup(func() { n.remove(t) })
	Run(t, "", "ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", n.If, "netns", n.Name)
	Run(t, "", "ip", "addr", "add", n.HostAddr+"/30", "dev", n.HostIf)
	Run(t, "", "ip", "link", "set", n.HostIf, "up")
	Run(t, "", "ip", "-n", n.Name, "addr", "add", n.Addr+"/30", "dev", n.If)
	Run(t, "", "ip", "-n", n.Name, "link", "set", n.If, "up")
	Run(t, "", "ip", "-n", n.Name, "link", "set", "lo", "up")
	t.Logf("netns %s: %s (%s) <-> %s (%s)", n.Name, n.HostAddr, n.HostIf, n.Addr, n.If)
	return n
}

// Link joins n and m by another veth pair and returns their addresses on
// it. The pair goes with the namespaces.
func (n *NS) Link(t testing.TB, m *NS) (nAddr, mAddr string) {
	t.Helper()
	id := randomID()
	a, b := "cwl"+id+"a", "cwl"+id+"b"
	nAddr, mAddr = freeSubnet(t)
	Run(t, "", "ip", "link", "add", a, "netns", n.Name, "type", "veth", "peer", "name", b, "netns", m.Name)
	Run(t, "", "ip", "-n", n.Name, "addr", "add", nAddr+"/30", "dev", a)
	Run(t, "", "ip", "-n", n.Name, "link", "set", a, "up")
	Run(t, "", "ip", "-n", m.Name, "addr", "add", mAddr+"/30", "dev", b)
	Run(t, "", "ip", "-n", m.Name, "link", "set", b, "up")
	t.Logf("link %s %s <-> %s %s", n.Name, nAddr, m.Name, mAddr)
	return nAddr, mAddr
}

// Command returns a command that runs inside the namespace.
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace, failing the test when it
// fails, and returns its output.
func (n *NS) Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	return Run(t, "", "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// AfterKill registers f to run at removal, after every process in the
// namespace was killed and before the namespace is deleted (to wait for
// commands the test started, say).
func (n *NS) AfterKill(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.afterKill = append(n.afterKill, f)
}

// PIDs returns the processes in the namespace.
func (n *NS) PIDs() []int {
	out, _ := exec.Command("ip", "netns", "pids", n.Name).Output()
	var ps []int
	for _, f := range strings.Fields(string(out)) {
		if p, err := strconv.Atoi(f); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// remove kills every process in the namespace, then deletes it and the
// veth pair.
func (n *NS) remove(t testing.TB) {
	t.Helper()
	others := func() []int {
		var ps []int
		for _, p := range n.PIDs() {
			if p != os.Getpid() {
				ps = append(ps, p)
			}
		}
		return ps
	}
	if slices.Contains(n.PIDs(), os.Getpid()) {
		t.Errorf("the test process itself is in netns %s", n.Name)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ps := others(); len(ps) > 0; ps = others() {
		if time.Now().After(deadline) {
			t.Errorf("processes %v still in netns %s", ps, n.Name)
			break
		}
		for _, p := range ps {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.mu.Lock()
	fs := n.afterKill
	n.mu.Unlock()
	for _, f := range fs {
		f()
	}
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
	}
	// Deleting the namespace deletes the pair, asynchronously: give it a
	// moment, then delete the host end ourselves if it is still there.
	for range 50 {
		if _, err := net.InterfaceByName(n.HostIf); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "link", "del", n.HostIf).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
		t.Errorf("ip link del %s: %v: %s", n.HostIf, err, out)
	}
}
