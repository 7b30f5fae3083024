package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// The test's releases carry a version no real release has, so a package
// left by an interrupted run is told apart from one an operator installed.
const (
	testVersion    = "0.0.1-releasetest" // as stamped and in file names
	testDebVersion = "0.0.1~releasetest" // as dpkg knows it
	upgradeVersion = "0.0.2-releasetest"
	testMarker     = "~releasetest"
)

// release is one run of scripts/release.sh for this machine's
// architecture.
type release struct {
	dir, version, arch string
}

func (r release) tarball() string {
	return filepath.Join(r.dir, "connwatch_"+r.version+"_linux_"+r.arch+".tar.gz")
}

func (r release) deb() string {
	return filepath.Join(r.dir, "connwatch_"+r.version+"_"+r.arch+".deb")
}

// buildRelease runs scripts/release.sh --arch ARCH --out dir with VERSION
// set to v+version (the script drops the v).
func buildRelease(t *testing.T, dir, version string) release {
	t.Helper()
	start := time.Now()
	cmd := exec.CommandContext(t.Context(), "bash", "../scripts/release.sh", "--arch", runtime.GOARCH, "--out", dir)
	cmd.Env = append(os.Environ(), "VERSION=v"+version)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/release.sh: %v\n%s", err, out)
	}
	t.Logf("scripts/release.sh (VERSION=v%s, %s) in %v:\n%s", version, runtime.GOARCH, time.Since(start).Round(100*time.Millisecond), out)
	return release{dir: dir, version: version, arch: runtime.GOARCH}
}

// run runs a command and returns its combined output, failing the test
// when it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRelease builds a release for this machine's architecture with
// scripts/release.sh and checks what it made: checksums, a rebuild with
// the same bytes, the tarball, the .deb's contents and configuration,
// shell completion and man pages; as root it installs, upgrades, removes
// and purges the .deb (TestRelease/deb).
func TestRelease(t *testing.T) {
	for _, b := range []string{"bash", "git", "go", "tar", "gzip", "sha256sum", "dpkg-deb"} {
		testproc.RequireBinary(t, "packaging", b)
	}
	testproc.Require(t, "packaging", "linux/amd64 or linux/arm64, the platforms scripts/release.sh builds",
		runtime.GOOS == "linux" && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64"))
	epoch, err := strconv.ParseInt(strings.TrimSpace(run(t, "git", "log", "-1", "--format=%ct", "HEAD")), 10, 64)
	if err != nil {
		t.Fatalf("HEAD commit time: %v", err)
	}
	work := t.TempDir()
	rel := buildRelease(t, filepath.Join(work, "release"), testVersion)

	// The tarball's tree, for the binary, completions and man pages.
	tree := filepath.Join(work, "tree")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "tar", "-xzf", rel.tarball(), "-C", tree)
	top := filepath.Join(tree, "connwatch_"+testVersion+"_linux_"+rel.arch)

	t.Run("checksums", func(t *testing.T) {
		cmd := exec.CommandContext(t.Context(), "sha256sum", "-c", "--strict", "SHA256SUMS")
		cmd.Dir = rel.dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("sha256sum -c SHA256SUMS: %v\n%s", err, out)
		}
		want := []string{filepath.Base(rel.deb()) + ": OK", filepath.Base(rel.tarball()) + ": OK"} // sorted
		if got := strings.Split(strings.TrimSpace(string(out)), "\n"); !slices.Equal(got, want) {
			t.Errorf("sha256sum -c SHA256SUMS checked %q, want %q", got, want)
		}
	})

	t.Run("reproducible", func(t *testing.T) {
		again := buildRelease(t, filepath.Join(work, "again"), testVersion)
		a, err := os.ReadFile(filepath.Join(rel.dir, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(again.dir, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("a rebuild of the same commit and version differs:\n%s\nthen:\n%s", a, b)
		}
	})

	t.Run("tarball", func(t *testing.T) {
		checkTarball(t, rel, time.Unix(epoch, 0))
		bin := filepath.Join(top, "connwatch")
		if out := run(t, bin, "version"); !strings.Contains(out, "version "+testVersion+" ") {
			t.Errorf("connwatch version: %q, want version %s", out, testVersion)
		}
		f, err := elf.Open(bin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s has a program interpreter: not a static binary", bin)
			}
		}
		bi, err := buildinfo.ReadFile(bin)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range bi.Settings {
			if s.Key == "-tags" && s.Value != "" {
				t.Errorf("%s was built with -tags %s: the shipped binary has no build tags (the man page generator is the host build's)", bin, s.Value)
			}
		}
	})

	t.Run("deb contents", func(t *testing.T) {
		checkDebContents(t, rel, filepath.Join(work, "deb"))
	})

	t.Run("completion", func(t *testing.T) {
		script := filepath.Join(top, "completions", "connwatch.bash")
		if got := complete(t, top, script, "connwatch sta"); !slices.Equal(got, []string{"status"}) {
			t.Errorf("connwatch sta<TAB> offers %q, want [status]", got)
		}
		if got := complete(t, top, script, "connwatch agent --action "); !slices.Contains(got, "ec2-stop") {
			t.Errorf("connwatch agent --action <TAB> offers %q, want ec2-stop among them", got)
		}
	})

	t.Run("man", func(t *testing.T) {
		man := testproc.RequireBinary(t, "packaging", "man")
		cmd := exec.CommandContext(t.Context(), man, "-l", filepath.Join(top, "man", "man1", "connwatch-agent.1.gz"))
		cmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("man -l connwatch-agent.1.gz: %v\n%s", err, out)
		}
		text := strings.Join(strings.Fields(string(out)), " ") // as justified for 80 columns
		for _, want := range []string{"NAME connwatch-agent - Watch sessions", "SYNOPSIS connwatch agent [flags]", "connwatch " + testVersion} {
			if !strings.Contains(text, want) {
				t.Errorf("man -l connwatch-agent.1.gz has no %q:\n%s", want, out)
			}
		}
	})

	t.Run("deb", func(t *testing.T) {
		testproc.Require(t, "packaging", "root, to install the .deb with dpkg", os.Geteuid() == 0)
		testproc.RequireBinary(t, "packaging", "dpkg")
		testproc.RequireBinary(t, "packaging", "dpkg-query")
		checkInstall(t, rel, filepath.Join(work, "upgrade"), top)
	})
}

// checkTarball checks the names, modes, owners and dates in the tarball.
func checkTarball(t *testing.T, rel release, mtime time.Time) {
	f, err := os.Open(rel.tarball())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if !zr.ModTime.IsZero() || zr.Name != "" {
		t.Errorf("gzip header has a name %q or time %v (want gzip -n)", zr.Name, zr.ModTime)
	}
	prefix := "connwatch_" + rel.version + "_linux_" + rel.arch + "/"
	modes := map[string]fs.FileMode{}
	var names []string
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !strings.HasPrefix(h.Name, prefix) && h.Name != prefix {
			t.Errorf("%s: outside the top folder %s", h.Name, prefix)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want 0:0 and numeric", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(mtime) {
			t.Errorf("%s: mtime %v, want the HEAD commit's %v", h.Name, h.ModTime, mtime)
		}
		modes[strings.TrimPrefix(h.Name, prefix)] = fs.FileMode(h.Mode).Perm()
	}
	if !slices.IsSorted(names) {
		t.Errorf("names not sorted: %q", names)
	}
	want := map[string]fs.FileMode{
		"connwatch":                           0o755,
		"README.md":                           0o644,
		"LICENSE":                             0o644,
		"examples/connwatch.toml":             0o644,
		"packaging/connwatch.service":         0o644,
		"packaging/connwatch-tunnel@.service": 0o644,
		"completions/connwatch.bash":          0o644,
		"completions/_connwatch":              0o644,
		"completions/connwatch.fish":          0o644,
		"man/man1/connwatch.1.gz":             0o644,
		"man/man1/connwatch-agent.1.gz":       0o644,
		"man/man1/connwatch-tunnel.1.gz":      0o644,
	}
	for name, mode := range want {
		got, ok := modes[name]
		switch {
		case !ok:
			t.Errorf("tarball has no %s%s", prefix, name)
		case got != mode:
			t.Errorf("%s%s: mode %v, want %v", prefix, name, got, mode)
		}
	}
}

// checkDebContents reads the .deb without installing it: control fields,
// the file list, the conffile and the configuration it ships.
func checkDebContents(t *testing.T, rel release, dir string) {
	deb := rel.deb()
	for field, want := range map[string]string{
		"Package":      "connwatch",
		"Version":      testDebVersion,
		"Architecture": rel.arch,
		"Section":      "admin",
		"Homepage":     "https://github.com/connwatch/connwatch",
	} {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "--field", deb, field)); got != want {
			t.Errorf("%s: %s, want %s", field, got, want)
		}
	}
	if got := strings.TrimSpace(run(t, "dpkg-deb", "--info", deb, "conffiles")); got != "/etc/connwatch/connwatch.toml" {
		t.Errorf("conffiles: %q, want /etc/connwatch/connwatch.toml", got)
	}

	list := run(t, "dpkg-deb", "--contents", deb)
	files := map[string]string{} // path -> mode and owner, as "-rwxr-xr-x root/root"
	for _, l := range strings.Split(strings.TrimSpace(list), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb --contents: line %q", l)
		}
		files[strings.TrimPrefix(f[len(f)-1], ".")] = f[0] + " " + f[1]
	}
	for path, want := range map[string]string{
		"/usr/bin/connwatch":                                  "-rwxr-xr-x root/root",
		"/lib/systemd/system/connwatch.service":               "-rw-r--r-- root/root",
		"/lib/systemd/system/connwatch-tunnel@.service":       "-rw-r--r-- root/root",
		"/etc/connwatch/connwatch.toml":                       "-rw-r----- root/root",
		"/usr/share/bash-completion/completions/connwatch":    "-rw-r--r-- root/root",
		"/usr/share/zsh/vendor-completions/_connwatch":        "-rw-r--r-- root/root",
		"/usr/share/fish/vendor_completions.d/connwatch.fish": "-rw-r--r-- root/root",
		"/usr/share/man/man1/connwatch.1.gz":                  "-rw-r--r-- root/root",
		"/usr/share/man/man1/connwatch-agent.1.gz":            "-rw-r--r-- root/root",
		"/usr/share/doc/connwatch/README.md.gz":               "-rw-r--r-- root/root",
		"/usr/share/doc/connwatch/copyright":                  "-rw-r--r-- root/root",
	} {
		if got, ok := files[path]; !ok {
			t.Errorf(".deb has no %s", path)
		} else if got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}

	// The configuration it ships sets no key and passes the check.
	run(t, "dpkg-deb", "--extract", deb, dir)
	conf := filepath.Join(dir, "etc", "connwatch", "connwatch.toml")
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && l[0] != '#' && l[0] != '[' {
			t.Errorf("connwatch.toml:%d sets a key: %q (the packaged file keeps every default)", i+1, l)
		}
	}
	checkConfig(t, filepath.Join(dir, "usr", "bin", "connwatch"), conf)
}

// checkConfig runs 'connwatch config check' on conf and wants the
// dry-run action.
func checkConfig(t *testing.T, bin, conf string) {
	t.Helper()
	if out := run(t, bin, "config", "check", conf); !strings.Contains(out, ": ok (action dry-run ") {
		t.Errorf("connwatch config check %s: %q, want ok with action dry-run", conf, out)
	}
}

// complete runs bash's completion of line (ending in a space to complete
// a new word) with the script and bash-completion loaded and connwatch
// from dir first in PATH, as pressing TAB does, and returns COMPREPLY.
func complete(t *testing.T, dir, script, line string) []string {
	t.Helper()
	const helpers = "/usr/share/bash-completion/bash_completion"
	_, err := os.Stat(helpers)
	testproc.Require(t, "packaging", "bash-completion ("+helpers+")", err == nil)
	prog := `source ` + helpers + `
source "$1"
COMP_LINE=$2
COMP_POINT=${#COMP_LINE}
read -r -a COMP_WORDS <<<"$COMP_LINE"
if [[ $COMP_LINE == *" " ]]; then COMP_WORDS+=(""); fi
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
COMP_TYPE=9
__start_connwatch connwatch "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
`
	cmd := exec.CommandContext(t.Context(), "bash", "--norc", "--noprofile", "-c", prog, "bash", script, line)
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash completion of %q: %v\n%s", line, err, out)
	}
	var got []string
	for _, w := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if w = strings.TrimSpace(w); w != "" {
			got = append(got, w)
		}
	}
	return got
}

// installed are the paths the package owns or its purge removes. None may
// exist before the test: dpkg -i would overwrite a binary put there by
// hand, and the purge would delete an operator's configuration and state.
var installed = []string{
	"/usr/bin/connwatch",
	"/lib/systemd/system/connwatch.service",
	"/lib/systemd/system/connwatch-tunnel@.service",
	"/etc/connwatch",
	"/etc/default/connwatch",
	"/etc/default/connwatch-tunnel",
	"/var/lib/connwatch",
	"/var/log/connwatch",
	"/usr/share/bash-completion/completions/connwatch",
	wantsLink,
}

// wantsLink is where 'systemctl enable connwatch' puts its link.
const wantsLink = "/etc/systemd/system/multi-user.target.wants/connwatch.service"

// packageStatus returns dpkg's status and version of connwatch, or ""
// when dpkg knows no such package.
func packageStatus(t *testing.T) (status, version string) {
	t.Helper()
	// No t.Context(): cleanup asks too, after the context is done.
	out, err := exec.Command("dpkg-query", "--show", "--showformat=${Status}\t${Version}", "connwatch").Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return "", "" // "no packages found matching connwatch"
	}
	if err != nil {
		t.Fatalf("dpkg-query --show connwatch: %v", err)
	}
	status, version, _ = strings.Cut(string(out), "\t")
	if status == "unknown ok not-installed" {
		return "", ""
	}
	return status, version
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// checkInstall installs, reinstalls, upgrades, removes and purges the
// .deb, checking each step; the purge also runs at cleanup.
func checkInstall(t *testing.T, rel release, upgradeDir, top string) {
	if status, version := packageStatus(t); status != "" {
		if !strings.HasSuffix(version, testMarker) {
			t.Fatalf("a connwatch package not installed by this test is present (%s, version %s): "+
				"this test installs and purges its own; remove it first with 'dpkg -P connwatch'", status, version)
		}
		t.Logf("purging connwatch %s (%s), left by an earlier run of this test", version, status)
		run(t, "dpkg", "--purge", "connwatch")
	}
	for _, p := range installed {
		if exists(p) {
			t.Fatalf("%s exists, not from this test's package: installing would overwrite it or purging delete it; move it away first", p)
		}
	}
	madeWants := false // whether the test made the directory of wantsLink
	t.Cleanup(func() {
		if status, _ := packageStatus(t); status != "" {
			if out, err := exec.Command("dpkg", "--purge", "connwatch").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg --purge connwatch: %v\n%s", err, out)
			}
		}
		if target, err := os.Readlink(wantsLink); err == nil && target == "/lib/systemd/system/connwatch.service" {
			os.Remove(wantsLink) // made below, if a step failed before the purge
		}
		if madeWants {
			os.Remove(filepath.Dir(wantsLink))
		}
		for _, p := range installed {
			if exists(p) {
				t.Errorf("cleanup: %s is left", p)
			}
		}
	})

	version := func(want string) {
		t.Helper()
		if out := run(t, "/usr/bin/connwatch", "version"); !strings.Contains(out, "version "+want+" ") {
			t.Errorf("/usr/bin/connwatch version: %q, want version %s", out, want)
		}
	}
	const conf = "/etc/connwatch/connwatch.toml"
	t.Log(run(t, "dpkg", "--install", rel.deb()))
	if status, v := packageStatus(t); status != "install ok installed" || v != testDebVersion {
		t.Fatalf("after dpkg -i: %q %s, want install ok installed %s", status, v, testDebVersion)
	}
	version(testVersion)
	for _, u := range []string{"/lib/systemd/system/connwatch.service", "/lib/systemd/system/connwatch-tunnel@.service"} {
		if !exists(u) {
			t.Errorf("%s not installed", u)
		}
	}
	fi, err := os.Stat(conf)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode() != 0o640 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("%s: mode %v owner %d:%d, want -rw-r----- 0:0", conf, fi.Mode(), st.Uid, st.Gid)
	}
	checkConfig(t, "/usr/bin/connwatch", conf)

	// bash-completion finds the installed script by the command's name.
	installedScript := "/usr/share/bash-completion/completions/connwatch"
	a, errA := os.ReadFile(installedScript)
	b, errB := os.ReadFile(filepath.Join(top, "completions", "connwatch.bash"))
	if errA != nil || errB != nil || !bytes.Equal(a, b) {
		t.Errorf("%s is not the tarball's completions/connwatch.bash (%v, %v)", installedScript, errA, errB)
	}
	if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); err == nil {
		out := run(t, "bash", "--norc", "--noprofile", "-c",
			"source /usr/share/bash-completion/bash_completion && __load_completion connwatch && complete -p connwatch")
		if !strings.Contains(out, "-F __start_connwatch") {
			t.Errorf("bash-completion loads no completion for connwatch: %q", out)
		}
	}

	// An operator's edit survives a reinstall and an upgrade, without a
	// question from dpkg (the shipped file did not change).
	const edit = "\n# edited by the release test\n"
	f, err := os.OpenFile(conf, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(edit); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	kept := func(step string) {
		t.Helper()
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatalf("after %s: %v", step, err)
		}
		if !strings.HasSuffix(string(b), edit) {
			t.Errorf("after %s: %s lost the operator's edit", step, conf)
		}
		if m, _ := filepath.Glob(conf + ".dpkg-*"); len(m) > 0 {
			t.Errorf("after %s: dpkg left %q", step, m)
		}
	}
	t.Log(run(t, "dpkg", "--install", rel.deb()))
	kept("a reinstall")
	up := buildRelease(t, upgradeDir, upgradeVersion)
	t.Log(run(t, "dpkg", "--install", up.deb()))
	kept("an upgrade")
	version(upgradeVersion)

	// What the services and 'systemctl enable' leave, for the purge.
	for _, p := range []string{"/var/lib/connwatch/policy.json", "/var/log/connwatch/events.jsonl", "/etc/connwatch/webhook.url"} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if wants := filepath.Dir(wantsLink); !exists(wants) {
		if err := os.MkdirAll(wants, 0o755); err != nil {
			t.Fatal(err)
		}
		madeWants = true
	}
	if err := os.Symlink("/lib/systemd/system/connwatch.service", wantsLink); err != nil {
		t.Fatal(err)
	}

	t.Log(run(t, "dpkg", "--remove", "connwatch"))
	if status, _ := packageStatus(t); status != "deinstall ok config-files" {
		t.Errorf("after dpkg -r: %q, want deinstall ok config-files", status)
	}
	for _, p := range []string{"/usr/bin/connwatch", "/lib/systemd/system/connwatch.service", "/lib/systemd/system/connwatch-tunnel@.service", installedScript} {
		if exists(p) {
			t.Errorf("after dpkg -r: %s is left", p)
		}
	}
	kept("dpkg -r")
	if !exists("/var/lib/connwatch/policy.json") {
		t.Errorf("dpkg -r removed the state in /var/lib/connwatch (only a purge may)")
	}

	t.Log(run(t, "dpkg", "--purge", "connwatch"))
	if status, _ := packageStatus(t); status != "" {
		t.Errorf("after dpkg -P: %q, want not installed", status)
	}
	for _, p := range installed {
		if exists(p) {
			t.Errorf("after dpkg -P: %s is left", p)
		}
	}
}
