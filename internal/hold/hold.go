// Package hold keeps a machine awake for reasons other than sessions:
// inhibit locks taken by `connwatch inhibit` (files under the state
// directory, valid while their process lives and their TTL lasts),
// running processes that match configured patterns, the load average,
// and the start hold: an EC2 instance tag naming the time until which a
// freshly started machine stays up, capped after boot (StartHold).
//
// The lock directory is writable by every user (mode 1777), so the root
// agent reads it as hostile input: a lock file must be a regular file
// with one link, at most MaxLockSize bytes, owned by root or by the user
// whose process holds the lock; anything else (a FIFO, a symlink to
// /dev/zero or to a root-only file, a hard link) is refused with a warning
// and holds nothing.
package hold

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/safefile"
)

// Lock is one inhibit lock.
type Lock struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
	// Command is what runs under the lock, for people.
	Command string `json:"command,omitempty"`
	// PID is the process holding the lock; 0 for a lock that only expires.
	PID int `json:"pid"`
	// PIDStart is the process's start time in clock ticks, so a reused PID
	// does not keep a dead lock alive.
	PIDStart uint64    `json:"pid_start,omitempty"`
	Created  time.Time `json:"created"`
	// Expires is zero for no TTL.
	Expires time.Time `json:"expires,omitempty"`
}

// ErrNoLimit is returned when a lock would have neither process nor TTL.
var ErrNoLimit = errors.New("an inhibit lock needs a command to run or a --ttl")

// MaxLockSize caps a lock file; MaxTextLen the reason and command kept
// from one.
const (
	MaxLockSize = 64 << 10
	MaxTextLen  = 256
)

// Store is the directory of inhibit locks.
type Store struct {
	Dir string
	// ProcRoot is where process liveness is checked. Default "/proc".
	ProcRoot string
	// Reject, if set, is told about every file that List refused to
	// trust, with the reason (err wraps safefile.ErrUntrusted or
	// ErrForeignProcess).
	Reject func(name string, err error)
}

// ErrForeignProcess marks a lock that names another user's process: only
// root may pin a lock to a process it does not own.
var ErrForeignProcess = errors.New("lock file names a process of another user")

func (s Store) procRoot() string {
	if s.ProcRoot == "" {
		return "/proc"
	}
	return s.ProcRoot
}

// Acquire writes a new lock for pid (0: none) and returns it.
func (s Store) Acquire(reason, command string, pid int, now time.Time, ttl time.Duration) (Lock, error) {
	if pid == 0 && ttl <= 0 {
		return Lock{}, ErrNoLimit
	}
	if err := EnsureDir(s.Dir); err != nil {
		return Lock{}, err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Lock{}, fmt.Errorf("make hold id: %w", err)
	}
	l := Lock{ID: hex.EncodeToString(b[:]), Reason: reason, Command: command, PID: pid, Created: now.UTC()}
	if pid != 0 {
		start, err := startTicks(s.procRoot(), pid)
		if err != nil {
			return Lock{}, fmt.Errorf("acquire hold: %w", err)
		}
		l.PIDStart = start
	}
	if ttl > 0 {
		l.Expires = now.Add(ttl).UTC()
	}
	if err := atomicfile.WriteJSON(s.path(l.ID), l, 0o644); err != nil {
		return Lock{}, fmt.Errorf("acquire hold: %w", err)
	}
	return l, nil
}

// EnsureDir creates the lock directory so that every user can take locks
// and none can remove another's (mode 1777, like /tmp). As root it makes
// the mode so only on a real directory owned by root: a symlink planted
// in its place is refused, never followed to chmod its target.
func EnsureDir(dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("create hold directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create hold directory: %w", err)
	}
	if os.Geteuid() != 0 {
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("create hold directory %s: not a directory (a symlink?): %w", dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("create hold directory %s: %w", dir, err)
	}
	if st.Uid != 0 {
		return fmt.Errorf("create hold directory %s: belongs to uid %d, not root: %w", dir, st.Uid, safefile.ErrUntrusted)
	}
	if err := unix.Fchmod(fd, 0o777|unix.S_ISVTX); err != nil {
		return fmt.Errorf("create hold directory %s: %w", dir, err)
	}
	return nil
}

// WarnOnce returns a Reject function that logs each refused file once
// (again only when the reason changes), for an agent that lists the
// locks every second.
func WarnOnce(log *slog.Logger) func(name string, err error) {
	var mu sync.Mutex
	warned := map[string]string{}
	return func(name string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if warned[name] == err.Error() {
			return
		}
		if len(warned) > 1000 {
			clear(warned)
		}
		warned[name] = err.Error()
		log.Warn("ignoring an untrusted inhibit lock file", "file", name, "err", err)
	}
}

// Release removes a lock. Releasing a missing lock is not an error.
func (s Store) Release(id string) error {
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("release hold: %w", err)
	}
	return nil
}

func (s Store) path(id string) string { return filepath.Join(s.Dir, id+".json") }

// List returns the live locks (an unreadable lock file counts as live)
// and the stale ones (process gone, TTL over), oldest first. It does not
// remove anything.
func (s Store) List(now time.Time) (live, stale []Lock, err error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("list holds: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		l, err := s.read(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue // released meanwhile
		case errors.Is(err, safefile.ErrUntrusted) || errors.Is(err, ErrForeignProcess):
			if s.Reject != nil {
				s.Reject(name, err)
			}
			continue
		case err != nil:
			// A lock that cannot be read may be a real one (another
			// version, a torn write): it holds, like a failing hold source.
			live = append(live, Lock{ID: strings.TrimSuffix(name, ".json"), Reason: "unreadable lock file: " + err.Error()})
			continue
		}
		if s.alive(l, now) {
			live = append(live, l)
		} else {
			stale = append(stale, l)
		}
	}
	byCreated := func(ls []Lock) {
		sort.Slice(ls, func(i, j int) bool { return ls[i].Created.Before(ls[j].Created) })
	}
	byCreated(live)
	byCreated(stale)
	return live, stale, nil
}

// read reads and checks one lock file.
func (s Store) read(name string) (Lock, error) {
	path := filepath.Join(s.Dir, name)
	b, info, err := safefile.Read(path, MaxLockSize)
	if err != nil {
		return Lock{}, err
	}
	var l Lock
	if err := json.Unmarshal(b, &l); err != nil {
		return Lock{}, fmt.Errorf("read %s: %w", path, err)
	}
	if info.UID != 0 && l.PID != 0 {
		if owner, ok := procOwner(s.procRoot(), l.PID); ok && owner != info.UID {
			return Lock{}, fmt.Errorf("read %s: owned by uid %d, names pid %d of uid %d: %w", path, info.UID, l.PID, owner, ErrForeignProcess)
		}
	}
	l.Reason, l.Command = truncate(l.Reason, MaxTextLen), truncate(l.Command, MaxTextLen)
	return l, nil
}

// procOwner returns the owner of a process (its /proc directory's).
func procOwner(procRoot string, pid int) (uint32, bool) {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(procRoot, strconv.Itoa(pid)), &st); err != nil {
		return 0, false
	}
	return st.Uid, true
}

func (s Store) alive(l Lock, now time.Time) bool {
	if !l.Expires.IsZero() && !now.Before(l.Expires) {
		return false
	}
	if l.PID == 0 {
		return true
	}
	start, err := startTicks(s.procRoot(), l.PID)
	return err == nil && start == l.PIDStart
}

// Holds returns the live locks as policy holds.
func (s Store) Holds(now time.Time) ([]policy.Hold, error) {
	live, _, err := s.List(now)
	if err != nil {
		return nil, err
	}
	out := make([]policy.Hold, 0, len(live))
	for _, l := range live {
		name := l.Command
		if name == "" {
			name = l.ID
		}
		out = append(out, policy.Hold{Kind: policy.HoldInhibit, Name: name, Reason: l.Reason})
	}
	return out, nil
}

// startTicks reads a live (non-zombie) process's start time.
func startTicks(procRoot string, pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("read process %d: %w", pid, err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat of %d", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("parse stat of %d", pid)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d has exited", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Processes finds running processes whose command line matches one of
// the patterns and returns a hold for each pattern that matched.
func Processes(procRoot string, patterns []*regexp.Regexp) ([]policy.Hold, error) {
	if len(patterns) == 0 {
		return nil, nil
	}
	if procRoot == "" {
		procRoot = "/proc"
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	matched := make([]string, len(patterns))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
		for i, re := range patterns {
			if matched[i] == "" && re.MatchString(cmd) {
				matched[i] = fmt.Sprintf("pid %d: %s", pid, cmd)
			}
		}
	}
	var out []policy.Hold
	for i, m := range matched {
		if m != "" {
			out = append(out, policy.Hold{Kind: policy.HoldProcess, Name: patterns[i].String(), Reason: truncate(m, 200)})
		}
	}
	return out, nil
}

// Load returns a hold while the 1-minute load average is at or above
// threshold (threshold <= 0, NaN or +Inf: never). Every comparison is
// written so that NaN, for which every comparison is false, gives no hold.
func Load(procRoot string, threshold float64) ([]policy.Hold, error) {
	if !(threshold > 0) || math.IsInf(threshold, 1) {
		return nil, nil
	}
	if procRoot == "" {
		procRoot = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procRoot, "loadavg"))
	if err != nil {
		return nil, fmt.Errorf("read load average: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return nil, fmt.Errorf("parse load average %q", b)
	}
	l1, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return nil, fmt.Errorf("parse load average: %w", err)
	}
	if !(l1 >= threshold) {
		return nil, nil
	}
	return []policy.Hold{{Kind: policy.HoldLoad, Name: "load average", Reason: fmt.Sprintf("1-minute load %.2f >= %.2f", l1, threshold)}}, nil
}

// truncate cuts s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// Every wraps a hold source so that it is consulted at most once per
// interval (scanning every process's command line each second would
// cost more than the rest of the agent); in between, the last answer
// stands.
func Every(interval time.Duration, f func(now time.Time) ([]policy.Hold, error)) func(now time.Time) ([]policy.Hold, error) {
	var (
		last  time.Time
		holds []policy.Hold
		err   error
	)
	return func(now time.Time) ([]policy.Hold, error) {
		if last.IsZero() || now.Sub(last) >= interval || now.Before(last) {
			holds, err = f(now)
			last = now
		}
		return holds, err
	}
}
