package openvpn_test

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/openvpntest"
)

// TestCapture records status files and management transcripts of a real
// OpenVPN server into testdata. It runs only when asked:
//
//	OPENVPN_CAPTURE=1 go test -run TestCapture ./internal/source/openvpn/
//
// See testdata/README.md for what each file holds.
func TestCapture(t *testing.T) {
	if os.Getenv("OPENVPN_CAPTURE") != "1" {
		t.Skip("set OPENVPN_CAPTURE=1 to record testdata from a real openvpn")
	}
	users := map[string]string{"bob": "bob-secret"}
	// connectTwo connects alice (certificate only) and bobcn (username
	// bob), pings through both tunnels and waits for a status showing
	// both.
	connectTwo := func(t *testing.T, s *openvpntest.Server) {
		a := s.Connect(t, "alice", openvpntest.ClientOptions{})
		b := s.Connect(t, "bobcn", openvpntest.ClientOptions{Username: "bob", Password: "bob-secret"})
		a.Ping(t, 3)
		b.Ping(t, 1)
	}
	// saveStatus waits for the status file to hold all of want, then
	// copies it.
	saveStatus := func(t *testing.T, s *openvpntest.Server, name string, want ...string) {
		t.Helper()
		time.Sleep(1200 * time.Millisecond) // a fresh rewrite after the pings
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, err := os.ReadFile(s.StatusFile)
			ok := err == nil && bytes.HasSuffix(b, []byte("END\n"))
			for _, w := range want {
				ok = ok && bytes.Contains(b, []byte(w))
			}
			if ok {
				if err := os.WriteFile(filepath.Join("testdata", name), b, 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("%s:\n%s", name, b)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: wait for %q in %s: %v\n%s", name, want, s.StatusFile, err, b)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// pending opens a TCP connection to the server that never starts TLS.
	pending := func(t *testing.T, s *openvpntest.Server) {
		c, err := net.Dial("tcp", net.JoinHostPort(s.NS.Addr, "1194"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}

	for _, v := range []int{1, 2, 3} {
		t.Run("udp-v"+string(rune('0'+v)), func(t *testing.T) {
			s := openvpntest.Start(t, openvpntest.Options{StatusVersion: v, Users: users})
			connectTwo(t, s)
			saveStatus(t, s, "status-v"+string(rune('0'+v))+"-udp.txt", "alice", "bob")
		})
	}
	t.Run("management", func(t *testing.T) {
		s := openvpntest.Start(t, openvpntest.Options{Users: users, ManagementPassword: "mgmt-secret"})
		connectTwo(t, s)
		session := transcript(t, s.ManagementSocket, "mgmt-secret\n", "status 3\n", "quit\n")
		if err := os.WriteFile(filepath.Join("testdata", "management-session.txt"), session, 0o644); err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(session, []byte("TITLE\t"))
		if i < 0 {
			t.Fatalf("no status in %q", session)
		}
		if err := os.WriteFile(filepath.Join("testdata", "management-status3.txt"), session[i:], 0o644); err != nil {
			t.Fatal(err)
		}
		bad := transcript(t, s.ManagementSocket, "wrong\n")
		if err := os.WriteFile(filepath.Join("testdata", "management-bad-password.txt"), bad, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("session %q\nbad password %q", session, bad)
	})
	t.Run("tcp-v1-pending", func(t *testing.T) {
		s := openvpntest.Start(t, openvpntest.Options{Proto: "tcp", StatusVersion: 1})
		s.Connect(t, "alice", openvpntest.ClientOptions{}).Ping(t, 1)
		pending(t, s)
		saveStatus(t, s, "status-v1-tcp-pending.txt", "alice", "UNDEF")
	})
	t.Run("tcp6-v2-pending", func(t *testing.T) {
		s := openvpntest.Start(t, openvpntest.Options{Proto: "tcp", IPv6: true, StatusVersion: 2})
		s.Connect(t, "alice", openvpntest.ClientOptions{}).Ping(t, 1)
		pending(t, s)
		saveStatus(t, s, "status-v2-tcp6-pending.txt", "alice", "UNDEF")
	})
	t.Run("udp6-v3", func(t *testing.T) {
		s := openvpntest.Start(t, openvpntest.Options{IPv6: true, StatusVersion: 3})
		s.Connect(t, "alice", openvpntest.ClientOptions{}).Ping(t, 1)
		saveStatus(t, s, "status-v3-udp6.txt", "alice")
	})
}

// transcript connects to a management socket, sends each input after
// the server's previous answer is complete (the prompt, the banner, END)
// and returns everything the server sent.
func transcript(t *testing.T, socket string, inputs ...string) []byte {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	var got bytes.Buffer
	r := bufio.NewReader(c)
	readUntil := func(ends ...string) {
		for {
			b, err := r.ReadByte()
			if err != nil {
				return // closed, as after a bad password or quit
			}
			got.WriteByte(b)
			for _, e := range ends {
				if strings.HasSuffix(got.String(), e) {
					return
				}
			}
		}
	}
	readUntil("ENTER PASSWORD:")
	for _, in := range inputs {
		if _, err := c.Write([]byte(in)); err != nil {
			t.Fatal(err)
		}
		readUntil("more info\r\n", "END\r\n", "bad password\r\n")
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	readUntil("\x00") // whatever else comes until the server closes
	return got.Bytes()
}
