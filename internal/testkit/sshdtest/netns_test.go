package sshdtest

import (
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/netnstest"
)

// TestNetns runs sshd in a network namespace of the test's own, on the
// namespace's address and port 22, and logs in to it from the root
// namespace across the veth link with a key made before the server.
func TestNetns(t *testing.T) {
	ns := netnstest.New(t)
	// A key made before the server, as a client set up in advance has.
	key := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command(RequireBinary(t, "ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	s := Start(t, Options{Netns: ns.Name, ListenAddress: ns.Addr, ClientKey: key})
	if s.ClientKey != key {
		t.Fatalf("ClientKey = %q, want %q", s.ClientKey, key)
	}
	if s.Port != 22 || s.Addr != ns.Addr {
		t.Fatalf("server on %s:%d, want %s:22", s.Addr, s.Port, ns.Addr)
	}
	if !slices.Contains(ns.PIDs(), s.PID) {
		t.Fatalf("sshd %d is not in netns %s (pids %v)", s.PID, ns.Name, ns.PIDs())
	}
	run := s.SSH(t, nil, "echo", "hello from the namespace")
	if err := run.Wait(15 * time.Second); err != nil {
		t.Fatalf("ssh: %v; stderr %q; log:\n%s", err, run.Stderr(), s.Log())
	}
	if got := strings.TrimSpace(run.Stdout()); got != "hello from the namespace" {
		t.Fatalf("stdout %q", got)
	}
	s.WaitLog(t, "Accepted publickey for "+s.User+" from "+ns.HostAddr, 5*time.Second)
}
