package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
	"github.com/connwatch/connwatch/internal/version"
)

func TestVersion(t *testing.T) {
	defer func(v, r, d string) { version.Version, version.Revision, version.Date = v, r, d }(version.Version, version.Revision, version.Date)
	version.Version, version.Revision, version.Date = "1.2.3", "abcdef0123456789", "2026-12-05T17:00:00Z"
	want := "connwatch, version 1.2.3 (revision: abcdef0123456789)\n  build date: 2026-12-05T17:00:00Z\n"
	for _, args := range [][]string{{"version"}, {"--version"}, {"-v"}} {
		code, stdout, stderr := runCLI(t, args)
		if code != exitOK || !strings.HasPrefix(stdout, want) || !strings.Contains(stdout, "go version: go") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want it to start %q", args, code, stdout, stderr, want)
		}
	}
	code, stdout, _ := runCLI(t, []string{"version", "--json"})
	var in version.Info
	if err := json.Unmarshal([]byte(stdout), &in); code != exitOK || err != nil || in.Version != "1.2.3" || in.Revision != "abcdef0123456789" {
		t.Errorf("version --json: exit %d, %+v, %v", code, in, err)
	}
	if code, _, _ := runCLI(t, []string{"version", "extra"}); code != exitUsage {
		t.Errorf("version extra: exit %d, want %d", code, exitUsage)
	}
}

// A mistyped subcommand is a usage error naming the nearest command, at
// every level (cobra suggests only at the root, and printed help and
// exited 0 under "config").
func TestUnknownSubcommandSuggests(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"statu"}, `did you mean "status"?`},
		{[]string{"config", "chek", "x"}, `did you mean "check"?`},
		{[]string{"alarm", "evl"}, `did you mean "eval"?`},
		{[]string{"aws", "setup"}, `did you mean "setup-alarm"?`},
		{[]string{"versoin"}, `did you mean "version"?`},
		{[]string{"zzzz"}, `unknown command "zzzz" for "connwatch"`},
	} {
		code, stdout, stderr := runCLI(t, tc.args)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d and %q", tc.args, code, stdout, stderr, exitUsage, tc.want)
		}
	}
	_, _, stderr := runCLI(t, []string{"zzzz"})
	if strings.Contains(stderr, "did you mean") {
		t.Errorf("zzzz: suggested something: %q", stderr)
	}
}

func TestRootHelpListsCommandsOnce(t *testing.T) {
	_, stdout, _ := runCLI(t, []string{"--help"})
	if n := strings.Count(stdout, "\n  status "); n != 1 {
		t.Errorf("root help lists status %d times, want once:\n%s", n, stdout)
	}
	for _, c := range []string{"completion", "version", "agent", "tunnel", "connect"} {
		if !strings.Contains(stdout, "\n  "+c+" ") {
			t.Errorf("root help does not list %s:\n%s", c, stdout)
		}
	}
	if strings.Contains(stdout, "\n  man ") {
		t.Errorf("root help lists the hidden man command:\n%s", stdout)
	}
}

// The man pages, from a build with -tags manpages as the release script
// makes them; a build without says so.
func TestManPages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	goBin := testproc.RequireBinary(t, "man", filepath.Join(runtime.GOROOT(), "bin", "go"))
	bin := filepath.Join(t.TempDir(), "connwatch")
	if out, err := exec.Command(goBin, "build", "-tags", "manpages", "-o", bin, module+"/cmd/connwatch").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags manpages: %v\n%s", err, out)
	}
	dir := t.TempDir()
	if out, err := exec.Command(bin, "man", dir).CombinedOutput(); err != nil {
		t.Fatalf("man: %v\n%s", err, out)
	}
	for _, name := range []string{"connwatch.1", "connwatch-agent.1", "connwatch-tunnel-status.1", "connwatch-config-check.1"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), ".nh\n.TH \"CONNWATCH\" \"1\"") || !strings.Contains(string(b), ".SH NAME") {
			t.Errorf("%s is not a man page: %.200q", name, b)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "connwatch-man.1")); err == nil {
		t.Errorf("the hidden man command has a page of its own")
	}
}

// "tunnel statu" is a typo of a subcommand, not a host to connect to;
// a Host of that name in ssh_config is still a host.
func TestTunnelTypoSuggests(t *testing.T) {
	code, _, stderr := runCLI(t, []string{"tunnel", "-F", filepath.Join(t.TempDir(), "none"), "retyr"})
	if code != exitUsage || !strings.Contains(stderr, `did you mean "retry"?`) {
		t.Errorf("tunnel retyr: exit %d, stderr %q; want %d and a suggestion", code, stderr, exitUsage)
	}
	cfg := filepath.Join(t.TempDir(), "ssh_config")
	if err := os.WriteFile(cfg, []byte("Host retyr\n  HostName 127.0.0.1\n  Port 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	code, _, stderr = runCLIContext(ctx, []string{"tunnel", "-F", cfg, "--state-dir", t.TempDir(), "retyr"})
	if code == exitUsage || strings.Contains(stderr, "did you mean") {
		t.Errorf("tunnel to Host retyr: exit %d, stderr %q; want it tried as a host", code, stderr)
	}
}
