package sshd

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/connwatch/connwatch/internal/testkit/procfixture"
)

// TestPortFilterKeepsUnknownPorts: a session whose socket could not be
// mapped (port 0) might be on the watched port, so it still counts.
func TestPortFilterKeepsUnknownPorts(t *testing.T) {
	dir := t.TempDir()
	tree := procfixture.Tree{BootTime: 1_700_000_000,
		Procs: []procfixture.Proc{
			{PID: 10, PPID: 1, Comm: "sshd", Title: "sshd: alice [priv]", Sockets: map[int]uint64{4: 100}},
			{PID: 11, PPID: 10, Comm: "sshd", Title: "sshd: alice"},
			{PID: 20, PPID: 1, Comm: "sshd", Title: "sshd: bob [priv]", Sockets: map[int]uint64{4: 200}},
			{PID: 21, PPID: 20, Comm: "sshd", Title: "sshd: bob"},
			{PID: 30, PPID: 1, Comm: "sshd", Title: "sshd: carol [priv]"}, // socket unreadable
			{PID: 31, PPID: 30, Comm: "sshd", Title: "sshd: carol"},
		},
		TCP: []procfixture.TCP{
			{Local: "10.0.0.1:22", Remote: "198.51.100.1:40000", State: 1, Inode: 100},
			{Local: "10.0.0.1:2222", Remote: "198.51.100.2:40001", State: 1, Inode: 200},
		},
	}
	if err := tree.Write(dir); err != nil {
		t.Fatal(err)
	}
	f := New(Options{ProcRoot: filepath.Clean(dir), Ports: []int{22}})
	snap, err := f.Scan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for _, s := range snap.Sessions {
		users[s.User] = true
	}
	if !users["alice"] || users["bob"] || !users["carol"] || len(users) != 2 {
		t.Errorf("kept %v, want alice (port 22) and carol (port unknown)", users)
	}
}
