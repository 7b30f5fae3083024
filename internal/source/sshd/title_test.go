package sshd

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseTitle(t *testing.T) {
	tests := []struct {
		name  string
		title string
		want  Title
		ok    bool
	}{
		// Listeners, every generation, any install path.
		{"listener 9.2", "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups", Title{Prog: "sshd", Role: RoleListener}, true},
		{"listener other path", "sshd: /opt/openssh/sbin/sshd -f /tmp/x/sshd_config -E /tmp/x/log [listener] 3 of 10-100 startups", Title{Prog: "sshd", Role: RoleListener}, true},
		{"listener 10.x", "sshd: /usr/sbin/sshd -D [listener] 1 of 10-100 startups", Title{Prog: "sshd", Role: RoleListener}, true},

		// Monitors before the user name, after it, after authentication.
		{"accepted 9.2", "sshd: [accepted]", Title{Prog: "sshd", Role: RoleMonitor}, true},
		{"accepted 9.8", "sshd-session: [accepted]", Title{Prog: "sshd-session", Role: RoleMonitor}, true},
		{"priv 9.2", "sshd: alice [priv]", Title{Prog: "sshd", Role: RoleMonitor, User: "alice"}, true},
		{"priv invalid user", "sshd: unknown [priv]", Title{Prog: "sshd", Role: RoleMonitor, User: "unknown"}, true},
		{"priv 9.8", "sshd-session: alice [priv]", Title{Prog: "sshd-session", Role: RoleMonitor, User: "alice"}, true},
		{"postauth 10.5", "sshd-session: alice [postauth]", Title{Prog: "sshd-session", Role: RoleMonitor, User: "alice", PostAuth: true}, true},

		// Pre-authentication children.
		{"net 9.2", "sshd: [net]", Title{Prog: "sshd", Role: RoleNet}, true},
		{"net user 9.2", "sshd: root [net]", Title{Prog: "sshd", Role: RoleNet, User: "root"}, true},
		{"net 9.8", "sshd-session: alice [net]", Title{Prog: "sshd-session", Role: RoleNet, User: "alice"}, true},
		{"session-auth 10.0", "sshd-auth: [session-auth]", Title{Prog: "sshd-auth", Role: RoleNet}, true},
		{"net 10.0", "sshd-auth: alice [net]", Title{Prog: "sshd-auth", Role: RoleNet, User: "alice"}, true},
		{"pam", "sshd: alice [pam]", Title{Prog: "sshd", Role: RolePAM, User: "alice"}, true},

		// User children, which exist only after authentication.
		{"forward 9.2", "sshd: alice", Title{Prog: "sshd", Role: RoleUser, User: "alice"}, true},
		{"tty 9.2", "sshd: alice@pts/0", Title{Prog: "sshd", Role: RoleUser, User: "alice", Channels: []string{"pts/0"}}, true},
		{"two ttys", "sshd: alice@pts/0,pts/12", Title{Prog: "sshd", Role: RoleUser, User: "alice", Channels: []string{"pts/0", "pts/12"}}, true},
		{"notty 9.2", "sshd: alice@notty", Title{Prog: "sshd", Role: RoleUser, User: "alice", Channels: []string{"notty"}}, true},
		{"internal-sftp", "sshd: alice@internal-sftp", Title{Prog: "sshd", Role: RoleUser, User: "alice", Channels: []string{"internal-sftp"}}, true},
		{"tty 9.8", "sshd-session: alice@pts/3", Title{Prog: "sshd-session", Role: RoleUser, User: "alice", Channels: []string{"pts/3"}}, true},
		{"forward 10.5", "sshd-session: alice", Title{Prog: "sshd-session", Role: RoleUser, User: "alice"}, true},
		{"user with at sign", "sshd: alice@corp.example", Title{Prog: "sshd", Role: RoleUser, User: "alice@corp.example"}, true},
		{"user with at sign and tty", "sshd: alice@corp.example@pts/1", Title{Prog: "sshd", Role: RoleUser, User: "alice@corp.example", Channels: []string{"pts/1"}}, true},
		{"trailing padding", "sshd: bob@notty   ", Title{Prog: "sshd", Role: RoleUser, User: "bob", Channels: []string{"notty"}}, true},

		// Not sshd titles.
		{"untitled argv", "/usr/sbin/sshd -D", Title{}, false},
		{"sshd-session before title", "sshd-session -R", Title{}, false},
		{"empty", "", Title{}, false},
		{"path prog", "/usr/sbin/sshd: x", Title{}, false},
		{"unknown tag", "sshd: alice [weird]", Title{}, false},
		{"spaces no tag", "sshd: alice bob", Title{}, false},
		{"zombie text", "[sshd] <defunct>", Title{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParseTitle(tt.title)
			if ok != tt.ok {
				t.Fatalf("ParseTitle(%q) ok = %v, want %v", tt.title, ok, tt.ok)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseTitle(%q) mismatch (-want +got):\n%s", tt.title, diff)
			}
		})
	}
}

func FuzzParseTitle(f *testing.F) {
	for _, s := range []string{"sshd: alice [priv]", "sshd-session: a@pts/0,pts/1", "sshd: [accepted]", "x: y@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := ParseTitle(s)
		if !ok && got.Role != RoleUnknown {
			t.Fatalf("not ok but role %v", got.Role)
		}
		if ok && got.Prog == "" {
			t.Fatalf("ok with empty prog for %q", s)
		}
	})
}

func TestParseStat(t *testing.T) {
	// Real /proc/PID/stat lines; comm may contain spaces and parentheses.
	tests := []struct {
		line  string
		comm  string
		state byte
		ppid  int
		start uint64
		ok    bool
	}{
		{"3895 (sshd) S 2168 3895 3895 0 -1 4194560 1201 0 0 0 1 2 0 0 20 0 1 0 29726 14852096 2304 18446744073709551615 1 1 0 0 0 0 0 4096 81925 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n", "sshd", 'S', 2168, 29726, true},
		{"12 (tmux: server) S 1 12 12 0 -1 4194368 1 0 0 0 0 0 0 0 20 0 1 0 777 1 1 1\n", "tmux: server", 'S', 1, 777, true},
		{"13 (a) b) Z 1 13 13 0 -1 4194368 1 0 0 0 0 0 0 0 20 0 1 0 5 1 1 1\n", "a) b", 'Z', 1, 5, true},
		{"14 (x) S 1 2 3\n", "", 0, 0, 0, false},
		{"garbage", "", 0, 0, 0, false},
	}
	for _, tt := range tests {
		comm, state, ppid, start, ok := parseStat([]byte(tt.line))
		if ok != tt.ok || string(comm) != tt.comm || state != tt.state || ppid != tt.ppid || start != tt.start {
			t.Errorf("parseStat(%q) = %q %c %d %d %v, want %q %c %d %d %v", tt.line, comm, state, ppid, start, ok, tt.comm, tt.state, tt.ppid, tt.start, tt.ok)
		}
	}
}

func TestHidepidOption(t *testing.T) {
	mi := "22 27 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw,hidepid=invisible\n" +
		"23 27 0:22 / /sys rw - sysfs sysfs rw\n" +
		"24 27 0:23 / /proc2 rw - proc proc rw,hidepid=0\n"
	if got := hidepidOption(mi, "/proc"); got != "invisible" {
		t.Errorf("hidepid /proc = %q, want invisible", got)
	}
	if got := hidepidOption(mi, "/proc2"); got != "" {
		t.Errorf("hidepid /proc2 = %q, want none", got)
	}
	if got := hidepidOption(mi, "/nope"); got != "" {
		t.Errorf("hidepid /nope = %q, want none", got)
	}
}

func TestParseNetTCP(t *testing.T) {
	// Real lines from this machine's /proc/net/tcp and tcp6.
	v4 := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:5606 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4866 1 00000000f4f75781 100 0 0 10 0
   2: 0100007F:5606 0100007F:BCA8 01 00000000:00000000 02:000AFBE3 00000000     0        0 4890 2 0000000093de52d9 20 4 16 18 -1
  17: 020200C0:D246 507100CB:01BB 06 00000000:00000000 03:0000137C 00000000     0        0 0 3 000000002f65afc1
`
	v6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0016 00000000000000000000000001000000:D431 01 00000000:00000000 02:00000A3C 00000000     0        0 77 1 0000000000000000 20 4 30 10 -1
   1: 0000000000000000FFFF00000100007F:0016 0000000000000000FFFF00000100007F:D432 01 00000000:00000000 02:00000A3C 00000000     0        0 78 1 0000000000000000 20 4 30 10 -1
`
	tab := tcpTable{}
	if err := parseNetTCP(strings.NewReader(v4), tab); err != nil {
		t.Fatal(err)
	}
	if err := parseNetTCP(strings.NewReader(v6), tab); err != nil {
		t.Fatal(err)
	}
	check := func(ino uint64, local string, lport int, remote string, rport int, st uint64) {
		t.Helper()
		c, ok := tab[ino]
		if !ok || c.localAddr.String() != local || c.localPort != lport || c.remoteAddr.String() != remote || c.remotePort != rport || c.state != st {
			t.Errorf("inode %d: %+v", ino, c)
		}
	}
	check(4866, "127.0.0.1", 22022, "0.0.0.0", 0, 10)
	check(4890, "127.0.0.1", 22022, "127.0.0.1", 48296, 1)
	check(77, "::1", 22, "::1", 54321, 1)
	check(78, "127.0.0.1", 22, "127.0.0.1", 54322, 1) // v4-mapped shown as v4
	if err := parseNetTCP(strings.NewReader("hdr\n 0: zz:0016 00000000:0000 0A 0 0 0 0 0 1\n"), tcpTable{}); err == nil {
		t.Error("bad address accepted")
	}
}
