package packaging

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// maxExposure is the highest 'systemd-analyze security' exposure level a
// unit may have (0 is best, 10 worst; Debian's prometheus.service has 4.0).
const maxExposure = 3.5

// threshold is maxExposure as systemd-analyze's --threshold takes it: in
// tenths (exposure 9.1 is 91; the default, 100, lets everything pass). The
// command fails when a unit's exposure is above it.
const threshold = "35"

// units are the unit files under test, with the name verify sees them
// under: a template needs an instance.
var units = []struct{ file, instance string }{
	{"connwatch.service", "connwatch.service"},
	{"connwatch-tunnel@.service", "connwatch-tunnel@example.service"},
}

var overall = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// security runs 'systemd-analyze security --offline=true --threshold' on
// file and returns the exposure level it reports and whether it passed.
func security(t *testing.T, analyze, file string) (float64, bool, string) {
	t.Helper()
	out, err := exec.Command(analyze, "security", "--offline=true", "--threshold="+threshold, "--no-pager", file).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run systemd-analyze security %s: %v", file, err)
	}
	passed := err == nil
	m := overall.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security %s: no overall exposure level in:\n%s", file, out)
	}
	level, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("systemd-analyze security %s: exposure %q: %v", file, m[1], err)
	}
	return level, passed, string(out)
}

// TestSecurity holds each unit to an exposure level of at most 3.5.
func TestSecurity(t *testing.T) {
	analyze := testproc.RequireBinary(t, "packaging", "systemd-analyze")
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			level, passed, out := security(t, analyze, u.file)
			t.Logf("%s: exposure %.1f", u.file, level)
			if !passed || level > maxExposure {
				t.Errorf("%s: exposure %.1f, want at most %.1f (systemd-analyze --threshold=%s passed: %v); what counts:\n%s",
					u.file, level, maxExposure, threshold, passed, failing(out))
			}
		})
	}
	// The check can fail: the agent's unit without its sandbox is refused.
	bare := withoutSandbox(t, "connwatch.service")
	level, passed, _ := security(t, analyze, bare)
	if passed || level <= maxExposure {
		t.Errorf("connwatch.service without its sandbox: exposure %.1f, passed %v; want it refused", level, passed)
	}
}

// withoutSandbox writes a copy of the unit file with only what runs the
// service (no hardening directive) and returns its path.
func withoutSandbox(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	keep := regexp.MustCompile(`^(\[|#|$|Description|Documentation|After|Wants|WantedBy|Type|EnvironmentFile|Exec|Restart|WatchdogSec|StateDirectory|LogsDirectory)`)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if keep.MatchString(l) {
			out = append(out, l)
		}
	}
	path := filepath.Join(t.TempDir(), filepath.Base(file))
	if err := os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// failing keeps the lines of a security report that add to the exposure.
func failing(report string) string {
	var b strings.Builder
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "✗") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestVerify runs 'systemd-analyze verify' on each unit, with ExecStart's
// /usr/bin/connwatch (not installed here) replaced by a connwatch
// built for the test: verify checks that commands exist and are executable.
func TestVerify(t *testing.T) {
	analyze := testproc.RequireBinary(t, "packaging", "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "connwatch")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/connwatch").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			b, err := os.ReadFile(u.file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(b, []byte("ExecStart=/usr/bin/connwatch ")) {
				t.Fatalf("%s: no ExecStart=/usr/bin/connwatch to rewrite", u.file)
			}
			b = bytes.ReplaceAll(b, []byte("=/usr/bin/connwatch "), []byte("="+bin+" "))
			path := filepath.Join(dir, u.instance)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
			if err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("systemd-analyze verify %s: %v\n%s", u.file, err, out)
			}
		})
	}
}

// TestAgentSees guards what the score must not buy: settings that would
// blind the agent or take away what it needs (see the unit's comments).
func TestAgentSees(t *testing.T) {
	set, err := serviceSettings("connwatch.service")
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		"CapabilityBoundingSet": "CAP_SYS_PTRACE CAP_NET_ADMIN CAP_SYS_BOOT",
		"SupplementaryGroups":   "tty",
		"StateDirectory":        "connwatch",
		"LogsDirectory":         "connwatch",
	} {
		if got := strings.Join(set[key], " | "); got != want {
			t.Errorf("%s=%s, want %s", key, got, want)
		}
	}
	// Every process and /proc/net visible, the host's network and users.
	for _, key := range []string{"ProtectProc", "ProcSubset", "PrivateNetwork", "PrivateUsers", "IPAddressDeny", "User", "DynamicUser"} {
		if v, ok := set[key]; ok {
			t.Errorf("%s=%s: the agent must see every process, /proc/net and the host's network as root", key, strings.Join(v, " | "))
		}
	}
}

// serviceSettings reads the [Service] section of a unit file: each key's
// values in order.
func serviceSettings(file string) (map[string][]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	set := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[':
			section = l
		case section == "[Service]":
			k, v, _ := strings.Cut(l, "=")
			set[k] = append(set[k], v)
		}
	}
	return set, sc.Err()
}
