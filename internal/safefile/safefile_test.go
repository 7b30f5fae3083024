package safefile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/safefile"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// sharedDir is a world-writable sticky directory like the holds
// directory, where the hostile user plants files.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parents are 0700 root: let the user through.
	for p := filepath.Dir(dir); p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return dir
}

func TestReadRefusesWhatAUserPlants(t *testing.T) {
	u := testproc.HostileUser(t)
	dir := sharedDir(t)
	secret := filepath.Join(t.TempDir(), "secret.json")
	os.WriteFile(secret, []byte(`{"reason":"root only"}`), 0o600)
	u.Run(t, "cd "+dir+` &&
		mkfifo fifo.json &&
		ln -s /dev/zero zero.json &&
		ln -s `+secret+` secret.json &&
		echo '{}' > mine.json && ln mine.json twice.json &&
		head -c 100000 /dev/zero > big.json &&
		echo '{"reason":"ok"}' > good.json`)
	for name, want := range map[string]string{
		"fifo.json":   "not a regular file (a FIFO)",
		"zero.json":   "a symlink",
		"secret.json": "a symlink",
		"mine.json":   "2 hard links",
		"big.json":    "more than 65536",
	} {
		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			_, _, err = safefile.Read(filepath.Join(dir, name), 64<<10)
		}()
		if !testproc.WaitClosed(done, 5*time.Second) {
			t.Fatalf("Read(%s) blocked", name)
		}
		if !errors.Is(err, safefile.ErrUntrusted) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), name) {
			t.Errorf("Read(%s) = %v; want ErrUntrusted naming the file and %q", name, err, want)
		}
	}
	b, info, err := safefile.Read(filepath.Join(dir, "good.json"), 64<<10)
	if err != nil || string(b) != "{\"reason\":\"ok\"}\n" || info.UID != u.UID {
		t.Errorf("Read(good.json) = %q, %+v, %v; want its content and owner %d", b, info, err, u.UID)
	}
	if _, _, err := safefile.Read(filepath.Join(dir, "none.json"), 64<<10); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Read(missing) = %v; want ErrNotExist", err)
	}
}

func TestTrustDir(t *testing.T) {
	u := testproc.HostileUser(t)
	shared := sharedDir(t)
	theirs := filepath.Join(shared, "theirs")
	u.Run(t, "mkdir "+theirs)
	open := filepath.Join(t.TempDir(), "open")
	os.Mkdir(open, 0o755)
	os.Chmod(open, 0o777)
	mine := filepath.Join(shared, "mine") // root's, in a sticky shared directory
	os.Mkdir(mine, 0o755)
	link := filepath.Join(t.TempDir(), "link")
	os.Symlink(theirs, link)
	for dir, want := range map[string]string{
		theirs: "belongs to uid",
		open:   "writable by group or others",
		shared: "writable by group or others",
		link:   "belongs to uid",
	} {
		err := safefile.TrustDir(dir, 0)
		if !errors.Is(err, safefile.ErrUntrusted) || !strings.Contains(err.Error(), want) {
			t.Errorf("TrustDir(%s) = %v; want %q", dir, err, want)
		}
	}
	if err := safefile.TrustDir(mine, 0); err != nil {
		t.Errorf("TrustDir(%s) = %v; a root directory in a sticky one is trusted", mine, err)
	}
	if err := safefile.TrustDir(theirs, u.UID); err != nil {
		t.Errorf("TrustDir(%s, its owner) = %v", theirs, err)
	}
}

func TestOpenAppendRefusesWhatAUserPlants(t *testing.T) {
	u := testproc.HostileUser(t)
	dir := sharedDir(t)
	victim := filepath.Join(t.TempDir(), "victim")
	os.WriteFile(victim, []byte("root's\n"), 0o600)
	u.Run(t, "cd "+dir+" && mkfifo fifo && ln -s "+victim+" link && echo x > theirs")
	// The kernel may refuse the symlink itself (protected_symlinks: EACCES) before
	// O_NOFOLLOW does (ELOOP): either way it is not followed.
	for name, want := range map[string]string{"fifo": "", "link": "", "theirs": "belongs to uid"} {
		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			var f *os.File
			if f, err = safefile.OpenAppend(filepath.Join(dir, name), 0o640); err == nil {
				f.Close()
			}
		}()
		if !testproc.WaitClosed(done, 5*time.Second) {
			t.Fatalf("OpenAppend(%s) blocked", name)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("OpenAppend(%s) = %v; want an error with %q", name, err, want)
		}
	}
	if b, _ := os.ReadFile(victim); string(b) != "root's\n" {
		t.Errorf("the symlink's target changed: %q", b)
	}
	f, err := safefile.OpenAppend(filepath.Join(dir, "events.jsonl"), 0o640)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, _ := os.Stat(filepath.Join(dir, "events.jsonl")); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode())
	}
}
