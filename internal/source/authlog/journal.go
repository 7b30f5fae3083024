package authlog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

var (
	// ErrNoJournalctl: the journalctl program is not installed.
	ErrNoJournalctl = errors.New("journalctl not found")
	// ErrNoJournal: no journal files exist (systemd-journald is not
	// running, as in containers whose PID 1 is not systemd).
	ErrNoJournal = errors.New("no systemd journal files")
)

// CursorFile is the name of the file, in JournalOptions.StateDir, that
// holds the cursor of the last journal entry Journal has delivered.
const CursorFile = "authlog-journal.cursor"

// DefaultJournalDirs are where journald keeps its files: volatile, then
// persistent.
var DefaultJournalDirs = []string{"/run/log/journal", "/var/log/journal"}

// DefaultIdentifiers are the syslog identifiers of sshd's lines: sshd up
// to OpenSSH 9.7, sshd-session from 9.8.
var DefaultIdentifiers = []string{"sshd", "sshd-session"}

const (
	defaultSaveEvery   = time.Second
	restartMin         = time.Second
	restartMax         = 30 * time.Second
	journalStopTimeout = 2 * time.Second
	stderrKeep         = 4 << 10
)

// JournalOptions configure a Journal.
type JournalOptions struct {
	// StateDir holds CursorFile, so that a restarted Journal resumes
	// after the last entry it delivered. Empty: no cursor is kept, and
	// each Run starts at the end of the journal.
	StateDir string
	// Command runs journalctl; arguments are appended. Default
	// {"journalctl"}.
	Command []string
	// JournalDirs are checked for journal files before journalctl is
	// started. Default DefaultJournalDirs; empty and non-nil: no check.
	JournalDirs []string
	// Identifiers are the SYSLOG_IDENTIFIER values asked for. Default
	// DefaultIdentifiers.
	Identifiers []string
	// Clock times restarts and cursor saves and stands in for entries
	// without a time. Default: the system clock.
	Clock clock.Clock
	// SaveEvery bounds how often the cursor file is written. Default 1 s.
	SaveEvery time.Duration
	// Logger receives restarts of journalctl. Default: none.
	Logger *slog.Logger
}

// Journal follows sshd's entries in the systemd journal by running
// journalctl -f -o json. It keeps its own cursor file, written after
// entries are delivered: an entry journalctl printed but Run had not
// delivered when it stopped is read again at the next start
// (at-least-once), where journalctl's --cursor-file would skip it.
type Journal struct {
	o JournalOptions

	// restarting, when set (tests), is called before waiting to restart.
	restarting func(wait time.Duration)
}

// NewJournal returns a Journal.
func NewJournal(o JournalOptions) *Journal {
	if len(o.Command) == 0 {
		o.Command = []string{"journalctl"}
	}
	if o.JournalDirs == nil {
		o.JournalDirs = DefaultJournalDirs
	}
	if len(o.Identifiers) == 0 {
		o.Identifiers = DefaultIdentifiers
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = defaultSaveEvery
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Journal{o: o}
}

// Args returns the journalctl arguments for a start after cursor ("":
// from the end of the journal).
func (j *Journal) Args(cursor string) []string {
	args := []string{
		"--follow", "--output=json", "--no-pager", "--quiet",
		// __CURSOR and __REALTIME_TIMESTAMP are always printed.
		// _UID, _EXE, _COMM and _SYSTEMD_UNIT are journald's own, which
		// the sender cannot choose: they tell sshd from `logger -t sshd`.
		"--output-fields=MESSAGE,SYSLOG_IDENTIFIER,_PID,SYSLOG_PID,_SOURCE_REALTIME_TIMESTAMP,_UID,_EXE,_COMM,_SYSTEMD_UNIT",
	}
	if cursor != "" {
		args = append(args, "--after-cursor="+cursor, "--no-tail")
	} else {
		args = append(args, "--lines=0")
	}
	for _, id := range j.o.Identifiers {
		args = append(args, "SYSLOG_IDENTIFIER="+id)
	}
	return args
}

// Check tells whether Run can start: journalctl is installed (else
// ErrNoJournalctl) and journal files exist (else ErrNoJournal).
func (j *Journal) Check() error {
	if _, err := exec.LookPath(j.o.Command[0]); err != nil {
		return fmt.Errorf("find %s: %w: %w", j.o.Command[0], ErrNoJournalctl, err)
	}
	if len(j.o.JournalDirs) == 0 {
		return nil
	}
	for _, d := range j.o.JournalDirs {
		if hasJournalFiles(d) {
			return nil
		}
	}
	return fmt.Errorf("find journal files in %s: %w", strings.Join(j.o.JournalDirs, ", "), ErrNoJournal)
}

// hasJournalFiles tells whether dir or its subdirectories (one per
// machine id or namespace) hold *.journal files.
func hasJournalFiles(dir string) bool {
	for _, pat := range []string{"*.journal", "*/*.journal"} {
		if m, _ := filepath.Glob(filepath.Join(dir, pat)); len(m) > 0 {
			return true
		}
	}
	return false
}

// Run checks the journal (see Check), then sends an event for every sshd
// entry until ctx is done, and returns ctx.Err(). When journalctl exits
// it is restarted after the last cursor, waiting 1 s, doubling to 30 s
// while it keeps failing quickly without printing anything. Run blocks
// while out is full.
func (j *Journal) Run(ctx context.Context, out chan<- Event) error {
	if err := j.Check(); err != nil {
		return fmt.Errorf("start journal source: %w", err)
	}
	cursor, err := j.loadCursor()
	if err != nil {
		return err
	}
	c := &cursorSaver{j: j, cursor: cursor, saved: cursor}
	defer c.save()
	wait := restartMin
	for {
		started := j.o.Clock.Now()
		got, err := j.follow(ctx, c, out)
		c.save()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		healthy := got || j.o.Clock.Now().Sub(started) >= restartMax
		if healthy {
			wait = restartMin
		} else if c.cursor != "" && c.cursor == cursor && strings.Contains(err.Error(), "cursor") {
			// journalctl rejected the cursor read at start ("Failed to
			// seek to cursor: Invalid argument": a corrupt file, or one
			// from another journal). Start at the end instead.
			j.o.Logger.Warn("journalctl rejected the saved cursor, dropping it", "error", err)
			c.cursor, cursor = "", ""
		}
		j.o.Logger.Warn("journalctl stopped, restarting", "error", err, "in", wait)
		timer := j.o.Clock.NewTimer(wait)
		if j.restarting != nil {
			j.restarting(wait)
		}
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C():
		}
		if !healthy {
			wait = min(2*wait, restartMax)
		}
	}
}

// follow runs journalctl once, until it exits or ctx is done, and tells
// whether it printed any entry.
func (j *Journal) follow(ctx context.Context, c *cursorSaver, out chan<- Event) (got bool, err error) {
	args := append(append([]string(nil), j.o.Command[1:]...), j.Args(c.cursor)...)
	cmd := exec.CommandContext(ctx, j.o.Command[0], args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = journalStopTimeout
	var stderr tailBuffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return false, fmt.Errorf("run journalctl: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("run journalctl: %w", err)
	}
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(stdout, 64<<10)
		for {
			line, err := br.ReadString('\n')
			if len(line) > 0 && line[len(line)-1] == '\n' {
				select {
				case lines <- line:
				case <-ctx.Done():
					readErr <- ctx.Err()
					return
				}
			}
			if err != nil {
				readErr <- err
				return
			}
		}
	}()
	flush := j.o.Clock.NewTicker(j.o.SaveEvery)
	defer flush.Stop()
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-flush.C():
			c.save()
		case line, ok := <-lines:
			if !ok {
				break loop
			}
			got = true
			ev, cur, ok := parseJournalJSON(strings.TrimRight(line, "\r\n"), j.o.Clock.Now())
			if ok {
				select {
				case out <- ev:
				case <-ctx.Done():
					break loop
				}
			}
			if cur != "" {
				c.cursor = cur
				if j.o.Clock.Now().Sub(c.savedAt) >= j.o.SaveEvery {
					c.save()
				}
			}
		}
	}
	// Stop journalctl (when ctx is done, CommandContext signals it) and
	// collect it; the reader ends with the pipe.
	if ctx.Err() == nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	waitErr := cmd.Wait()
	for range lines { // drain, so that the reader can end
	}
	if rerr := <-readErr; rerr != nil && !errors.Is(rerr, io.EOF) && !errors.Is(rerr, os.ErrClosed) && !errors.Is(rerr, context.Canceled) {
		runErr = fmt.Errorf("read journalctl output: %w", rerr)
	}
	if runErr == nil && waitErr != nil {
		runErr = fmt.Errorf("run journalctl: %w: %s", waitErr, strings.TrimSpace(stderr.String()))
	}
	if runErr == nil {
		runErr = fmt.Errorf("run journalctl: exited: %s", strings.TrimSpace(stderr.String()))
	}
	return got, runErr
}

// loadCursor reads the saved cursor, "" when there is none.
func (j *Journal) loadCursor() (string, error) {
	if j.o.StateDir == "" {
		return "", nil
	}
	b, err := os.ReadFile(filepath.Join(j.o.StateDir, CursorFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read journal cursor: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// cursorSaver writes the cursor file when the cursor moved.
type cursorSaver struct {
	j       *Journal
	cursor  string // of the last entry handled
	saved   string
	savedAt time.Time
}

func (c *cursorSaver) save() {
	if c.j.o.StateDir == "" || c.cursor == c.saved {
		return
	}
	c.savedAt = c.j.o.Clock.Now()
	if err := writeFileAtomic(filepath.Join(c.j.o.StateDir, CursorFile), []byte(c.cursor+"\n")); err != nil {
		c.j.o.Logger.Warn("cannot save the journal cursor", "error", err)
		return
	}
	c.saved = c.cursor
}

// writeFileAtomic replaces path with data through a temporary file and a
// rename, so that a crash leaves the old or the new content.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// tailBuffer keeps the last stderrKeep bytes written to it.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > stderrKeep {
		t.b = append(t.b[:0], t.b[len(t.b)-stderrKeep:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
