package connect

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want Target
		ok   bool
	}{
		{"i-0123456789abcdef0", Target{ID: "i-0123456789abcdef0"}, true},
		{"i-0123abcd", Target{ID: "i-0123abcd"}, true},
		{"name:devbox", Target{Name: "devbox"}, true},
		{"name:Dev Box (eu)", Target{Name: "Dev Box (eu)"}, true},
		{"name:dev*", Target{Name: "dev*"}, true},
		{"i-0123456789ABCDEF0", Target{}, false},
		{"i-0123456789abcdef", Target{}, false},
		{"i-0123456789abcdefg", Target{}, false},
		{"i-", Target{}, false},
		{"devbox", Target{}, false},
		{"203.0.113.7", Target{}, false},
		{"name:", Target{}, false},
		{"name:a\nb", Target{}, false},
		{"name:\x1b[2J", Target{}, false},
		{"name:" + strings.Repeat("x", 257), Target{}, false},
		{"", Target{}, false},
	}
	for _, tt := range tests {
		got, err := ParseTarget(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseTarget(%q) = %+v, %v", tt.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrBadTarget) {
			t.Errorf("ParseTarget(%q): %v is not ErrBadTarget", tt.in, err)
		}
	}
}

func TestParsePortAndAddress(t *testing.T) {
	for in, want := range map[string]int{"22": 22, "2222": 2222, "65535": 65535, "0": 0, "65536": 0, "ssh": 0, "-1": 0, "": 0} {
		got, err := ParsePort(in)
		if got != want || (err == nil) != (want != 0) {
			t.Errorf("ParsePort(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "public", "private", "ipv6"} {
		if a, err := ParseAddress(in); err != nil || string(a) != in {
			t.Errorf("ParseAddress(%q) = %q, %v", in, a, err)
		}
	}
	if _, err := ParseAddress("elastic"); !errors.Is(err, ErrBadTarget) {
		t.Errorf("ParseAddress(elastic): %v", err)
	}
}

func TestSSHConfig(t *testing.T) {
	got, err := Stanza{Host: "devbox", Instance: "i-0123456789abcdef0", Executable: "/usr/local/bin/connwatch",
		Flags: []string{"--region", "eu-west-1"}}.SSHConfig()
	want := `Host devbox
    HostName i-0123456789abcdef0
    HostKeyAlias devbox
    ProxyCommand /usr/local/bin/connwatch connect --region eu-west-1 %h %p
`
	if d := cmp.Diff(want, got); err != nil || d != "" {
		t.Errorf("SSHConfig: %v (-want +got):\n%s", err, d)
	}

	// A path with spaces, quotes and % is quoted for sh, % doubled for ssh.
	got, err = Stanza{Host: "build.eu-1", Instance: "name:build", Executable: "/home/a b/it's 100%/connwatch"}.SSHConfig()
	if want := `    ProxyCommand '/home/a b/it'\''s 100%%/connwatch' connect %h %p` + "\n"; err != nil || !strings.HasSuffix(got, want) {
		t.Errorf("SSHConfig: %v\n%s\nwant it to end\n%s", err, got, want)
	}
	if !strings.Contains(got, "    HostName name:build\n") {
		t.Errorf("SSHConfig:\n%s", got)
	}

	if _, err := (Stanza{Host: strings.Repeat("a", 253), Instance: "i-0123abcd", Executable: "/c"}).SSHConfig(); err != nil {
		t.Errorf("a 253-byte Host: %v", err)
	}
	for _, bad := range []Stanza{
		{Host: "dev box", Instance: "i-0123abcd", Executable: "/c"},
		{Host: "dev*", Instance: "i-0123abcd", Executable: "/c"},
		{Host: "dev\n  ProxyCommand evil", Instance: "i-0123abcd", Executable: "/c"},
		{Host: "-oProxyCommand", Instance: "i-0123abcd", Executable: "/c"},
		{Host: strings.Repeat("a", 254), Instance: "i-0123abcd", Executable: "/c"},
		{Host: "dev", Instance: "devbox", Executable: "/c"},
		{Host: "dev", Instance: "name:Dev Box", Executable: "/c"},
		{Host: "dev", Instance: "name:$(reboot)", Executable: "/c"},
		{Host: "dev", Instance: "name:a;b", Executable: "/c"},
		{Host: "dev", Instance: "i-0123abcd", Executable: "/c\nHost *"},
		{Host: "dev", Instance: "i-0123abcd", Executable: "/c#x"},
		{Host: "dev", Instance: "i-0123abcd", Executable: ""},
		{Host: "dev", Instance: "i-0123abcd", Executable: "/c", Flags: []string{"--profile", "a b"}},
		{Host: "dev", Instance: "i-0123abcd", Executable: "/c", Flags: []string{"--profile", "$(id)"}},
	} {
		if got, err := bad.SSHConfig(); !errors.Is(err, ErrBadTarget) {
			t.Errorf("%+v: %v\n%s", bad, err, got)
		}
	}
}
