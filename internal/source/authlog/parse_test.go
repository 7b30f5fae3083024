package authlog_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/connwatch/connwatch/internal/source/authlog"
)

var update = flag.Bool("update", false, "rewrite the .events golden files")

// now is the reading time of the tests: the captures were made on
// 2026-11-22 UTC.
var now = time.Date(2026, 11, 22, 0, 10, 0, 0, time.UTC)

// Real lines. Bare ones are from testdata/sshd-9.2-E (sshd -E, which ends
// lines with \r\n), syslog and journald ones from testdata/journald.
const (
	jsonAccepted = `{"_PID":"2883","__CURSOR":"s=f69563b6f61448e99e7a363c9d482f30;i=8;b=551d4e4fd6d14b2a8b2293f9bf91251f;m=5185c6e8;t=660d23351d1dc;x=1a1c4ed2af0b0b54","SYSLOG_IDENTIFIER":"sshd","_SOURCE_REALTIME_TIMESTAMP":"1795305780653500","__REALTIME_TIMESTAMP":"1795305780653532","SYSLOG_PID":"2883","_UID":"0","_EXE":"/usr/sbin/sshd","_COMM":"sshd","MESSAGE":"Accepted publickey for cwtest from 127.0.0.1 port 55904 ssh2: ED25519 SHA256:B9RnCJNnUpIpZXR2sC3ssyWCt4LlrkfNpdackqRBmAQ"}`
	keyED25519   = "ED25519 SHA256:B9RnCJNnUpIpZXR2sC3ssyWCt4LlrkfNpdackqRBmAQ"
)

func TestParseLine(t *testing.T) {
	local := time.FixedZone("CET", 3600)
	tests := []struct {
		name string
		line string
		now  time.Time // zero: now
		want authlog.Event
		ok   bool
	}{
		// sshd -E, OpenSSH 9.2: no time, no pid.
		{
			name: "E accepted publickey",
			line: "Accepted publickey for cwtest from 127.0.0.1 port 52312 ssh2: ED25519 SHA256:5LOreUm2mu9w+jboJhEysUnGqpIj45Gz8ymcL9PIoig\r\n",
			want: authlog.Event{Kind: authlog.Accepted, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 52312, Method: "publickey", Key: "ED25519 SHA256:5LOreUm2mu9w+jboJhEysUnGqpIj45Gz8ymcL9PIoig"},
			ok:   true,
		},
		{
			name: "E disconnected",
			line: "Disconnected from user cwtest 127.0.0.1 port 52312\r\n",
			want: authlog.Event{Kind: authlog.Disconnected, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 52312},
			ok:   true,
		},
		{
			name: "E starting shell on a tty",
			line: "Starting session: shell on pts/0 for cwtest from 127.0.0.1 port 52344 id 0",
			want: authlog.Event{Kind: authlog.StartingSession, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 52344, SessionType: "shell", TTY: "pts/0"},
			ok:   true,
		},
		{
			name: "E starting command without tty",
			line: "Starting session: command for cwtest from 127.0.0.1 port 52312 id 0",
			want: authlog.Event{Kind: authlog.StartingSession, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 52312, SessionType: "command"},
			ok:   true,
		},
		{
			name: "E starting sftp",
			line: "Starting session: subsystem 'sftp' for cwtest from 127.0.0.1 port 43488 id 0",
			want: authlog.Event{Kind: authlog.StartingSession, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 43488, SessionType: "subsystem 'sftp'"},
			ok:   true,
		},
		{
			name: "E close session",
			line: "Close session: user cwtest from 127.0.0.1 port 43512 id 0",
			want: authlog.Event{Kind: authlog.CloseSession, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 43512},
			ok:   true,
		},
		{
			name: "E post-auth connection closed",
			line: "Connection closed by 127.0.0.1 port 43498",
			want: authlog.Event{Kind: authlog.ConnectionClosed, Time: now, Addr: "127.0.0.1", Port: 43498},
			ok:   true,
		},
		{
			name: "E closing connection",
			line: "Closing connection to 127.0.0.1 port 43498",
			want: authlog.Event{Kind: authlog.ConnectionClosed, Time: now, Addr: "127.0.0.1", Port: 43498},
			ok:   true,
		},
		{
			name: "E client alive timeout is post-auth",
			line: "Timeout, client not responding from user cwtest 127.0.0.1 port 50022",
			want: authlog.Event{Kind: authlog.ConnectionClosed, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 50022},
			ok:   true,
		},
		{
			name: "E connection from",
			line: `Connection from 127.0.0.1 port 52312 on 127.0.0.1 port 42589 rdomain ""`,
			want: authlog.Event{Kind: authlog.Preauth, Time: now, Addr: "127.0.0.1", Port: 52312},
			ok:   true,
		},
		{
			name: "E accepted key is not a login",
			line: "Accepted key ED25519 SHA256:5LOreUm2mu9w+jboJhEysUnGqpIj45Gz8ymcL9PIoig found at /tmp/TestCaptureE3619428669/001/authorized_keys/cwtest:1",
			want: authlog.Event{Kind: authlog.Preauth, Time: now},
			ok:   true,
		},
		{
			name: "E postponed publickey",
			line: "Postponed publickey for cwtest from 127.0.0.1 port 52312 ssh2 [preauth]",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "cwtest", Addr: "127.0.0.1", Port: 52312, Method: "publickey"},
			ok:   true,
		},
		{
			name: "E parked root closes",
			line: "Connection closed by authenticating user root 127.0.0.1 port 43520 [preauth]",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "root", Addr: "127.0.0.1", Port: 43520},
			ok:   true,
		},
		{
			name: "E parked valid user closes",
			line: "Connection closed by 127.0.0.1 port 43530 [preauth]",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, Addr: "127.0.0.1", Port: 43530},
			ok:   true,
		},
		{
			name: "E invalid user",
			line: "Invalid user nosuchuser from 127.0.0.1 port 48184",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "nosuchuser", Addr: "127.0.0.1", Port: 48184},
			ok:   true,
		},
		{
			name: "E failed password for invalid user",
			line: "Failed password for invalid user nosuchuser from 127.0.0.1 port 48184 ssh2",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "nosuchuser", Addr: "127.0.0.1", Port: 48184, Method: "password"},
			ok:   true,
		},
		{
			name: "E invalid user closes",
			line: "Connection closed by invalid user nosuchuser 127.0.0.1 port 48184 [preauth]",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "nosuchuser", Addr: "127.0.0.1", Port: 48184},
			ok:   true,
		},
		{name: "E listening", line: "Server listening on 127.0.0.1 port 42589.\r\n"},
		{name: "E received disconnect", line: "Received disconnect from 127.0.0.1 port 52312:11: disconnected by user"},
		{name: "E user child", line: "User child is on pid 31019"},
		{name: "E logout error", line: "syslogin_perform_logout: logout() returned an error"},
		{name: "empty", line: "\r\n"},

		// Classic syslog, as journalctl -o short and rsyslog's
		// traditional format write it: no year, local time.
		{
			name: "syslog accepted",
			line: "Nov 22 00:03:00 vm sshd[2883]: Accepted publickey for cwtest from 127.0.0.1 port 55904 ssh2: " + keyED25519,
			want: authlog.Event{Kind: authlog.Accepted, Time: time.Date(2026, 11, 22, 0, 3, 0, 0, time.UTC), PID: 2883, User: "cwtest", Addr: "127.0.0.1", Port: 55904, Method: "publickey", Key: keyED25519},
			ok:   true,
		},
		{
			name: "syslog pam session opened",
			line: "Nov 22 00:03:00 vm sshd[2883]: pam_unix(sshd:session): session opened for user cwtest(uid=1001) by (uid=0)",
			want: authlog.Event{Kind: authlog.SessionOpened, Time: time.Date(2026, 11, 22, 0, 3, 0, 0, time.UTC), PID: 2883, User: "cwtest"},
			ok:   true,
		},
		{
			name: "syslog pam session closed",
			line: "Nov 22 00:03:00 vm sshd[2883]: pam_unix(sshd:session): session closed for user cwtest",
			want: authlog.Event{Kind: authlog.SessionClosed, Time: time.Date(2026, 11, 22, 0, 3, 0, 0, time.UTC), PID: 2883, User: "cwtest"},
			ok:   true,
		},
		{
			name: "syslog pam session opened, linux-pam before 1.5 (no uid)",
			line: "Nov 22 00:03:00 vm sshd[2883]: pam_unix(sshd:session): session opened for user cwtest by (uid=0)",
			want: authlog.Event{Kind: authlog.SessionOpened, Time: time.Date(2026, 11, 22, 0, 3, 0, 0, time.UTC), PID: 2883, User: "cwtest"},
			ok:   true,
		},
		{
			name: "syslog read error",
			line: "Nov 22 00:03:08 vm sshd[3140]: Read error from remote host 127.0.0.1 port 55946: Connection reset by peer",
			want: authlog.Event{Kind: authlog.ConnectionClosed, Time: time.Date(2026, 11, 22, 0, 3, 8, 0, time.UTC), PID: 3140, Addr: "127.0.0.1", Port: 55946},
			ok:   true,
		},
		{
			name: "syslog padded day, local time",
			line: "Nov  1 09:05:07 vm sshd[7]: Disconnected from user cwtest 192.0.2.7 port 2222",
			now:  time.Date(2026, 11, 22, 0, 0, 0, 0, local),
			want: authlog.Event{Kind: authlog.Disconnected, Time: time.Date(2026, 11, 1, 9, 5, 7, 0, local), PID: 7, User: "cwtest", Addr: "192.0.2.7", Port: 2222},
			ok:   true,
		},
		{
			name: "syslog December line read in January",
			line: "Dec 31 23:59:59 vm sshd[7]: Disconnected from user cwtest 192.0.2.7 port 2222",
			now:  time.Date(2027, 1, 1, 0, 0, 1, 0, time.UTC),
			want: authlog.Event{Kind: authlog.Disconnected, Time: time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC), PID: 7, User: "cwtest", Addr: "192.0.2.7", Port: 2222},
			ok:   true,
		},
		{
			name: "syslog pam_unix of another program",
			line: "Nov 22 00:17:01 vm CRON[4242]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
		},
		{
			name: "syslog sudo",
			line: "Nov 22 00:17:01 vm sudo: cwtest : TTY=pts/0 ; PWD=/home/cwtest ; USER=root ; COMMAND=/usr/bin/id",
		},
		{
			name: "syslog fatal prefix",
			line: "Nov 22 00:03:08 vm sshd[9]: fatal: Timeout before authentication for 198.51.100.4 port 40000",
			want: authlog.Event{Kind: authlog.Preauth, Time: time.Date(2026, 11, 22, 0, 3, 8, 0, time.UTC), PID: 9, Addr: "198.51.100.4", Port: 40000},
			ok:   true,
		},
		// OpenSSH 9.8+ logs sessions as sshd-session (this line is a 9.2
		// capture with the identifier changed).
		{
			name: "syslog sshd-session",
			line: "Nov 22 00:03:00 vm sshd-session[2883]: Accepted publickey for cwtest from 127.0.0.1 port 55904 ssh2: " + keyED25519,
			want: authlog.Event{Kind: authlog.Accepted, Time: time.Date(2026, 11, 22, 0, 3, 0, 0, time.UTC), PID: 2883, User: "cwtest", Addr: "127.0.0.1", Port: 55904, Method: "publickey", Key: keyED25519},
			ok:   true,
		},

		// RFC 3339: rsyslog's default file format, and journalctl -o
		// short-iso-precise (offset without a colon).
		{
			name: "rsyslog rfc3339",
			line: "2026-11-22T00:03:00.653500+00:00 vm sshd[2883]: Accepted publickey for cwtest from 127.0.0.1 port 55904 ssh2: " + keyED25519,
			want: authlog.Event{Kind: authlog.Accepted, Time: time.Date(2026, 11, 22, 0, 3, 0, 653500000, time.UTC), PID: 2883, User: "cwtest", Addr: "127.0.0.1", Port: 55904, Method: "publickey", Key: keyED25519},
			ok:   true,
		},
		{
			name: "journalctl short-iso-precise",
			line: "2026-11-22T01:03:00.653500+0100 vm sshd[2883]: Disconnected from user cwtest 127.0.0.1 port 55904",
			want: authlog.Event{Kind: authlog.Disconnected, Time: time.Date(2026, 11, 22, 0, 3, 0, 653500000, time.UTC), PID: 2883, User: "cwtest", Addr: "127.0.0.1", Port: 55904},
			ok:   true,
		},

		// journalctl -o json.
		{
			name: "journald json",
			line: jsonAccepted + "\n",
			want: authlog.Event{Kind: authlog.Accepted, Time: time.UnixMicro(1795305780653500).UTC(), PID: 2883, User: "cwtest", Addr: "127.0.0.1", Port: 55904, Method: "publickey", Key: keyED25519},
			ok:   true,
		},
		{
			name: "journald json message as bytes, no source time",
			line: `{"SYSLOG_IDENTIFIER":"sshd-session","_PID":"77","__REALTIME_TIMESTAMP":"1795305780653532","MESSAGE":[68,105,115,99,111,110,110,101,99,116,101,100,32,102,114,111,109,32,117,115,101,114,32,98,111,98,32,50,48,48,49,58,100,98,56,58,58,55,32,112,111,114,116,32,53,53,57,48,52]}`,
			want: authlog.Event{Kind: authlog.Disconnected, Time: time.UnixMicro(1795305780653532).UTC(), PID: 77, User: "bob", Addr: "2001:db8::7", Port: 55904},
			ok:   true,
		},
		{
			name: "journald json other identifier",
			line: `{"SYSLOG_IDENTIFIER":"CRON","_PID":"4242","__REALTIME_TIMESTAMP":"1795305780653532","MESSAGE":"pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)"}`,
		},

		// Other methods and shapes, from OpenSSH's auth_log format.
		{
			name: "password",
			line: "Accepted password for alice from 203.0.113.5 port 51234 ssh2",
			want: authlog.Event{Kind: authlog.Accepted, Time: now, User: "alice", Addr: "203.0.113.5", Port: 51234, Method: "password"},
			ok:   true,
		},
		{
			name: "keyboard-interactive over IPv6",
			line: "Accepted keyboard-interactive/pam for alice from 2001:db8::5 port 51234 ssh2",
			want: authlog.Event{Kind: authlog.Accepted, Time: now, User: "alice", Addr: "2001:db8::5", Port: 51234, Method: "keyboard-interactive/pam"},
			ok:   true,
		},
		{
			name: "certificate whose ID reads like a login",
			line: `Accepted publickey for alice from 203.0.113.5 port 51234 ssh2: ED25519-CERT SHA256:abc ID x from 9.9.9.9 port 1 ssh2 (serial 7) CA ED25519 SHA256:def`,
			want: authlog.Event{Kind: authlog.Accepted, Time: now, User: "alice", Addr: "203.0.113.5", Port: 51234, Method: "publickey", Key: `ED25519-CERT SHA256:abc ID x from 9.9.9.9 port 1 ssh2 (serial 7) CA ED25519 SHA256:def`},
			ok:   true,
		},
		{
			name: "a user name chosen to look like a login",
			line: "Failed password for invalid user x from 10.0.0.1 port 22 ssh2 from 198.51.100.9 port 4711 ssh2",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "x from 10.0.0.1 port 22 ssh2", Addr: "198.51.100.9", Port: 4711, Method: "password"},
			ok:   true,
		},
		{
			name: "disconnected while authenticating",
			line: "Disconnected from authenticating user root 198.51.100.9 port 4711 [preauth]",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "root", Addr: "198.51.100.9", Port: 4711},
			ok:   true,
		},
		{
			name: "authenticating user without the preauth suffix",
			line: "Connection closed by authenticating user root 198.51.100.9 port 4711",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, User: "root", Addr: "198.51.100.9", Port: 4711},
			ok:   true,
		},
		{
			name: "any preauth line",
			line: "Unable to negotiate with 198.51.100.9 port 4711: no matching key exchange method found. Their offer: diffie-hellman-group1-sha1 [preauth]",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, Addr: "198.51.100.9", Port: 4711},
			ok:   true,
		},
		{
			name: "maximum attempts",
			line: "error: maximum authentication attempts exceeded for root from 198.51.100.9 port 4711 ssh2 [preauth]",
			want: authlog.Event{Kind: authlog.Preauth, Time: now, Addr: "198.51.100.9", Port: 4711},
			ok:   true,
		},
		{
			name: "connection reset post-auth",
			line: "Connection reset by 203.0.113.5 port 51234",
			want: authlog.Event{Kind: authlog.ConnectionClosed, Time: now, Addr: "203.0.113.5", Port: 51234},
			ok:   true,
		},
		{
			name: "a -E line with a program name",
			line: "sshd-session: Disconnected from user alice 203.0.113.5 port 51234",
			want: authlog.Event{Kind: authlog.Disconnected, Time: now, User: "alice", Addr: "203.0.113.5", Port: 51234},
			ok:   true,
		},
		{name: "port out of range", line: "Accepted password for alice from 203.0.113.5 port 99999 ssh2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.now
			if at.IsZero() {
				at = now
			}
			got, ok := authlog.ParseLine(tc.line, at)
			if ok != tc.ok {
				t.Fatalf("ParseLine(%q) ok = %v, want %v (event %+v)", tc.line, ok, tc.ok, got)
			}
			if !ok {
				return
			}
			if got.Raw != strings.TrimRight(tc.line, "\r\n") {
				t.Errorf("Raw = %q", got.Raw)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.IgnoreFields(authlog.Event{}, "Raw", "Origin")); diff != "" {
				t.Errorf("ParseLine(%q) (-want +got):\n%s", tc.line, diff)
			}
		})
	}
}

// summary is the golden form of an event: all but Time and Raw.
func summary(evs []authlog.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "%s pid=%d user=%q addr=%s port=%d", e.Kind, e.PID, e.User, e.Addr, e.Port)
		if e.Method != "" {
			fmt.Fprintf(&b, " method=%s", e.Method)
		}
		if e.Key != "" {
			fmt.Fprintf(&b, " key=%q", e.Key)
		}
		if e.SessionType != "" {
			fmt.Fprintf(&b, " session=%q tty=%q", e.SessionType, e.TTY)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func parseFile(t *testing.T, path string) []authlog.Event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, err := authlog.ParseAll(f, now)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestCapturedE checks every capture of a real sshd -E log against its
// golden .events file (go test -update rewrites them), and the rules a
// consumer relies on.
func TestCapturedE(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "sshd-9.2-E", "*.log"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures: %v", err)
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".log")
		t.Run(name, func(t *testing.T) {
			evs := parseFile(t, path)
			got := summary(evs)
			golden := strings.TrimSuffix(path, ".log") + ".events"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("events of %s (-golden +got):\n%s", path, diff)
			}

			count := map[authlog.Kind]int{}
			for _, e := range evs {
				count[e.Kind]++
				if e.PID != 0 || !e.Time.Equal(now) {
					t.Errorf("-E line got pid %d, time %v: %q", e.PID, e.Time, e.Raw)
				}
			}
			authenticated := !strings.HasPrefix(name, "park-") && !strings.HasPrefix(name, "wrong-password-") && name != "listen"
			switch {
			case authenticated:
				if count[authlog.Accepted] != 1 {
					t.Errorf("%d Accepted, want 1", count[authlog.Accepted])
				}
				if count[authlog.Disconnected]+count[authlog.ConnectionClosed] == 0 {
					t.Errorf("no end of the connection")
				}
			default:
				for _, e := range evs {
					if e.Kind != authlog.Preauth {
						t.Errorf("unauthenticated connection gave %s: %q", e.Kind, e.Raw)
					}
				}
			}
			// Everything of one capture is about one client port.
			var port int
			for _, e := range evs {
				if e.Port == 0 {
					continue
				}
				if port == 0 {
					port = e.Port
				} else if e.Port != port {
					t.Errorf("port %d in %q, want %d", e.Port, e.Raw, port)
				}
			}
		})
	}
}

// TestJournaldRenderings parses the same real journal entries in the
// three shapes journalctl rendered them (json, short, short-iso-precise)
// and in rsyslog's RFC 3339 format, and expects the same events.
func TestJournaldRenderings(t *testing.T) {
	dir := filepath.Join("testdata", "journald")
	fromJSON := parseFile(t, filepath.Join(dir, "sshd-252.json"))
	got := summary(fromJSON)
	golden := filepath.Join(dir, "sshd-252.events")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("events of sshd-252.json (-golden +got):\n%s", diff)
	}
	for _, k := range []authlog.Kind{authlog.Accepted, authlog.Disconnected, authlog.ConnectionClosed, authlog.SessionOpened, authlog.SessionClosed, authlog.StartingSession, authlog.Preauth} {
		if !strings.Contains(got, k.String()+" ") {
			t.Errorf("no %s event in the journal capture", k)
		}
	}

	for _, tc := range []struct {
		file      string
		precision time.Duration
	}{
		{"sshd-252.short", time.Second},
		{"sshd-252.short-iso-precise", time.Microsecond},
		{"sshd-252.rsyslog-rfc3339", time.Microsecond},
	} {
		t.Run(tc.file, func(t *testing.T) {
			evs := parseFile(t, filepath.Join(dir, tc.file))
			if diff := cmp.Diff(got, summary(evs)); diff != "" {
				t.Errorf("(-json +%s):\n%s", tc.file, diff)
			}
			for i := range min(len(evs), len(fromJSON)) {
				if want := fromJSON[i].Time.Truncate(tc.precision); !evs[i].Time.Equal(want) {
					t.Errorf("event %d at %v, json says %v", i, evs[i].Time, want)
				}
			}
		})
	}
}

func TestKindString(t *testing.T) {
	if got := authlog.Accepted.String(); got != "accepted" {
		t.Errorf("Accepted = %q", got)
	}
	if got := authlog.Kind(0).String(); got != "kind(0)" {
		t.Errorf("Kind(0) = %q", got)
	}
	if !authlog.Disconnected.Ends() || !authlog.ConnectionClosed.Ends() || authlog.Preauth.Ends() || authlog.CloseSession.Ends() {
		t.Error("Ends is wrong")
	}
}

// FuzzParseLine checks that no line makes ParseLine panic, and that an
// Accepted event only comes from a line whose message starts with
// "Accepted ".
func FuzzParseLine(f *testing.F) {
	for _, dir := range []string{"sshd-9.2-E", "journald"} {
		files, _ := filepath.Glob(filepath.Join("testdata", dir, "*"))
		for _, p := range files {
			b, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			for _, l := range bytes.Split(b, []byte("\n")) {
				f.Add(string(l))
			}
		}
	}
	f.Fuzz(func(t *testing.T, line string) {
		ev, ok := authlog.ParseLine(line, now)
		if !ok || ev.Kind != authlog.Accepted {
			return
		}
		if !strings.Contains(line, "Accepted "+ev.Method+" for ") || strings.Contains(line, "[preauth]") {
			t.Errorf("Accepted from %q", line)
		}
	})
}
