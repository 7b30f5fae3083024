package tunnel

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/sshconfig"
)

func readSettings(t *testing.T, path string) sshconfig.Settings {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := sshconfig.ParseEffective(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The captures are real `ssh -G` output of OpenSSH 9.2p1 (Debian 12):
// ssh-G-9.2-forwards.txt is `ssh -G -F testdata/forwards.ssh_config t`.
func TestSpecFromSettings(t *testing.T) {
	for _, tc := range []struct {
		file, host string
		check      func(t *testing.T, s Spec)
	}{
		{"../sshconfig/testdata/ssh-G-9.2-tunnel.txt", "tunnel", func(t *testing.T, s Spec) {
			want := Spec{
				Host: "tunnel", HostName: "192.0.2.10", Port: 22, User: "bob",
				IdentityFiles:         []string{"~/.ssh/tunnel_ed25519", "~/.ssh/id_ed25519"},
				UserKnownHostsFiles:   []string{"/root/.ssh/known_hosts", "/root/.ssh/known_hosts2"},
				GlobalKnownHostsFiles: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"},
				StrictHostKeyChecking: HostKeyStrict, // "ask": nobody to ask
				ServerAliveInterval:   30 * time.Second,
				ServerAliveCountMax:   3,
				Forwards: []Forward{
					{Kind: Local, BindPort: 8080, DestHost: "localhost", DestPort: 80},
					{Kind: Local, BindPort: 8443, DestHost: "localhost", DestPort: 443},
					{Kind: Remote, BindPort: 2222, DestHost: "localhost", DestPort: 22},
					{Kind: Dynamic, BindPort: 1080},
				},
			}
			s.HostKeyAlgorithms = nil
			if d := cmp.Diff(want, s); d != "" {
				t.Errorf("spec (-want +got):\n%s", d)
			}
		}},
		{"testdata/ssh-G-9.2-forwards.txt", "t", func(t *testing.T, s Spec) {
			want := Spec{
				Host: "t", HostName: "127.0.0.1", Port: 2200, User: "alice",
				IdentityFiles: []string{"/keys/a"}, IdentitiesOnly: true,
				UserKnownHostsFiles:   []string{"/kh/one", "/kh/two"},
				GlobalKnownHostsFiles: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"},
				StrictHostKeyChecking: HostKeyAcceptNew,
				ServerAliveInterval:   DefaultServerAliveInterval, // 0 in the config
				ServerAliveCountMax:   5,
				ConnectTimeout:        7 * time.Second,
				ExitOnForwardFailure:  true,
				Forwards: []Forward{
					{Kind: Local, BindHost: "127.0.0.1", BindPort: 9000, DestHost: "example.com", DestPort: 80},
					{Kind: Local, BindHost: "::1", BindPort: 9001, DestHost: "2001:db8::1", DestPort: 22},
					{Kind: Local, BindHost: "*", BindPort: 9002, DestHost: "h", DestPort: 1},
					{Kind: Remote, BindHost: "0.0.0.0", BindPort: 2222, DestHost: "localhost", DestPort: 22},
					{Kind: Dynamic, BindHost: "127.0.0.1", BindPort: 1080},
					{Kind: Dynamic, BindPort: 1081},
				},
			}
			s.HostKeyAlgorithms = nil
			if d := cmp.Diff(want, s); d != "" {
				t.Errorf("spec (-want +got):\n%s", d)
			}
		}},
		{"../sshconfig/testdata/ssh-G-9.2-default.txt", "example.com", func(t *testing.T, s Spec) {
			if s.HostName != "example.com" || s.Port != 22 || s.ServerAliveInterval != DefaultServerAliveInterval ||
				s.ConnectTimeout != 0 || len(s.Forwards) != 0 || len(s.HostKeyAlgorithms) == 0 {
				t.Errorf("spec = %+v", s)
			}
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			s, err := SpecFromSettings(tc.host, readSettings(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestParseForward(t *testing.T) {
	for _, tc := range []struct {
		kind    Kind
		in      string
		want    Forward
		bind    string
		wantErr bool
	}{
		{Local, "8080 [localhost]:80", Forward{Local, "", 8080, "localhost", 80}, "127.0.0.1:8080", false},
		{Local, "[*]:9002 [h]:1", Forward{Local, "*", 9002, "h", 1}, ":9002", false},
		{Local, "[::1]:9001 [2001:db8::1]:22", Forward{Local, "::1", 9001, "2001:db8::1", 22}, "[::1]:9001", false},
		{Local, "10.0.0.1:5 db:5432", Forward{Local, "10.0.0.1", 5, "db", 5432}, "10.0.0.1:5", false},
		{Dynamic, "[127.0.0.1]:1080", Forward{Dynamic, "127.0.0.1", 1080, "", 0}, "127.0.0.1:1080", false},
		{Local, "9003 /tmp/sock", Forward{}, "", true},
		{Remote, "2223 [socks]:0", Forward{}, "", true},
		{Local, "8080", Forward{}, "", true},
		{Local, "x [h]:1", Forward{}, "", true},
		{Local, "8080 h", Forward{}, "", true},
	} {
		got, err := ParseForward(tc.kind, tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrSpec) {
				t.Errorf("%s %q: err = %v, want ErrSpec", tc.kind, tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want || got.BindAddr() != tc.bind {
			t.Errorf("%s %q = %+v (bind %s), %v; want %+v (bind %s)", tc.kind, tc.in, got, got.BindAddr(), err, tc.want, tc.bind)
		}
	}
}
