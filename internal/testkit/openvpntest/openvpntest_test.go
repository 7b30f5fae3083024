package openvpntest

import (
	"bufio"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// waitStatus waits at most 20 s for the status file to satisfy cond. An
// idle OpenVPN 2.6 (no clients) rewrites its status file only when its
// event loop wakes up, about every 10 s, whatever the refresh interval.
func waitStatus(t *testing.T, s *Server, cond func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(s.StatusFile)
		if cond(string(b)) {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("status file %s after 20s:\n%s", s.StatusFile, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServerTCP6: a TCP server over IPv6 with a password-protected TCP
// management interface and username authentication; a client with a
// username and one without; a killed client leaves at once (TCP).
func TestServerTCP6(t *testing.T) {
	s := Start(t, Options{Proto: "tcp", IPv6: true, StatusVersion: 2, Management: ManagementTCP,
		ManagementPassword: "pw", Users: map[string]string{"bob": "secret"}})
	if !strings.Contains(s.ClientAddr, ":") || s.ManagementSocket != "" || !strings.HasPrefix(s.Management(), "tcp:") {
		t.Fatalf("server %+v", s)
	}
	alice := s.Connect(t, "alice", ClientOptions{})
	bob := s.Connect(t, "bobcn", ClientOptions{Username: "bob", Password: "secret"})
	alice.Ping(t, 1)
	if alice.VirtualAddr == bob.VirtualAddr || !strings.HasPrefix(alice.VirtualAddr, strings.TrimSuffix(s.Subnet, "0")) {
		t.Errorf("virtual addresses %s, %s in %s", alice.VirtualAddr, bob.VirtualAddr, s.Subnet)
	}
	waitStatus(t, s, func(st string) bool {
		return strings.Contains(st, "CLIENT_LIST,alice,"+s.ClientAddr+","+alice.VirtualAddr+",") &&
			strings.Contains(st, "CLIENT_LIST,bobcn,"+s.ClientAddr+","+bob.VirtualAddr+",") && strings.Contains(st, ",bob,")
	})

	// The management interface asks for the password.
	c, err := net.DialTimeout("tcp", s.ManagementAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	if string(buf[:n]) != "ENTER PASSWORD:" {
		t.Errorf("management greeting %q", buf[:n])
	}
	_, _ = c.Write([]byte("pw\n"))
	if l, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(l, "SUCCESS") {
		t.Errorf("after the password: %q", l)
	}
	_, _ = c.Write([]byte("quit\n"))

	bob.Kill()
	waitStatus(t, s, func(st string) bool { return !strings.Contains(st, "bobcn") && strings.Contains(st, "alice") })
	if !alice.Stop() {
		t.Error("alice did not exit on SIGTERM")
	}
	select {
	case <-alice.Exited():
	default:
		t.Error("Exited not closed after Stop")
	}
}

// TestServerUDPStatus1: the default UDP server, status version 1, a
// unix management socket; a client stopped with SIGTERM tells the
// server (explicit-exit-notify), which drops it 5 s later.
func TestServerUDPStatus1(t *testing.T) {
	s := Start(t, Options{StatusVersion: 1})
	if _, err := os.Stat(s.ManagementSocket); err != nil {
		t.Fatalf("management socket: %v", err)
	}
	c := s.Connect(t, "carol", ClientOptions{})
	waitStatus(t, s, func(st string) bool {
		return strings.Contains(st, "\ncarol,"+s.ClientAddr+":") && strings.Contains(st, "\n"+c.VirtualAddr+",carol,")
	})
	c.Stop()
	s.WaitLog(t, "carol/"+s.ClientAddr, 5*time.Second)
	s.WaitLog(t, "exit message received by peer", 5*time.Second)
	waitStatus(t, s, func(st string) bool {
		return strings.HasPrefix(st, "OpenVPN CLIENT LIST") && !strings.Contains(st, "carol")
	})
}
