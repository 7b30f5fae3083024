package sshconfig

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var tunnelKeys = []string{"hostname", "port", "user", "identityfile", "identitiesonly", "userknownhostsfile", "stricthostkeychecking", "serveraliveinterval", "serveralivecountmax", "connecttimeout", "exitonforwardfailure", "localforward", "remoteforward", "dynamicforward", "proxyjump"}

// clientFixture copies the client test configs with @DIR@ replaced by the
// copy's directory (ssh resolves relative Includes in the real ~/.ssh).
func clientFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	root := filepath.Join("testdata", "client")
	err := filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dir, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), bytes.ReplaceAll(b, []byte("@DIR@"), []byte(dir)), 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestParseClientSettingsMatchesSSH(t *testing.T) {
	if _, err := exec.LookPath(SSHPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("ssh is required in CI")
		}
		t.Skip("ssh not installed")
	}
	t.Setenv("HOME", t.TempDir())
	dir := clientFixture(t)
	for _, cfg := range []string{"config", "patterns.config", "include.config"} {
		for _, host := range []string{"tunnel", "fast", "web-01", "WEB-02", "web-99", "db", "tun", "other"} {
			o := ClientOptions{ConfigFile: filepath.Join(dir, cfg), Host: host}
			want, err := ClientSettings(context.Background(), Exec{}, o)
			if err != nil {
				t.Fatal(err)
			}
			got, notes, err := ParseClientSettings(o, ClientEnv{})
			if err != nil {
				t.Fatalf("%s %s: %v", cfg, host, err)
			}
			for _, k := range tunnelKeys {
				if diff := cmp.Diff(want.All(k), got.All(k)); diff != "" {
					t.Errorf("%s %s: %s (-ssh -G +parsed):\n%s", cfg, host, k, diff)
				}
			}
			if cfg == "patterns.config" && (len(notes) != 1 || !strings.Contains(notes[0], "exec")) {
				t.Errorf("%s %s: notes %q, want one about Match exec", cfg, host, notes)
			}
		}
	}
	// -o options win over the file, for ssh and the parser alike.
	o := ClientOptions{ConfigFile: filepath.Join(dir, "patterns.config"), Host: "db", Options: []string{"Port=2022", "User bob"}}
	want, err := ClientSettings(context.Background(), Exec{}, o)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := ParseClientSettings(o, ClientEnv{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range tunnelKeys {
		if diff := cmp.Diff(want.All(k), got.All(k)); diff != "" {
			t.Errorf("options: %s (-ssh -G +parsed):\n%s", k, diff)
		}
	}
}

func TestClientSettingsOrParseFallback(t *testing.T) {
	dir := clientFixture(t)
	o := ClientOptions{Binary: "connwatch-no-such-ssh", ConfigFile: filepath.Join(dir, "include.config"), Host: "tun"}
	res, err := ClientSettingsOrParse(context.Background(), Exec{}, o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Parsed || res.Settings.Get("hostname") != "198.51.100.7" || res.Settings.Get("port") != "2022" || res.Settings.Get("user") != "tunneler" {
		t.Errorf("got %+v", res)
	}
	// Other failures are not hidden by the fallback.
	o.ConfigFile, o.Host = filepath.Join(dir, "broken.config"), "x"
	o.Binary = SSHPath
	if _, err := exec.LookPath(SSHPath); err == nil {
		if _, err := ClientSettingsOrParse(context.Background(), Exec{}, o); err == nil {
			t.Error("broken config: no error")
		}
	}
	o.Binary = "connwatch-no-such-ssh"
	_, err = ClientSettingsOrParse(context.Background(), Exec{}, o)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 2 {
		t.Errorf("broken config parsed: %v, want a ParseError at line 2", err)
	}
}

func TestFormatForward(t *testing.T) {
	for _, tc := range []struct {
		key  string
		args []string
		want string
	}{
		{"localforward", []string{"8080", "localhost:80"}, "8080 [localhost]:80"},
		{"localforward", []string{"*:8080", "[::1]:80"}, "[*]:8080 [::1]:80"},
		{"remoteforward", []string{"9001"}, "9001 [socks]:0"},
		{"dynamicforward", []string{"localhost:1081"}, "[localhost]:1081"},
		{"localforward", []string{"8080", "/run/x.sock"}, "8080 /run/x.sock"},
	} {
		got, err := formatForward(tc.key, tc.args)
		if err != nil || got != tc.want {
			t.Errorf("%s %q: %q, %v; want %q", tc.key, tc.args, got, err, tc.want)
		}
	}
	if _, err := formatForward("localforward", []string{"8080"}); err == nil {
		t.Error("a LocalForward without a target must fail")
	}
}
