package secret_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/connwatch/connwatch/internal/secret"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

const token = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"

func write(t *testing.T, content string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "webhook.url")
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil { // past the umask
		t.Fatal(err)
	}
	return p
}

func TestReadFile(t *testing.T) {
	for _, tt := range []struct {
		name          string
		content       string
		perm          os.FileMode
		worldReadable bool
	}{
		{"trailing newline", token + "\n", 0o600, false},
		{"CRLF and spaces", "  " + token + "\r\n", 0o640, false},
		{"no newline", token, 0o400, false},
		{"world-readable is read, with a warning", token + "\n", 0o644, true},
	} {
		p := write(t, tt.content, tt.perm)
		f, err := secret.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if f.Value != token || f.WorldReadable != tt.worldReadable || f.Path != p {
			t.Errorf("%s: got %+v", tt.name, f)
		}
	}
}

func TestReadFileRefuses(t *testing.T) {
	for _, tt := range []struct {
		name, content string
		perm          os.FileMode
		why           string
	}{
		{"world-writable", token, 0o666, "mode 0666"},
		{"group-writable", token, 0o620, "mode 0620"},
		{"empty", "\n\n", 0o600, "empty"},
		{"two lines", token + "\nhttps://evil.example/\n", 0o600, "more than one line"},
	} {
		p := write(t, tt.content, tt.perm)
		_, err := secret.ReadFile(p)
		if !errors.Is(err, secret.ErrUnsafeFile) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("%s: error %v, want ErrUnsafeFile naming %s and %q", tt.name, err, p, tt.why)
		}
		if err != nil && strings.Contains(err.Error(), "secret") && strings.Contains(err.Error(), "XXXX") {
			t.Errorf("%s: error shows the content: %v", tt.name, err)
		}
	}

	dir := t.TempDir()
	if _, err := secret.ReadFile(dir); !errors.Is(err, secret.ErrUnsafeFile) {
		t.Errorf("a directory: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// O_NONBLOCK: a FIFO nobody writes to does not hang the agent.
	if _, err := secret.ReadFile(fifo); !errors.Is(err, secret.ErrUnsafeFile) {
		t.Errorf("a FIFO: %v", err)
	}
	missing := filepath.Join(dir, "missing")
	if _, err := secret.ReadFile(missing); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing file: %v", err)
	}
	huge := write(t, strings.Repeat("x", secret.MaxFileSize+1), 0o600)
	if _, err := secret.ReadFile(huge); !errors.Is(err, secret.ErrUnsafeFile) {
		t.Errorf("a huge file: %v", err)
	}
}

// TestReadFileRefusesAnotherUsersFile: a file a local user owns is that
// user's to change, whatever its mode.
func TestReadFileRefusesAnotherUsersFile(t *testing.T) {
	u := testproc.HostileUser(t)
	p := write(t, token, 0o600)
	u.Chown(t, p)
	if _, err := secret.ReadFile(p); !errors.Is(err, secret.ErrUnsafeFile) || !strings.Contains(err.Error(), "owned by uid") {
		t.Errorf("a file of %s: %v", u.Name, err)
	}
}

func TestCommandName(t *testing.T) {
	for in, want := range map[string]string{
		"/usr/local/bin/before-stop && systemctl poweroff":                "/usr/local/bin/before-stop",
		`curl -H "Authorization: Bearer s3cr3t" https://example.com/stop`: "curl",
		"  logger -t connwatch \"$CONNWATCH_TEXT\"":                       "logger",
		"TOKEN=s3cr3t /usr/local/bin/stop":                                "",
		`"/opt/my tools/stop" --token s3cr3t`:                             "",
		"$(cat /etc/token) x":                                             "",
		"":                                                                "",
		"curl\t-u user:s3cr3t https://example.com/":                       "curl",
		"https://user:s3cr3t@example.com/":                                "",
		"notify-send 'stopping soon'":                                     "notify-send",
		strings.Repeat("a", 200):                                          "",
		"s3cr3t-token-as-a-program-name":                                  "s3cr3t-token-as-a-program-name",
		"./hook.sh":                                                       "./hook.sh",
		"if true; then curl -u a:s3cr3t x; fi":                            "",
		"exec /usr/bin/env TOKEN=x":                                       "",
		"/usr/bin/stop;echo s3cr3t":                                       "",
		"systemctl\npoweroff":                                             "",
		"/bin/sh -c 'curl https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX'": "/bin/sh",
	} {
		if got := secret.CommandName(in); got != want {
			t.Errorf("CommandName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := secret.DescribeCommand("hook", "curl -u a:b x"); got != "hook (curl)" {
		t.Errorf("DescribeCommand = %q", got)
	}
	if got := secret.DescribeCommand("hook", "TOKEN=x curl"); got != "hook" {
		t.Errorf("DescribeCommand = %q", got)
	}
}
