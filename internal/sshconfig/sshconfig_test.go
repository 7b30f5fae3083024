package sshconfig

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

// Recorded output: see testdata/capture.sh.
func TestParseEffectiveRecorded(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string][]string
	}{
		{"sshd-T-9.2-debian.txt", map[string][]string{
			"clientaliveinterval": {"0"}, "clientalivecountmax": {"3"}, "logingracetime": {"120"},
			"maxstartups": {"10:30:100"}, "usepam": {"yes"}, "loglevel": {"INFO"}, "pidfile": {"/run/sshd.pid"},
			"listenaddress": {"[::]:22", "0.0.0.0:22"}, "acceptenv": {"LANG", "LC_*"},
			"subsystem": {"sftp /usr/lib/openssh/sftp-server"},
			"hostkey":   {"/etc/ssh/ssh_host_rsa_key", "/etc/ssh/ssh_host_ecdsa_key", "/etc/ssh/ssh_host_ed25519_key"},
		}},
		{"sshd-T-9.2-recipe.txt", map[string][]string{
			"clientaliveinterval": {"60"}, "clientalivecountmax": {"120"}, "logingracetime": {"0"},
			"usepam": {"no"}, "loglevel": {"ERROR"}, "hostkey": {"/tmp/capture/hostkey"},
		}},
		{"sshd-T-9.2-recipe-alice.txt", map[string][]string{
			"clientaliveinterval": {"10"}, "clientalivecountmax": {"120"},
		}},
		{"ssh-G-9.2-default.txt", map[string][]string{
			"host": {"example.com"}, "serveraliveinterval": {"0"}, "serveralivecountmax": {"3"},
			"tcpkeepalive": {"yes"}, "exitonforwardfailure": {"no"}, "connecttimeout": {"none"},
		}},
		{"ssh-G-9.2-tunnel.txt", map[string][]string{
			"hostname": {"192.0.2.10"}, "user": {"bob"}, "serveraliveinterval": {"30"},
			"localforward":   {"8080 [localhost]:80", "8443 [localhost]:443"},
			"remoteforward":  {"2222 [localhost]:22"},
			"dynamicforward": {"1080"},
			"identityfile":   {"~/.ssh/tunnel_ed25519", "~/.ssh/id_ed25519"},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s, err := ParseEffective(f)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]string{}
			for k := range tc.want {
				got[k] = s.All(k)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("settings (-want +got):\n%s", diff)
			}
			if len(s) < 50 {
				t.Errorf("only %d keys parsed", len(s))
			}
		})
	}
}

func TestParseEffectiveRejectsConfigSyntax(t *testing.T) {
	if _, err := ParseEffective(strings.NewReader("ClientAliveInterval=60\n")); err == nil {
		t.Error("want an error for key=value (that is a config file, not sshd -T output)")
	}
}

func TestParseTime(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"0", 0, false}, {"120", 2 * time.Minute, false}, {"2m", 2 * time.Minute, false},
		{"1h30m", 90 * time.Minute, false}, {"1H", time.Hour, false}, {"10s", 10 * time.Second, false},
		{"1w1d", 8 * 24 * time.Hour, false}, {"none", 0, false},
		{"", 0, true}, {"soon", 0, true}, {"5x", 0, true}, {"m", 0, true},
	} {
		got, err := ParseTime(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseTime(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestParseMaxStartups(t *testing.T) {
	for in, want := range map[string]MaxStartups{"10:30:100": {10, 30, 100}, "10": {10, 100, 10}} {
		if got, err := ParseMaxStartups(in); err != nil || got != want {
			t.Errorf("ParseMaxStartups(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10:30", "a:b:c", "-1"} {
		if _, err := ParseMaxStartups(in); err == nil {
			t.Errorf("ParseMaxStartups(%q): want an error", in)
		}
	}
}

func TestParseConnection(t *testing.T) {
	c, err := ParseConnection("user=alice,host=x,addr=1.2.3.4,lport=22")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Connection{User: "alice", Host: "x", Addr: "1.2.3.4", LPort: 22}); *c != want {
		t.Errorf("got %+v, want %+v", *c, want)
	}
	if s := c.String(); s != "user=alice,host=x,addr=1.2.3.4,lport=22" {
		t.Errorf("String() = %q", s)
	}
	c, err = ParseConnection("user=bob,addr=10.0.0.1")
	if err != nil || c.Host != "10.0.0.1" {
		t.Errorf("host should default to addr: %+v, %v", c, err)
	}
	for _, bad := range []string{"", "user=alice", "addr=1.2.3.4", "user=a,addr=nope", "user=a,addr=1.2.3.4,colour=red", "user"} {
		if _, err := ParseConnection(bad); err == nil {
			t.Errorf("ParseConnection(%q): want an error", bad)
		}
	}
}

func TestParseVersion(t *testing.T) {
	for in, want := range map[string]Version{
		"OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026": {9, 2},
		"OpenSSH_9.2, OpenSSL 3.0.19 27 Jan 2026":                     {9, 2},
		"OpenSSH_10.0p2, LibreSSL 3.3.6":                              {10, 0},
		"unknown option -- V\nOpenSSH_9.8p1, OpenSSL 3.3.1":           {9, 8},
	} {
		if got, err := ParseVersion(in); err != nil || got != want {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseVersion("Dropbear v2022.83"); err == nil {
		t.Error("want an error for a non-OpenSSH version")
	}
}

func TestSplitLine(t *testing.T) {
	for in, want := range map[string][]string{
		"ClientAliveInterval 60":          {"clientaliveinterval", "60"},
		"  ClientAliveInterval=60":        {"clientaliveinterval", "60"},
		"ClientAliveInterval = 60 # note": {"clientaliveinterval", "60"},
		"\tAcceptEnv LANG LC_*":           {"acceptenv", "LANG", "LC_*"},
		`Banner "/etc/my banner"`:         {"banner", "/etc/my banner"},
		"# comment":                       nil,
		"":                                nil,
	} {
		k, args, err := splitLine(in)
		var got []string
		if k != "" {
			got = append([]string{k}, args...)
		}
		if err != nil || !cmp.Equal(got, want) {
			t.Errorf("splitLine(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, _, err := splitLine(`Banner "open`); err == nil {
		t.Error("want an error for an unterminated quote")
	}
}

// fixture copies testdata/sshd into a temporary directory with @DIR@
// replaced by it, and returns the directory.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join("testdata", "sshd")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), []byte(strings.ReplaceAll(string(b), "@DIR@", dir)), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// hostKey makes the host key the fixtures name (sshd -T needs one).
func hostKey(t *testing.T, dir string) {
	t.Helper()
	keygen := sshdtest.RequireBinary(t, "ssh-keygen")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "hostkey")).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
}

// audited are the keywords connwatch doctor reads.
var audited = []string{"clientaliveinterval", "clientalivecountmax", "logingracetime", "maxstartups", "usepam", "loglevel", "tcpkeepalive"}

func pick(s Settings) map[string]string {
	m := map[string]string{}
	for _, k := range audited {
		m[k] = s.Get(k)
	}
	return m
}

func TestReadFileMatchAndInclude(t *testing.T) {
	dir := fixture(t)
	f, err := ReadFile(filepath.Join(dir, "include.conf"), Server, SystemDir)
	if err != nil {
		t.Fatal(err)
	}
	wantIncluded := []string{filepath.Join(dir, "include.d/10-keepalive.conf"), filepath.Join(dir, "include.d/20-grace.conf"), filepath.Join(dir, "include.d/carol.inc")}
	if diff := cmp.Diff(wantIncluded, f.Included); diff != "" {
		t.Errorf("included (-want +got):\n%s", diff)
	}
	s, unevaluated := f.Evaluate(nil, ServerDefaults)
	if got := pick(s); got["clientaliveinterval"] != "20" || got["clientalivecountmax"] != "6" || got["logingracetime"] != "45" || got["loglevel"] != "VERBOSE" || got["maxstartups"] != "5:50:20" {
		t.Errorf("without a connection: %v", got)
	}
	if len(unevaluated) != 1 || unevaluated[0].Line != 6 || !strings.HasSuffix(unevaluated[0].File, "include.conf") {
		t.Errorf("unevaluated = %v, want the Match on include.conf:6", unevaluated)
	}
	carol := &Connection{User: "carol", Host: "h", Addr: "192.0.2.1"}
	// carol's Match (an Include inside it) overrides the drop-in's
	// global value, as in sshd.
	if s, _ := f.Evaluate(carol, ServerDefaults); s.Get("clientalivecountmax") != "1" {
		t.Errorf("carol: clientalivecountmax %q, want 1 (Match overrides)", s.Get("clientalivecountmax"))
	}
}

func TestReadFileErrors(t *testing.T) {
	dir := t.TempDir()
	loop := filepath.Join(dir, "loop.conf")
	if err := os.WriteFile(loop, []byte("Include "+loop+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(loop, Server, SystemDir); !errors.Is(err, ErrIncludeDepth) {
		t.Errorf("include loop: %v, want ErrIncludeDepth", err)
	}
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(bad, []byte("Port 22\nMatch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadFile(bad, Server, SystemDir)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 2 || pe.File != bad {
		t.Errorf("Match without criteria: %v, want a ParseError at %s:2", err, bad)
	}
	if _, err := ReadFile(filepath.Join(dir, "missing"), Server, SystemDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
}

func TestBlockMatches(t *testing.T) {
	b := func(c ...string) *Block { return &Block{Keyword: "match", Criteria: c, File: "f", Line: 1} }
	alice := &Connection{User: "alice", Host: "Laptop.example.com", Addr: "203.0.113.5", LPort: 22}
	for _, tc := range []struct {
		b    *Block
		want bool
		err  bool
	}{
		{b("All"), true, false},
		{b("User", "alice"), true, false},
		{b("User", "al*"), true, false},
		{b("User", "bob,!alice"), false, false},
		{b("User", "*,!alice"), false, false},
		{b("User", "a?ice", "Address", "203.0.113.0/24"), true, false},
		{b("Address", "10.0.0.0/8"), false, false},
		{b("Address", "203.0.113.*"), true, false},
		{b("Host", "*.example.com"), true, false},
		{b("LocalPort", "22"), true, false},
		{b("User"), false, true},
		{b("Bogus", "x"), false, true},
	} {
		got, err := tc.b.Matches(alice)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("%v: %v, %v; want %v, error %v", tc.b, got, err, tc.want, tc.err)
		}
	}
}

// fakeRunner returns recorded output.
type fakeRunner struct {
	out    string
	stderr string
	calls  [][]string
}

func (f *fakeRunner) Output(_ context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, append([]string{name}, args...))
	if f.stderr != "" {
		return nil, &RunError{Cmd: name, Stderr: f.stderr, Err: errors.New("exit status 1")}
	}
	return []byte(f.out), nil
}

func TestServerSettingsFake(t *testing.T) {
	b, err := os.ReadFile("testdata/sshd-T-9.2-recipe-alice.txt")
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRunner{out: string(b)}
	conn, _ := ParseConnection("user=alice,host=laptop,addr=203.0.113.5")
	s, err := ServerSettings(context.Background(), r, SSHDOptions{ConfigFile: "/x/sshd_config", Connection: conn})
	if err != nil || s.Get("clientaliveinterval") != "10" {
		t.Fatalf("got %v, %v", s.Get("clientaliveinterval"), err)
	}
	want := [][]string{{SSHDPath, "-T", "-f", "/x/sshd_config", "-C", "user=alice,host=laptop,addr=203.0.113.5"}}
	if diff := cmp.Diff(want, r.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	// Recorded stderr of sshd -T run by an unprivileged user, and of a
	// config error.
	for stderr, fallback := range map[string]bool{
		"sshd: no hostkeys available -- exiting.":                                                                            true,
		"Unable to load host key: /nonexistent\nsshd: no hostkeys available -- exiting.":                                     true,
		"broken.conf: line 2: Bad configuration option: BogusKeyword\nbroken.conf: terminating, 1 bad configuration options": false,
		"b2.conf line 1: invalid time value.":                                                                                false,
	} {
		_, err := ServerSettings(context.Background(), &fakeRunner{stderr: stderr}, SSHDOptions{})
		if err == nil || errors.Is(err, ErrCannotEvaluate) != fallback {
			t.Errorf("stderr %q: %v; want ErrCannotEvaluate %v", stderr, err, fallback)
		}
	}
}

// TestRealSSHD runs the real sshd -T -f on the fixtures, with and without
// a connection spec, and checks that reading the files gives the same
// answer for the audited keywords.
func TestRealSSHD(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, SSHDPath)
	dir := fixture(t)
	hostKey(t, dir)
	alice := &Connection{User: "alice", Host: "laptop", Addr: "203.0.113.5"}
	bob := &Connection{User: "bob", Host: "h", Addr: "10.1.2.3"}
	carol := &Connection{User: "carol", Host: "h", Addr: "192.0.2.1"}
	for _, tc := range []struct {
		file string
		conn *Connection
		want map[string]string
	}{
		{"defaults.conf", nil, map[string]string{"clientaliveinterval": "0", "clientalivecountmax": "3", "logingracetime": "120", "maxstartups": "10:30:100", "usepam": "no", "loglevel": "INFO", "tcpkeepalive": "yes"}},
		{"recipe.conf", nil, map[string]string{"clientaliveinterval": "60", "clientalivecountmax": "120", "logingracetime": "120", "maxstartups": "10:30:100", "usepam": "no", "loglevel": "INFO", "tcpkeepalive": "yes"}},
		{"match.conf", nil, map[string]string{"clientaliveinterval": "300", "clientalivecountmax": "3", "logingracetime": "120", "maxstartups": "10:30:100", "usepam": "no", "loglevel": "INFO", "tcpkeepalive": "yes"}},
		{"match.conf", alice, map[string]string{"clientaliveinterval": "15", "clientalivecountmax": "2", "logingracetime": "120", "maxstartups": "10:30:100", "usepam": "no", "loglevel": "INFO", "tcpkeepalive": "yes"}},
		{"match.conf", bob, map[string]string{"clientaliveinterval": "0", "clientalivecountmax": "9", "logingracetime": "120", "maxstartups": "10:30:100", "usepam": "no", "loglevel": "INFO", "tcpkeepalive": "yes"}},
		{"include.conf", nil, map[string]string{"clientaliveinterval": "20", "clientalivecountmax": "6", "logingracetime": "45", "maxstartups": "5:50:20", "usepam": "no", "loglevel": "VERBOSE", "tcpkeepalive": "yes"}},
		{"include.conf", carol, map[string]string{"clientaliveinterval": "20", "clientalivecountmax": "1", "logingracetime": "45", "maxstartups": "5:50:20", "usepam": "no", "loglevel": "VERBOSE", "tcpkeepalive": "yes"}},
	} {
		name := tc.file
		if tc.conn != nil {
			name += "/" + tc.conn.User
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, tc.file)
			s, err := ServerSettings(context.Background(), Exec{}, SSHDOptions{ConfigFile: path, Connection: tc.conn})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, pick(s)); diff != "" {
				t.Errorf("sshd -T (-want +got):\n%s", diff)
			}
			f, err := ReadFile(path, Server, SystemDir)
			if err != nil {
				t.Fatal(err)
			}
			fromFile, _ := f.Evaluate(tc.conn, ServerDefaults)
			// sshd -T prints times in seconds.
			got := pick(fromFile)
			for _, k := range []string{"clientaliveinterval", "logingracetime"} {
				if d, err := ParseTime(got[k]); err == nil {
					got[k] = strconv.Itoa(int(d.Seconds()))
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reading the files disagrees with sshd -T (-sshd +files):\n%s", diff)
			}
		})
	}
}

func TestRealSSHDBrokenConfig(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, SSHDPath)
	dir := fixture(t)
	hostKey(t, dir)
	path := filepath.Join(dir, "broken.conf")
	_, err := ServerSettings(context.Background(), Exec{}, SSHDOptions{ConfigFile: path})
	if err == nil || errors.Is(err, ErrCannotEvaluate) {
		t.Fatalf("got %v, want a configuration error", err)
	}
	if msg := err.Error(); !strings.Contains(msg, path+": line 3: Bad configuration option: ClientAliveIntervall") {
		t.Errorf("error %q does not name the file, line and keyword", msg)
	}
}

func TestRealSSHDNoHostKey(t *testing.T) {
	sshdtest.RequireBinary(t, SSHDPath)
	dir := fixture(t) // no host key made: as for a user who cannot read them
	_, err := ServerSettings(context.Background(), Exec{}, SSHDOptions{ConfigFile: filepath.Join(dir, "recipe.conf")})
	if !errors.Is(err, ErrCannotEvaluate) {
		t.Fatalf("got %v, want ErrCannotEvaluate", err)
	}
}

func TestRealSSH(t *testing.T) {
	sshdtest.RequireBinary(t, SSHPath)
	cfg := filepath.Join("testdata", "client", "config")
	for _, tc := range []struct {
		host string
		want map[string][]string
	}{
		{"tunnel", map[string][]string{"serveraliveinterval": {"60"}, "serveralivecountmax": {"10"}, "localforward": {"8080 [localhost]:80"}, "dynamicforward": {"1080"}, "exitonforwardfailure": {"no"}, "tcpkeepalive": {"yes"}}},
		{"fast", map[string][]string{"serveraliveinterval": {"15"}, "serveralivecountmax": {"3"}, "localforward": nil, "dynamicforward": nil, "exitonforwardfailure": {"no"}, "tcpkeepalive": {"yes"}}},
	} {
		s, err := ClientSettings(context.Background(), Exec{}, ClientOptions{ConfigFile: cfg, Host: tc.host})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string][]string{}
		for k := range tc.want {
			got[k] = s.All(k)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.host, diff)
		}
	}
	broken := filepath.Join("testdata", "client", "broken.config")
	_, err := ClientSettings(context.Background(), Exec{}, ClientOptions{ConfigFile: broken, Host: "x"})
	if err == nil || !strings.Contains(err.Error(), broken+" line 2: invalid time value") {
		t.Errorf("broken config: %v, want ssh's message naming the file and line", err)
	}
	if _, err := ClientSettings(context.Background(), Exec{}, ClientOptions{Host: "-oProxyCommand=x"}); err == nil {
		t.Error("a host that looks like an option must be refused")
	}
}

func TestBinaryVersionReal(t *testing.T) {
	for _, bin := range []string{SSHDPath, SSHPath} {
		sshdtest.RequireBinary(t, bin)
		v, err := BinaryVersion(context.Background(), Exec{}, bin)
		if err != nil || v.Major < 7 {
			t.Errorf("%s: %v, %v", bin, v, err)
		}
	}
}

func TestHostNames(t *testing.T) {
	text := `Host *
  ServerAliveInterval 30
Host devbox devbox.example *.internal !bastion-old
  User alice
Match host mqtt
  User bob
Host mqtt-tunnel,edge-? gw%h
Host devbox
`
	f, err := Parse(strings.NewReader(text), "config", Client, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	got := f.HostNames()
	want := []string{"devbox", "devbox.example", "mqtt-tunnel"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("HostNames (-want +got):\n%s", d)
	}
}
