package doctor

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/sshconfig"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

func isLink(t *testing.T, path string) bool {
	t.Helper()
	fi, err := os.Lstat(path)
	return err == nil && fi.Mode()&fs.ModeSymlink != 0
}

var clientFix = []Setting{{"ServerAliveInterval", "15"}, {"ServerAliveCountMax", "3"}}

// TestWriteClientFixThroughSymlink: a ~/.ssh/config kept with dotfiles
// (a relative link) stays a link; the dotfile gets the fix, and the
// backup sits next to the link with the old content.
func TestWriteClientFixThroughSymlink(t *testing.T) {
	sshdtest.RequireBinary(t, sshconfig.SSHPath)
	home := t.TempDir()
	dotfile := filepath.Join(home, "dotfiles", "ssh_config")
	orig := "Host dev\n  HostName 192.0.2.1\n"
	write(t, dotfile, orig)
	link := filepath.Join(home, ".ssh", "config")
	if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../dotfiles/ssh_config", link); err != nil {
		t.Fatal(err)
	}
	res, err := WriteClientFix(context.Background(), ClientFix{Runner: sshconfig.Exec{}, File: link, Host: "dev"}, clientFix)
	if err != nil {
		t.Fatal(err)
	}
	if !isLink(t, link) {
		t.Fatalf("%s was replaced by a file", link)
	}
	if dest, _ := os.Readlink(link); dest != "../dotfiles/ssh_config" {
		t.Errorf("link now points to %q", dest)
	}
	if res.Target != dotfile || !res.Changed {
		t.Errorf("result %+v, want the dotfile written", res)
	}
	if b, _ := os.ReadFile(dotfile); !strings.Contains(string(b), BlockBegin) || !strings.Contains(string(b), orig) {
		t.Errorf("dotfile holds %q", b)
	}
	if b, _ := os.ReadFile(link + BackupSuffix); string(b) != orig || isLink(t, link+BackupSuffix) {
		t.Errorf("backup holds %q", b)
	}
	s, err := sshconfig.ClientSettings(context.Background(), sshconfig.Exec{}, sshconfig.ClientOptions{ConfigFile: link, Host: "dev"})
	if err != nil || s.Get("serveraliveinterval") != "15" {
		t.Errorf("ssh -G through the link: interval %q, %v", s.Get("serveraliveinterval"), err)
	}
	ents, _ := os.ReadDir(filepath.Dir(dotfile))
	if len(ents) != 1 {
		t.Errorf("dotfiles directory holds %v, want only ssh_config", ents)
	}

	// A link to nothing: a clear error, nothing written.
	dangling := filepath.Join(home, ".ssh", "dangling")
	if err := os.Symlink("../dotfiles/gone", dangling); err != nil {
		t.Fatal(err)
	}
	_, err = WriteClientFix(context.Background(), ClientFix{Runner: sshconfig.Exec{}, File: dangling, Host: "dev"}, clientFix)
	if !errors.Is(err, atomicfile.ErrDanglingLink) || !strings.Contains(err.Error(), "gone") {
		t.Errorf("dangling link: %v, want ErrDanglingLink naming the target", err)
	}
	if !isLink(t, dangling) {
		t.Error("the dangling link was replaced")
	}
	if _, err := os.Lstat(filepath.Join(home, "dotfiles", "gone")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a target was created for the dangling link: %v", err)
	}
}

// TestWriteClientFixKeepsUsersOwner: doctor --fix as root on a user's
// linked ssh config leaves the file and its backup the user's; a link of
// the user's to a file of root's is refused.
func TestWriteClientFixKeepsUsersOwner(t *testing.T) {
	sshdtest.RequireBinary(t, sshconfig.SSHPath)
	u := testproc.HostileUser(t)
	home := t.TempDir()
	for _, d := range []string{filepath.Dir(home), home} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dotfile := filepath.Join(home, "dotfiles", "ssh_config")
	write(t, dotfile, "Host dev\n  HostName 192.0.2.1\n")
	if err := os.Chmod(dotfile, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(home, "config")
	if err := os.Symlink("dotfiles/ssh_config", link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(dotfile), dotfile, link} {
		u.Chown(t, p)
	}
	if _, err := WriteClientFix(context.Background(), ClientFix{Runner: sshconfig.Exec{}, File: link, Host: "dev"}, clientFix); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dotfile, link + BackupSuffix} {
		if uid, gid := testproc.Owner(t, p); uid != u.UID || gid != u.GID {
			t.Errorf("%s owned by %d:%d, want the user's %d:%d", p, uid, gid, u.UID, u.GID)
		}
		if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600 kept", p, fi.Mode().Perm())
		}
	}
	if !isLink(t, link) {
		t.Error("link replaced")
	}
	u.Run(t, "echo '# mine' >> "+dotfile)

	// The user's link to root's file: refused before anything is written.
	rootFile := filepath.Join(home, "root_config")
	write(t, rootFile, "Host dev\n  HostName 192.0.2.1\n")
	trap := filepath.Join(home, "trap")
	if err := os.Symlink(rootFile, trap); err != nil {
		t.Fatal(err)
	}
	u.Chown(t, trap)
	_, err := WriteClientFix(context.Background(), ClientFix{Runner: sshconfig.Exec{}, File: trap, Host: "dev"}, clientFix)
	if !errors.Is(err, atomicfile.ErrForeignLink) {
		t.Errorf("user's link to root's file: %v, want ErrForeignLink", err)
	}
	if b, _ := os.ReadFile(rootFile); strings.Contains(string(b), BlockBegin) {
		t.Error("root's file was written through the user's link")
	}
	if _, err := os.Lstat(trap + BackupSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("backup made for a refused fix: %v", err)
	}
}

// TestWriteServerFixThroughSymlink: a drop-in that is a link (managed
// configuration) stays one.
func TestWriteServerFixThroughSymlink(t *testing.T) {
	dir, main := sshdFixture(t)
	managed := filepath.Join(dir, "managed", "keepalive.conf")
	write(t, managed, "ClientAliveInterval 600\n")
	dropIn := filepath.Join(dir, "sshd_config.d", DropInName)
	if err := os.MkdirAll(filepath.Dir(dropIn), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(managed, dropIn); err != nil {
		t.Fatal(err)
	}
	res, err := WriteServerFix(context.Background(), ServerFix{Runner: sshconfig.Exec{}, File: dropIn, MainConfig: main}, []Setting{{"ClientAliveInterval", "30"}})
	if err != nil {
		t.Fatal(err)
	}
	if !isLink(t, dropIn) || res.Target != managed {
		t.Errorf("drop-in link replaced, or %s written", res.Target)
	}
	if b, _ := os.ReadFile(managed); !strings.Contains(string(b), "ClientAliveInterval 30") {
		t.Errorf("managed file holds %q", b)
	}
}
