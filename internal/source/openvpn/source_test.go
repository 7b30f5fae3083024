package openvpn

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/session"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name  string
		cfg   Config
		field string // "" for valid
	}{
		{"management", Config{Management: "unix:/run/openvpn/server.sock"}, ""},
		{"tcp management with password", Config{Management: "tcp:127.0.0.1:7505", PasswordFile: "/etc/openvpn/pw"}, ""},
		{"bare host:port", Config{Management: "127.0.0.1:7505"}, ""},
		{"status file", Config{Name: "office", StatusFile: "/run/openvpn/status.log", StaleAfter: time.Minute}, ""},
		{"neither", Config{}, "Management or StatusFile"},
		{"both", Config{Management: "unix:/x", StatusFile: "/y"}, "Management and StatusFile"},
		{"password without management", Config{StatusFile: "/y", PasswordFile: "/pw"}, "PasswordFile"},
		{"negative stale", Config{StatusFile: "/y", StaleAfter: -time.Second}, "StaleAfter"},
		{"bad name", Config{Name: "a/b", StatusFile: "/y"}, "Name"},
		{"relative unix path", Config{Management: "unix:server.sock"}, "Management"},
		{"no port", Config{Management: "tcp:127.0.0.1"}, "Management"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("New: %v, want an ErrConfig naming %q", err, tt.field)
			}
		})
	}
}

func TestName(t *testing.T) {
	for name, want := range map[string]string{"": "openvpn", "openvpn": "openvpn", "office": "openvpn/office"} {
		s, err := New(Config{Name: name, StatusFile: "/x"})
		if err != nil {
			t.Fatal(err)
		}
		if s.Name() != want || s.Kind() != session.KindOpenVPN {
			t.Errorf("Name %q: Name() = %q, Kind() = %q; want %q, openvpn", name, s.Name(), s.Kind(), want)
		}
	}
}

func TestSplitRealAddr(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port int
	}{
		{"10.231.249.78:52581", "10.231.249.78", 52581},
		{"fd63:7732:442a::2", "fd63:7732:442a::2", 0}, // 2.6 prints IPv6 without port
		{"2001:db8::1", "2001:db8::1", 0},
		{"[2001:db8::1]:1194", "2001:db8::1", 1194},
		{"[AF_INET]192.0.2.1:1194", "192.0.2.1", 1194},
		{"[AF_INET6]2001:db8::1", "2001:db8::1", 0},
		{"192.0.2.1", "192.0.2.1", 0},
		{"garbage", "garbage", 0},
		{"", "", 0},
	}
	for _, tt := range tests {
		host, port := SplitRealAddr(tt.in)
		if host != tt.host || port != tt.port {
			t.Errorf("SplitRealAddr(%q) = %q, %d; want %q, %d", tt.in, host, port, tt.host, tt.port)
		}
	}
}

// statusDir holds a status file the test rewrites.
type statusDir struct {
	t    *testing.T
	path string
}

func newStatusDir(t *testing.T) *statusDir {
	return &statusDir{t: t, path: filepath.Join(t.TempDir(), "status.txt")}
}

// write copies testdata/name to the status file, after edit.
func (d *statusDir) write(name string, edit func(string) string) {
	d.t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		d.t.Fatal(err)
	}
	s := string(b)
	if edit != nil {
		s = edit(s)
	}
	if err := os.WriteFile(d.path, []byte(s), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// dropLines removes the lines containing sub.
func dropLines(sub string) func(string) string {
	return func(s string) string {
		var keep []string
		for _, l := range strings.SplitAfter(s, "\n") {
			if !strings.Contains(l, sub) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "")
	}
}

func ptr[T any](v T) *T { return &v }

// TestPollStatusFile follows a captured version 2 status through a
// client leaving, a failed read and a stale file, on a fake clock.
func TestPollStatusFile(t *testing.T) {
	d := newStatusDir(t)
	d.write("status-v2-udp.txt", nil)
	updated := time.Unix(1795314051, 0)
	clk := clock.NewFake(updated.Add(2 * time.Second))
	src, err := New(Config{Name: "office", StatusFile: d.path, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	snap, err := src.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	since := time.Unix(1795314050, 0)
	alice := session.Session{
		ID: "ovpn-office-0-1795314050", Kind: session.KindOpenVPN, User: "alice",
		RemoteAddr: "10.231.163.130", RemotePort: 50131, StartedAt: since, LastActivityAt: ptr(since),
		VPN: &session.VPN{Server: "office", CommonName: "alice", VirtualAddr: "10.232.197.2", ConnectionID: "0", BytesIn: 2273, BytesOut: 2267},
	}
	bob := session.Session{
		ID: "ovpn-office-1-1795314050", Kind: session.KindOpenVPN, User: "bob",
		RemoteAddr: "10.231.163.130", RemotePort: 37164, StartedAt: since, LastActivityAt: ptr(since),
		VPN: &session.VPN{Server: "office", CommonName: "bobcn", Username: "bob", VirtualAddr: "10.232.197.3", ConnectionID: "1", BytesIn: 2072, BytesOut: 2051},
	}
	want := session.Snapshot{Time: clk.Now(), Complete: true, Sessions: []session.Session{alice, bob},
		PendingAuth: []session.PendingAuth{}, Warnings: []session.Warning{}}
	if diff := cmp.Diff(want, snap); diff != "" {
		t.Fatalf("first poll (-want +got):\n%s", diff)
	}

	// The file cannot be read: an error, and the memory of alice stays.
	if err := os.Remove(d.path); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if _, err := src.Poll(ctx); err == nil || !strings.Contains(err.Error(), d.path) {
		t.Fatalf("poll of a missing file: %v, want an error naming %s", err, d.path)
	}

	// OpenVPN rewrites the file without alice at updated+10s.
	d.write("status-v2-udp.txt", func(s string) string {
		s = dropLines("alice")(s)
		return strings.Replace(s, "TIME,2026-11-22 02:20:51,1795314051", "TIME,2026-11-22 02:21:01,1795314061", 1)
	})
	clk.Set(updated.Add(11 * time.Second))
	snap, err = src.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Sessions) != 1 || snap.Sessions[0].ID != bob.ID {
		t.Fatalf("sessions after alice left: %+v", snap.Sessions)
	}
	endedAlice := alice
	endedAlice.EndedAt = ptr(updated.Add(10 * time.Second)) // the status that first lacked her
	if diff := cmp.Diff([]session.Session{endedAlice}, snap.Ended); diff != "" {
		t.Fatalf("ended (-want +got):\n%s", diff)
	}

	// Nothing changes: nothing ends again. Then the file goes stale.
	clk.Advance(time.Minute)
	snap, err = src.Poll(ctx)
	if err != nil || len(snap.Ended) != 0 || !snap.Complete || snap.Blind() {
		t.Fatalf("quiet poll: %v, %+v", err, snap)
	}
	clk.Advance(DefaultStaleAfter)
	snap, err = src.Poll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Complete || !snap.BlindFor(session.KindOpenVPN) || len(snap.Warnings) != 1 {
		t.Fatalf("stale poll: %+v", snap)
	}
	w := snap.Warnings[0]
	if w.Code != WarnStatusStale || w.Source != "openvpn/office" || w.Kind != session.KindOpenVPN || !strings.Contains(w.Message, d.path) {
		t.Errorf("stale warning: %+v", w)
	}
	if len(snap.Sessions) != 1 {
		t.Errorf("a stale file still tells its sessions: %+v", snap.Sessions)
	}
}

// TestPollSkipsHandshakes: connections still in TLS (UNDEF, no virtual
// address) are not sessions, in version 1 and 2; IPv6 real addresses
// have no port; version 1 IDs use CN and real address.
func TestPollSkipsHandshakes(t *testing.T) {
	tests := []struct {
		file       string
		id         string
		remote     string
		remotePort int
	}{
		{"status-v1-tcp-pending.txt", "ovpn-openvpn-alice-10.231.113.94:59340-1795314077", "10.231.113.94", 59340},
		{"status-v2-tcp6-pending.txt", "ovpn-openvpn-0-1795314078", "fd63:7732:442a::2", 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			d := newStatusDir(t)
			d.write(tt.file, nil)
			clk := clock.NewFake(time.Unix(1795314090, 0))
			src, err := New(Config{StatusFile: d.path, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			snap, err := src.Poll(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if len(snap.Sessions) != 1 {
				t.Fatalf("sessions: %+v", snap.Sessions)
			}
			s := snap.Sessions[0]
			if s.ID != tt.id || s.User != "alice" || s.RemoteAddr != tt.remote || s.RemotePort != tt.remotePort {
				t.Errorf("session %+v; want ID %s, alice from %s port %d", s, tt.id, tt.remote, tt.remotePort)
			}
		})
	}
}

// TestPollVersion1Local reads version 1 in the machine's local time, as
// OpenVPN on the same machine writes it: the status is then fresh.
func TestPollVersion1Local(t *testing.T) {
	d := newStatusDir(t)
	now := time.Now().Truncate(time.Second)
	local := now.Local().Format("2006-01-02 15:04:05")
	d.write("status-v1-udp.txt", func(s string) string { return strings.ReplaceAll(s, "2026-11-22 02:20:4", local[:len(local)-1]) })
	src, err := New(Config{StatusFile: d.path, Clock: clock.NewFake(now.Add(time.Second))})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := src.Poll(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !snap.Complete || len(snap.Sessions) != 2 {
		t.Fatalf("snapshot: %+v", snap)
	}
	for _, s := range snap.Sessions {
		if s.VPN.ConnectionID != "" || s.VPN.VirtualAddr == "" || s.LastActivityAt == nil {
			t.Errorf("version 1 session %+v %+v", s, s.VPN)
		}
	}
}

func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	empty := filepath.Join(dir, "empty")
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(empty, []byte("\nsecret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte("secret\r\nignored\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		file, want, err string
	}{
		{missing, "", missing},
		{empty, "", empty},
		{good, "secret", ""},
	} {
		src, err := New(Config{Management: "unix:/nonexistent", PasswordFile: tt.file})
		if err != nil {
			t.Fatal(err)
		}
		pw, err := src.password()
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("password from %s: %v, want an error naming it", tt.file, err)
			}
			continue
		}
		if err != nil || pw != tt.want {
			t.Errorf("password from %s = %q, %v; want %q", tt.file, pw, err, tt.want)
		}
		// A poll reads the file and fails on the missing socket, naming it.
		if _, err := src.Poll(context.Background()); err == nil || !strings.Contains(err.Error(), "/nonexistent") {
			t.Errorf("poll of a missing socket: %v", err)
		}
	}
}
