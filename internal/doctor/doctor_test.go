package doctor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/sshconfig"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

func recorded(t *testing.T, name string) sshconfig.Settings {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "sshconfig", "testdata", name))
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

func with(s sshconfig.Settings, kv ...string) sshconfig.Settings {
	out := sshconfig.Settings{}
	for k, v := range s {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i]] = []string{kv[i+1]}
	}
	return out
}

// byID returns finding ID -> severity.
func byID(fs []Finding) map[string]Severity {
	m := map[string]Severity{}
	for _, f := range fs {
		m[f.ID] = f.Severity
	}
	return m
}

func find(fs []Finding, id string) Finding {
	for _, f := range fs {
		if f.ID == id {
			return f
		}
	}
	return Finding{}
}

func TestCheckServer(t *testing.T) {
	debian := recorded(t, "sshd-T-9.2-debian.txt")
	recipe := recorded(t, "sshd-T-9.2-recipe.txt")
	v92 := sshconfig.Version{Major: 9, Minor: 2}
	for _, tc := range []struct {
		name    string
		in      Server
		want    map[string]Severity
		message map[string]string // id -> substring of the message or fix
		fix     []Setting
	}{
		{
			name: "debian defaults",
			in:   Server{Settings: debian, Version: v92},
			want: map[string]Severity{IDClientAliveOff: Warning, IDPendingLogins: Info, IDLogLevel: Info, IDProcessTitles: Info},
			message: map[string]string{
				IDClientAliveOff: "about 2 h 11 min", IDPendingLogins: "dropped after 2 min; beyond 10 pending, sshd refuses 30% of new connections, all at 100",
				IDProcessTitles: `"sshd:"`,
			},
			fix: []Setting{{"ClientAliveInterval", "30"}, {"ClientAliveCountMax", "4"}},
		},
		{
			name: "60 x 120 recipe, grace off, PAM off, log ERROR",
			in:   Server{Settings: recipe},
			want: map[string]Severity{IDClientAliveLong: Warning, IDLoginGraceOff: Warning, IDUsePAMOff: Warning, IDLogLevelLow: Warning},
			message: map[string]string{
				IDClientAliveLong: "a client that vanishes is dropped after 2 h 0 min, more than 1 h 0 min",
			},
			fix: []Setting{{"ClientAliveInterval", "30"}, {"ClientAliveCountMax", "4"}, {"LoginGraceTime", "30"}},
		},
		{
			name:    "recipe against a 15 min idle window",
			in:      Server{Settings: with(debian, "clientaliveinterval", "60", "clientalivecountmax", "20"), IdleWindow: 15 * time.Minute},
			want:    map[string]Severity{IDClientAliveLong: Warning, IDPendingLogins: Info, IDLogLevel: Info},
			message: map[string]string{IDClientAliveLong: "dropped after 20 min, longer than the agent's idle window of 15 min"},
			fix:     []Setting{{"ClientAliveInterval", "30"}, {"ClientAliveCountMax", "4"}},
		},
		{
			name:    "short idle window: faster recommendation",
			in:      Server{Settings: debian, IdleWindow: 4 * time.Minute},
			want:    map[string]Severity{IDClientAliveOff: Warning, IDPendingLogins: Info, IDLogLevel: Info},
			fix:     []Setting{{"ClientAliveInterval", "15"}, {"ClientAliveCountMax", "4"}},
			message: map[string]string{IDClientAliveOff: "dropped after 1 min"},
		},
		{
			name:    "fine",
			in:      Server{Settings: with(debian, "clientaliveinterval", "30", "clientalivecountmax", "4", "loglevel", "VERBOSE", "logingracetime", "30"), Version: sshconfig.Version{Major: 10, Minor: 5}},
			want:    map[string]Severity{IDClientAlive: Info, IDPendingLogins: Info, IDLogLevel: Info, IDProcessTitles: Info},
			message: map[string]string{IDClientAlive: "a client that vanishes is dropped after 2 min", IDProcessTitles: "[postauth]"},
		},
		{
			name:    "countmax 0 turns dropping off; tcpkeepalive off too",
			in:      Server{Settings: with(debian, "clientaliveinterval", "30", "clientalivecountmax", "0", "tcpkeepalive", "no")},
			want:    map[string]Severity{IDClientAliveOff: Warning, IDPendingLogins: Info, IDLogLevel: Info},
			message: map[string]string{IDClientAliveOff: "forever"},
			fix:     []Setting{{"ClientAliveInterval", "30"}, {"ClientAliveCountMax", "4"}},
		},
		{
			name:    "long grace, many startups",
			in:      Server{Settings: with(debian, "clientaliveinterval", "30", "logingracetime", "600", "maxstartups", "10:30:500")},
			want:    map[string]Severity{IDClientAlive: Info, IDPendingLogins: Warning, IDLogLevel: Info},
			message: map[string]string{IDPendingLogins: "up to 500 connections may each wait 10 min"},
			fix:     []Setting{{"LoginGraceTime", "30"}},
		},
		{
			name: "fallback with unevaluated Match blocks, debug log",
			in: Server{Settings: with(debian, "clientaliveinterval", "30", "loglevel", "DEBUG3"), FallbackReason: errors.New("no hostkeys"),
				Unevaluated: []*sshconfig.Block{{Keyword: "match", Criteria: []string{"User", "alice"}, File: "/etc/ssh/sshd_config", Line: 9}}},
			want:    map[string]Severity{IDSettingsSource: Info, IDMatchBlocks: Info, IDClientAlive: Info, IDPendingLogins: Info, IDLogLevel: Info},
			message: map[string]string{IDMatchBlocks: "/etc/ssh/sshd_config:9: match User alice", IDLogLevel: "noisy"},
		},
		{
			name: "unreadable values are errors",
			in:   Server{Settings: with(debian, "clientaliveinterval", "soon", "maxstartups", "x")},
			want: map[string]Severity{IDClientAliveOff: Error, IDPendingLogins: Error, IDLogLevel: Info},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, fix := CheckServer(tc.in)
			if diff := cmp.Diff(tc.want, byID(fs)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			for id, sub := range tc.message {
				if m := find(fs, id).Message + " fix: " + find(fs, id).Fix; !strings.Contains(m, sub) {
					t.Errorf("%s: message %q does not contain %q", id, m, sub)
				}
			}
			if diff := cmp.Diff(tc.fix, fix); diff != "" {
				t.Errorf("fix (-want +got):\n%s", diff)
			}
			for _, f := range fs {
				if f.Severity != Info && f.Fix == "" {
					t.Errorf("%s: a %s without a fix", f.ID, f.Severity)
				}
			}
		})
	}
}

func TestProcessTitles(t *testing.T) {
	for v, want := range map[sshconfig.Version]string{
		{Major: 9, Minor: 2}: "sshd:", {Major: 9, Minor: 7}: "sshd:", {Major: 9, Minor: 8}: "sshd-session:", {Major: 9, Minor: 9}: "sshd-session:",
		{Major: 10, Minor: 0}: "+sshd-auth", {Major: 10, Minor: 4}: "+sshd-auth", {Major: 10, Minor: 5}: "[postauth]", {Major: 11}: "[postauth]",
		{Major: 7, Minor: 4}: "sshd:",
	} {
		if got, _ := ProcessTitles(v); got != want {
			t.Errorf("%v: %q, want %q", v, got, want)
		}
	}
}

func TestCheckClient(t *testing.T) {
	def := recorded(t, "ssh-G-9.2-default.txt")
	tunnel := recorded(t, "ssh-G-9.2-tunnel.txt")
	for _, tc := range []struct {
		name    string
		s       sshconfig.Settings
		want    map[string]Severity
		message map[string]string
		fix     []Setting
	}{
		{
			name:    "defaults: TCP keepalive only",
			s:       def,
			want:    map[string]Severity{IDTCPKeepAliveOnly: Warning},
			message: map[string]string{IDTCPKeepAliveOnly: "2 h 11 min"},
			fix:     []Setting{{"ServerAliveInterval", "15"}, {"ServerAliveCountMax", "3"}},
		},
		{
			name: "nothing at all",
			s:    with(def, "tcpkeepalive", "no"),
			want: map[string]Severity{IDServerAliveOff: Warning},
			fix:  []Setting{{"ServerAliveInterval", "15"}, {"ServerAliveCountMax", "3"}},
		},
		{
			name: "tunnel: 30 s keepalive, forwards without ExitOnForwardFailure",
			s:    tunnel,
			want: map[string]Severity{IDServerAlive: Info, IDKeepaliveTraffic: Info, IDExitOnForwardFailure: Warning},
			message: map[string]string{
				IDServerAlive:          "a dead link is noticed after 1 min 30 s",
				IDKeepaliveTraffic:     "every 30 s cost about 680 kB a day",
				IDExitOnForwardFailure: "localforward 8080 [localhost]:80; localforward 8443 [localhost]:443; remoteforward 2222 [localhost]:22; dynamicforward 1080",
			},
			fix: []Setting{{"ExitOnForwardFailure", "yes"}},
		},
		{
			name:    "slow",
			s:       with(tunnel, "serveraliveinterval", "300", "exitonforwardfailure", "yes"),
			want:    map[string]Severity{IDServerAliveSlow: Warning, IDKeepaliveTraffic: Info},
			message: map[string]string{IDServerAliveSlow: "15 min"},
			fix:     []Setting{{"ServerAliveInterval", "15"}, {"ServerAliveCountMax", "3"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, fix := CheckClient(Client{Host: "h", Settings: tc.s})
			if diff := cmp.Diff(tc.want, byID(fs)); diff != "" {
				t.Errorf("findings (-want +got):\n%s", diff)
			}
			for id, sub := range tc.message {
				if m := find(fs, id).Message + " fix: " + find(fs, id).Fix; !strings.Contains(m, sub) {
					t.Errorf("%s: message %q does not contain %q", id, m, sub)
				}
			}
			if diff := cmp.Diff(tc.fix, fix); diff != "" {
				t.Errorf("fix (-want +got):\n%s", diff)
			}
		})
	}
}

// For a Host with forwards, what connwatch tunnel's standby changes.
func TestCheckClientTunnelStandby(t *testing.T) {
	tunnel := recorded(t, "ssh-G-9.2-tunnel.txt") // ServerAliveInterval 30, CountMax 3, forwards
	fs, _ := CheckClient(Client{Host: "h", Settings: tunnel, StandbyAfter: 2 * time.Second})
	f := find(fs, IDTunnelStandby)
	if f.Severity != Info {
		t.Fatalf("findings %+v: want %s as info", fs, IDTunnelStandby)
	}
	for _, want := range []string{"2 s late", "after at most 32 s", "(1 min 30 s)"} {
		if !strings.Contains(f.Message, want) {
			t.Errorf("message %q lacks %q", f.Message, want)
		}
	}
	// No forwards, or keepalives off: nothing to say.
	for name, s := range map[string]sshconfig.Settings{
		"no forwards":    recorded(t, "ssh-G-9.2-default.txt"),
		"keepalives off": with(tunnel, "serveraliveinterval", "0"),
	} {
		fs, _ := CheckClient(Client{Host: "h", Settings: s, StandbyAfter: 2 * time.Second})
		if f := find(fs, IDTunnelStandby); f.ID != "" {
			t.Errorf("%s: %+v, want no %s", name, f, IDTunnelStandby)
		}
	}
}

func TestKeepaliveBytes(t *testing.T) {
	if KeepaliveRoundTripBytes != 236 || KeepaliveRoundTripWireBytes != 350 {
		t.Errorf("round trip %d B (IP), %d B (Ethernet)", KeepaliveRoundTripBytes, KeepaliveRoundTripWireBytes)
	}
	for iv, want := range map[time.Duration]string{30 * time.Second: "680 kB", 15 * time.Second: "1.4 MB", 5 * time.Minute: "68 kB", 0: "0 B"} {
		if got := HumanBytes(KeepaliveBytesPerDay(iv)); got != want {
			t.Errorf("%v: %s a day, want %s", iv, got, want)
		}
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second: "45 s", 3 * time.Minute: "3 min", 90 * time.Second: "1 min 30 s",
		2 * time.Hour: "2 h 0 min", 7875 * time.Second: "2 h 11 min", 76 * time.Hour: "3 d 4 h",
	} {
		if got := Human(d); got != want {
			t.Errorf("Human(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestSetBlock(t *testing.T) {
	ka := []Setting{{"ServerAliveInterval", "15"}, {"ServerAliveCountMax", "3"}}
	got, err := SetBlock([]byte("User me\nHost old\n  Port 2222\n"), "dev", ka)
	if err != nil {
		t.Fatal(err)
	}
	want := BlockBegin + ` (written by connwatch doctor --fix; replaced on the next --fix)
# At the top because ssh keeps the first value it reads.
Host dev
  ServerAliveInterval 15
  ServerAliveCountMax 3
# Lines below apply to every host again.
Host *
` + BlockEnd + `
User me
Host old
  Port 2222
`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("new block (-want +got):\n%s", diff)
	}
	// Again for another host and the same host: the block is replaced,
	// its other sections kept.
	got, err = SetBlock(got, "tunnel", []Setting{{"ExitOnForwardFailure", "yes"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err = SetBlock(got, "dev", []Setting{{"ServerAliveInterval", "20"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(got), BlockBegin); n != 1 {
		t.Errorf("%d blocks", n)
	}
	for _, sub := range []string{"Host dev\n  ServerAliveInterval 20\n  ServerAliveCountMax 3\nHost tunnel\n  ExitOnForwardFailure yes\n", BlockEnd + "\nUser me\n"} {
		if !strings.Contains(string(got), sub) {
			t.Errorf("missing %q in:\n%s", sub, got)
		}
	}
	if _, err := SetBlock([]byte(BlockBegin+"\nHost x\n"), "x", ka); err == nil {
		t.Error("an unterminated block must be an error")
	}
}

func TestFixRefusesOtherSettings(t *testing.T) {
	if _, err := ServerDropIn([]Setting{{"PasswordAuthentication", "no"}}); err == nil {
		t.Error("ServerDropIn wrote PasswordAuthentication")
	}
	_, err := WriteClientFix(context.Background(), ClientFix{Runner: sshconfig.Exec{}, File: filepath.Join(t.TempDir(), "config"), Host: "h"}, []Setting{{"PubkeyAuthentication", "no"}})
	if err == nil {
		t.Error("WriteClientFix wrote PubkeyAuthentication")
	}
}

func TestDropInTarget(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "sshd_config")
	write(t, main, "Include "+dir+"/sshd_config.d/*.conf\nPort 22\n")
	if got, err := DropInTarget(main); err != nil || got != filepath.Join(dir, "sshd_config.d", DropInName) {
		t.Errorf("got %q, %v", got, err)
	}
	write(t, main, "Port 22\nMatch User x\n  Include "+dir+"/d/*.conf\n")
	if _, err := DropInTarget(main); !errors.Is(err, ErrNoDropInDir) {
		t.Errorf("only an Include inside Match: %v, want ErrNoDropInDir", err)
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sshdFixture is a main sshd config including DIR/sshd_config.d/*.conf,
// with a host key, for sshd -t.
func sshdFixture(t *testing.T) (dir, main string) {
	t.Helper()
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, sshconfig.SSHDPath)
	keygen := sshdtest.RequireBinary(t, "ssh-keygen")
	dir = t.TempDir()
	if out, err := execCombined(keygen, "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "hostkey")); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	main = filepath.Join(dir, "sshd_config")
	write(t, main, "Include "+dir+"/sshd_config.d/*.conf\nHostKey "+dir+"/hostkey\n")
	return dir, main
}

func TestWriteServerFixReal(t *testing.T) {
	dir, main := sshdFixture(t)
	target := filepath.Join(dir, "sshd_config.d", DropInName)
	write(t, target, "# old\nClientAliveInterval 600\n")
	fix := []Setting{{"ClientAliveInterval", "30"}, {"ClientAliveCountMax", "4"}}
	res, err := WriteServerFix(context.Background(), ServerFix{Runner: sshconfig.Exec{}, File: target, MainConfig: main}, fix)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.Backup != target+BackupSuffix {
		t.Errorf("result %+v", res)
	}
	if b, _ := os.ReadFile(res.Backup); string(b) != "# old\nClientAliveInterval 600\n" {
		t.Errorf("backup holds %q", b)
	}
	s, err := sshconfig.ServerSettings(context.Background(), sshconfig.Exec{}, sshconfig.SSHDOptions{ConfigFile: main})
	if err != nil {
		t.Fatal(err)
	}
	if s.Get("clientaliveinterval") != "30" || s.Get("clientalivecountmax") != "4" {
		t.Errorf("after the fix sshd -T says %s x %s", s.Get("clientaliveinterval"), s.Get("clientalivecountmax"))
	}
	// The same fix again changes nothing.
	if res, err := WriteServerFix(context.Background(), ServerFix{Runner: sshconfig.Exec{}, File: target, MainConfig: main}, fix); err != nil || res.Changed {
		t.Errorf("second run: %+v, %v", res, err)
	}
}

// A fix that would not validate (another drop-in is broken) is refused
// and the drop-in keeps its previous content; a new drop-in is removed.
func TestWriteServerFixRefused(t *testing.T) {
	dir, main := sshdFixture(t)
	write(t, filepath.Join(dir, "sshd_config.d", "40-broken.conf"), "ClientAliveIntervall 10\n")
	fix := []Setting{{"ClientAliveInterval", "30"}}
	for _, old := range []string{"ClientAliveInterval 600\n", ""} {
		target := filepath.Join(dir, "sshd_config.d", DropInName)
		os.Remove(target)
		os.Remove(target + BackupSuffix)
		if old != "" {
			write(t, target, old)
		}
		_, err := WriteServerFix(context.Background(), ServerFix{Runner: sshconfig.Exec{}, File: target, MainConfig: main}, fix)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "40-broken.conf: line 1: Bad configuration option") {
			t.Errorf("old %q: %v, want ErrInvalid naming the broken file", old, err)
		}
		b, rerr := os.ReadFile(target)
		if old == "" && !errors.Is(rerr, os.ErrNotExist) {
			t.Errorf("refused new drop-in left behind: %q", b)
		}
		if old != "" && string(b) != old {
			t.Errorf("drop-in now holds %q, want %q", b, old)
		}
	}
}

func TestWriteClientFixReal(t *testing.T) {
	sshdtest.RequireBinary(t, sshconfig.SSHPath)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	orig := "Host dev\n  HostName 192.0.2.1\n  ServerAliveInterval 600\n  LocalForward 8080 localhost:80\n"
	write(t, cfg, orig)
	fix := []Setting{{"ServerAliveInterval", "15"}, {"ServerAliveCountMax", "3"}, {"ExitOnForwardFailure", "yes"}}
	res, err := WriteClientFix(context.Background(), ClientFix{Runner: sshconfig.Exec{}, File: cfg, Host: "dev"}, fix)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(res.Backup); string(b) != orig {
		t.Errorf("backup %q", b)
	}
	s, err := sshconfig.ClientSettings(context.Background(), sshconfig.Exec{}, sshconfig.ClientOptions{ConfigFile: cfg, Host: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Get("serveraliveinterval") != "15" || s.Get("exitonforwardfailure") != "yes" || s.Get("hostname") != "192.0.2.1" {
		t.Errorf("after the fix: interval %s, exitonforwardfailure %s, hostname %s", s.Get("serveraliveinterval"), s.Get("exitonforwardfailure"), s.Get("hostname"))
	}
	if fs, _ := CheckClient(Client{Host: "dev", Settings: s}); HasProblems(fs) {
		t.Errorf("still problems after the fix: %v", fs)
	}

	// A config ssh rejects: nothing is written.
	bad := filepath.Join(dir, "bad")
	write(t, bad, "Host *\n  Bogus yes\n")
	if _, err := WriteClientFix(context.Background(), ClientFix{Runner: sshconfig.Exec{}, File: bad, Host: "dev"}, fix); !errors.Is(err, ErrInvalid) {
		t.Errorf("broken config: %v, want ErrInvalid", err)
	}
	if b, _ := os.ReadFile(bad); string(b) != "Host *\n  Bogus yes\n" {
		t.Errorf("broken config changed to %q", b)
	}
	if _, err := os.Stat(bad + BackupSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backup made for a refused fix: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".check") {
			t.Errorf("temporary file %s left", e.Name())
		}
	}
}
