// Package secret handles settings that hold secrets: a webhook URL with
// a token in its path, a command line with a bearer token. Such a value
// given as a flag is visible to every local user in ps; written in an
// event, a log line or a notification it ends up in world-readable files
// and chat. ReadFile reads one from a file only its owner can change, and
// CommandName names a command without showing its arguments.
package secret

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
)

// MaxFileSize bounds what ReadFile reads: a secret is one line.
const MaxFileSize = 64 << 10

// ErrUnsafeFile is wrapped by ReadFile's errors for a file that others
// could change (not a regular file, writable by group or others, owned by
// another user than root or this process's) or that does not hold one
// line.
var ErrUnsafeFile = errors.New("unsafe secret file")

// File is a secret read from a file.
type File struct {
	Path  string
	Value string
	// WorldReadable is set when users other than the file's owner and
	// group can read it: not refused, but worth a warning.
	WorldReadable bool
}

// ReadFile reads the secret held in path: its one line, without the
// line end and surrounding white space. It refuses (ErrUnsafeFile) a file
// that is not regular, can be written by its group or others, is owned by
// a user other than root or the caller, is larger than MaxFileSize, or is
// empty or holds more than one line. Errors name the file, never its
// content.
func ReadFile(path string) (File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return File{}, fmt.Errorf("read secret file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return File{}, fmt.Errorf("read secret file %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return File{}, fmt.Errorf("read secret file %s: not a regular file (%s): %w", path, fi.Mode().Type(), ErrUnsafeFile)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return File{}, fmt.Errorf("read secret file %s: mode %04o lets others change it (chmod go-w): %w", path, perm, ErrUnsafeFile)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return File{}, fmt.Errorf("read secret file %s: owned by uid %d, neither root nor this process's user: %w", path, st.Uid, ErrUnsafeFile)
	}
	if fi.Size() > MaxFileSize {
		return File{}, fmt.Errorf("read secret file %s: %d bytes, more than %d: %w", path, fi.Size(), MaxFileSize, ErrUnsafeFile)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return File{}, fmt.Errorf("read secret file %s: %w", path, err)
	}
	v := strings.TrimSpace(string(b))
	switch {
	case v == "":
		return File{}, fmt.Errorf("read secret file %s: empty: %w", path, ErrUnsafeFile)
	case strings.ContainsAny(v, "\r\n"):
		return File{}, fmt.Errorf("read secret file %s: more than one line: %w", path, ErrUnsafeFile)
	}
	return File{Path: path, Value: v, WorldReadable: fi.Mode().Perm()&0o004 != 0}, nil
}

// CommandName names a shell command line for events, logs and errors
// without its arguments, which may hold a token: its first word when that
// is a plain program name or path ("/usr/local/bin/before-stop",
// "logger"), else "" (an assignment such as TOKEN=… first, quotes,
// expansions, a shell keyword or builtin such as if or exec, which name
// nothing).
func CommandName(command string) string {
	word, _, _ := strings.Cut(strings.TrimSpace(command), " ")
	word, _, _ = strings.Cut(word, "\t")
	if word == "" || len(word) > 128 || shellWords[word] {
		return ""
	}
	for _, c := range word {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune("_./+-", c):
		default:
			return ""
		}
	}
	return word
}

// shellWords are shell keywords and builtins that may start a command
// line without naming what it runs.
var shellWords = map[string]bool{
	"if": true, "for": true, "while": true, "until": true, "case": true, "time": true,
	"exec": true, "exit": true, "eval": true, "set": true, "export": true, "command": true, "builtin": true,
}

// DescribeCommand is how events, logs and errors refer to a configured
// command: what it is followed by its program in parentheses, e.g. "warn
// command (notify-send)", or what alone when the command does not start
// with a plain program name.
func DescribeCommand(what, command string) string {
	if n := CommandName(command); n != "" {
		return what + " (" + n + ")"
	}
	return what
}
