package doctor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrNotSSHD is wrapped when the pid file names a process that is not
// sshd.
var ErrNotSSHD = errors.New("not an sshd process")

// Reload sends SIGHUP to the sshd listener whose pid is in pidFile (sshd
// -T's pidfile), after checking under procRoot (normally /proc) that the
// pid is an sshd. sshd then re-executes itself and reads its
// configuration again; established sessions are not affected.
func Reload(pidFile, procRoot string) (int, error) {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("reload sshd: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("reload sshd: %s: bad pid %q", pidFile, strings.TrimSpace(string(b)))
	}
	comm, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "comm"))
	if err != nil {
		return pid, fmt.Errorf("reload sshd: pid %d from %s: %w", pid, pidFile, err)
	}
	if c := strings.TrimSpace(string(comm)); c != "sshd" {
		return pid, fmt.Errorf("reload sshd: pid %d from %s is %q: %w", pid, pidFile, c, ErrNotSSHD)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		return pid, fmt.Errorf("reload sshd: signal %d: %w", pid, err)
	}
	return pid, nil
}
