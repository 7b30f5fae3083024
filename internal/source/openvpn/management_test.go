package openvpn

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in, network, address string
		ok                   bool
	}{
		{"unix:/run/openvpn/server.sock", "unix", "/run/openvpn/server.sock", true},
		{"/run/openvpn/server.sock", "unix", "/run/openvpn/server.sock", true},
		{"tcp:127.0.0.1:7505", "tcp", "127.0.0.1:7505", true},
		{"127.0.0.1:7505", "tcp", "127.0.0.1:7505", true},
		{"tcp:[::1]:7505", "tcp", "[::1]:7505", true},
		{"localhost:7505", "tcp", "localhost:7505", true},
		{"unix:relative.sock", "", "", false},
		{"127.0.0.1", "", "", false},
		{"tcp::7505", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		network, address, err := ParseAddr(tt.in)
		if (err == nil) != tt.ok || network != tt.network || address != tt.address {
			t.Errorf("ParseAddr(%q) = %q, %q, %v; want %q, %q, ok %v", tt.in, network, address, err, tt.network, tt.address, tt.ok)
		}
	}
}

// capturedSession is what a real OpenVPN 2.6 management interface sent,
// split at the points where it waited for the client.
type capturedSession struct {
	prompt, greeting, status string
}

func loadSession(t *testing.T) capturedSession {
	t.Helper()
	b, err := os.ReadFile("testdata/management-session.txt")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "TITLE\t")
	if !strings.HasPrefix(s, passwordPrompt) || i < 0 {
		t.Fatalf("unexpected capture %q", s)
	}
	return capturedSession{prompt: passwordPrompt, greeting: s[len(passwordPrompt):i], status: s[i:]}
}

// scriptServer is a management interface on a unix socket that serves
// each connection with a script; it records the lines clients sent.
type scriptServer struct {
	addr string
	mu   sync.Mutex
	got  []string
}

// step of a script: send text, then (if expect is set) read one line.
// After the last step the server holds the connection until the client
// closes it, or hangs up when the last step has hangup set.
type step struct {
	send   string
	expect bool
	hangup bool
}

func startScript(t *testing.T, steps ...step) *scriptServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "ovpnmgmt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "m.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &scriptServer{addr: "unix:" + path}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				for _, st := range steps {
					if _, err := io.WriteString(c, st.send); err != nil {
						return
					}
					if !st.expect {
						continue
					}
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					s.mu.Lock()
					s.got = append(s.got, strings.TrimSuffix(l, "\n"))
					s.mu.Unlock()
				}
				if len(steps) > 0 && steps[len(steps)-1].hangup {
					return
				}
				// Hold the connection until the client closes it.
				_, _ = io.Copy(io.Discard, r)
			}()
		}
	}()
	return s
}

func (s *scriptServer) received() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestQueryCaptured replays the captured session of a real OpenVPN 2.6
// (password prompt, SUCCESS, banner, status 3), with real-time lines
// mixed into the status as they can be when another feature is on.
func TestQueryCaptured(t *testing.T) {
	cs := loadSession(t)
	lines := strings.SplitAfter(cs.status, "\r\n")
	withRealtime := strings.Join(lines[:3], "") + ">BYTECOUNT_CLI:0,2273,2265\r\n>LOG:1795314062,I,something\r\n" + strings.Join(lines[3:], "")
	srv := startScript(t,
		step{send: cs.prompt, expect: true},
		step{send: cs.greeting + ">HOLD:Waiting for hold release:0\r\n", expect: true},
		step{send: withRealtime, expect: true},
	)
	got, err := Query(ctxTimeout(t, 5*time.Second), srv.addr, "mgmt-secret")
	if err != nil {
		t.Fatal(err)
	}
	want, err := ParseStatus(strings.NewReader(cs.status))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Query (-want +got):\n%s", diff)
	}
	waitFor(t, func() bool { return len(srv.received()) == 3 })
	if diff := cmp.Diff([]string{"mgmt-secret", "status 3", "quit"}, srv.received()); diff != "" {
		t.Errorf("commands sent (-want +got):\n%s", diff)
	}
}

// TestQueryNoPassword: without a password the banner comes first.
func TestQueryNoPassword(t *testing.T) {
	cs := loadSession(t)
	banner := cs.greeting[strings.Index(cs.greeting, ">INFO"):]
	srv := startScript(t, step{send: banner, expect: true}, step{send: cs.status, expect: true})
	raw, err := QueryRaw(ctxTimeout(t, 5*time.Second), srv.addr, "unused")
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ReplaceAll(cs.status, "\r\n", "\n"); string(raw) != want {
		t.Errorf("QueryRaw = %q, want %q", raw, want)
	}
	waitFor(t, func() bool { return len(srv.received()) == 2 })
	if diff := cmp.Diff([]string{"status 3", "quit"}, srv.received()); diff != "" {
		t.Errorf("commands sent (-want +got):\n%s", diff)
	}
}

func TestQueryErrors(t *testing.T) {
	cs := loadSession(t)
	bad, err := os.ReadFile("testdata/management-bad-password.txt")
	if err != nil {
		t.Fatal(err)
	}
	reprompt := string(bad[len(passwordPrompt):]) // 2.6 prompts again
	tests := []struct {
		name     string
		steps    []step
		password string
		sentinel error
		text     string
	}{
		{"bad password", []step{{send: cs.prompt, expect: true}, {send: reprompt}}, "wrong", ErrBadPassword, ""},
		{"bad password, error line", []step{{send: cs.prompt, expect: true}, {send: "ERROR: bad password\r\n"}}, "wrong", ErrBadPassword, ""},
		{"password required", []step{{send: cs.prompt, expect: true}}, "", ErrPasswordRequired, ""},
		{"not openvpn", []step{{send: "SSH-2.0-OpenSSH_9.2\r\n", expect: true}}, "", ErrManagement, "SSH-2.0"},
		{"status error", []step{{send: ">INFO:x\r\n", expect: true}, {send: "ERROR: unknown command\r\n", expect: true}}, "", ErrManagement, "unknown command"},
		{"closed mid-status", []step{{send: ">INFO:x\r\n", expect: true}, {send: "TITLE\tx\r\nHEADER\tCLIENT_LIST\tCommon Name\r\n", hangup: true}}, "", io.ErrUnexpectedEOF, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startScript(t, tt.steps...)
			_, err := Query(ctxTimeout(t, 3*time.Second), srv.addr, tt.password)
			if !errors.Is(err, tt.sentinel) || !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("Query: %v, want %v containing %q", err, tt.sentinel, tt.text)
			}
			if !strings.Contains(err.Error(), srv.addr) {
				t.Errorf("error %q does not name %s", err, srv.addr)
			}
		})
	}
}

// TestQuerySilentServer: a management interface busy with another
// client accepts (the kernel does) and says nothing. Query gives up at
// the deadline with a hint.
func TestQuerySilentServer(t *testing.T) {
	srv := startScript(t, step{send: "", expect: true})
	start := time.Now()
	_, err := Query(ctxTimeout(t, 300*time.Millisecond), srv.addr, "")
	if err == nil || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "one management client at a time") {
		t.Fatalf("Query: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Query took %v with a 300ms deadline", d)
	}
}

// TestQueryCancel: cancellation ends a query at once.
func TestQueryCancel(t *testing.T) {
	srv := startScript(t, step{send: "", expect: true})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := Query(ctx, srv.addr, "")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Query: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Query took %v after cancel", d)
	}
}

func TestQueryNoServer(t *testing.T) {
	_, err := Query(context.Background(), "unix:"+filepath.Join(t.TempDir(), "none.sock"), "")
	if err == nil || !strings.Contains(err.Error(), "connect to management interface") {
		t.Fatalf("Query: %v", err)
	}
}

// waitFor waits at most 2 s for cond.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 2s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
