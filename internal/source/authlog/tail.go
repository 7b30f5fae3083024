package authlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/safefile"
)

// DefaultInterval is how often FileTailer looks at its file.
const DefaultInterval = 100 * time.Millisecond

// DefaultRotatedGrace is how long FileTailer keeps reading a file renamed
// away by log rotation once the new file has received data.
const DefaultRotatedGrace = time.Minute

// MaxReadPerPoll bounds what one poll reads of a file: a log that grows
// faster than 10 MiB a second (at the default interval) is read behind,
// never with a whole core.
const MaxReadPerPoll = 1 << 20

// ErrUntrustedLog: the file at the path is not one that only root (or
// the user the agent runs as) can write. Its lines could be anybody's:
// "Accepted publickey for root" appended by a user would become a root
// session. It matches fs.ErrPermission too.
var ErrUntrustedLog = fmt.Errorf("sshd log not trusted: %w", fs.ErrPermission)

// CheckFile tells whether FileTailer would follow the file at path: nil
// when it is trusted (see openTrusted) or missing (it is waited for),
// else an error wrapping ErrUntrustedLog or the open error.
func CheckFile(path string) error {
	f, err := openTrusted(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// openTrusted opens path for reading if it is a file whose lines can be
// believed: opened without following a symlink (O_NOFOLLOW) or blocking
// on a FIFO or device (O_NONBLOCK), a regular file, owned by root or by
// the user the agent runs as, writable by nobody else (no group or other
// write bit), in a directory that others cannot write to, or that has the
// sticky bit (where nobody can replace another's file). A user can only
// create files they own in a directory, which are refused; so a log path
// in a shared directory is safe too.
func openTrusted(path string) (*os.File, error) {
	f, info, err := safefile.Open(path)
	if errors.Is(err, safefile.ErrUntrusted) {
		return nil, fmt.Errorf("open sshd log %s: %w: %w", path, ErrUntrustedLog, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open sshd log: %w", err)
	}
	var why string
	switch {
	case info.UID != 0 && info.UID != uint32(os.Geteuid()):
		why = fmt.Sprintf("owned by uid %d", info.UID)
	case info.Mode&0o022 != 0:
		why = fmt.Sprintf("writable by group or others (mode %o)", info.Mode&0o7777)
	default:
		var dst unix.Stat_t
		dir := filepath.Dir(path)
		if err := unix.Stat(dir, &dst); err != nil {
			why = "directory unreadable: " + err.Error()
		} else if dst.Mode&0o002 != 0 && dst.Mode&unix.S_ISVTX == 0 {
			why = "in " + dir + ", which anybody can write to"
		}
	}
	if why != "" {
		f.Close()
		return nil, fmt.Errorf("open sshd log %s: %w: %s", path, ErrUntrustedLog, why)
	}
	return f, nil
}

// Position is where a FileTailer is in its file: the file's identity and
// the offset after the last whole line read. Save it to resume there.
type Position struct {
	Dev    uint64 `json:"dev"`
	Inode  uint64 `json:"inode"`
	Offset int64  `json:"offset"`
}

// FileOptions configure a FileTailer. The zero value tails from the end
// of the file, every 100 ms of the system clock.
type FileOptions struct {
	// Clock times the polls and stamps lines without a time of their own.
	// Default: the system clock.
	Clock clock.Clock
	// Interval between polls. Default DefaultInterval.
	Interval time.Duration
	// Start is where to begin. Nil: the end of the file as Run finds it.
	// When the file at the path is no longer the one Start names (it was
	// rotated meanwhile), the new file is read from its beginning, and
	// the lines still unread in the old one are lost.
	Start *Position
	// RotatedGrace: a file renamed or deleted away is read as well as the
	// new one until the new one has received data and the old one has
	// been quiet this long. sshd opens its -E file once: until it is
	// restarted (or sent SIGHUP, which re-executes it), it and every
	// connection process it forked keep writing to the renamed file.
	// Default DefaultRotatedGrace.
	RotatedGrace time.Duration
	// Logger receives notices about rotation and truncation. Default:
	// none.
	Logger *slog.Logger
}

// FileTailer follows a log file like tail -F: it notices truncation (the
// size drops below what was read: copytruncate) and replacement (the path
// names another inode: rename and recreate, or delete and recreate), and
// waits for a missing file to appear. It polls; the delay from a line's
// write to its event is at most one Interval plus the time to parse.
type FileTailer struct {
	path string
	o    FileOptions

	mu  sync.Mutex
	pos Position

	// afterPoll, when set (tests), is called after each poll.
	afterPoll func()
}

// NewFileTailer returns a FileTailer for the file at path.
func NewFileTailer(path string, o FileOptions) *FileTailer {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.RotatedGrace <= 0 {
		o.RotatedGrace = DefaultRotatedGrace
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &FileTailer{path: path, o: o}
}

// Position returns the position after the last whole line of the current
// file that Run has delivered (or skipped as not sshd's).
func (t *FileTailer) Position() Position {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pos
}

// followed is an open file being read.
type followed struct {
	f        *os.File
	dev, ino uint64
	off      int64  // next byte to read
	line     []byte // bytes read after the last newline
	skipping bool   // the current line is too long: drop it
	gotData  bool
	lastData time.Time
}

// Run follows the file and sends an event for every sshd line appended to
// it until ctx is done, then returns ctx.Err(). It fails when the file
// exists but cannot be opened or read, and with ErrUntrustedLog when it
// (or a file that replaced it) is not root's alone (see openTrusted); a
// missing file is waited for. A poll reads at most MaxReadPerPoll.
// Run blocks while out is full.
func (t *FileTailer) Run(ctx context.Context, out chan<- Event) error {
	r := &tailRun{t: t, ctx: ctx, out: out, first: true}
	defer r.close()
	// The ticker first: the polls then run on the clock from Run's start,
	// however long the first took (and a fake clock moved during it is
	// not missed).
	tick := t.o.Clock.NewTicker(t.o.Interval)
	defer tick.Stop()
	if err := r.poll(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C():
		}
		if err := r.poll(); err != nil {
			return err
		}
	}
}

// tailRun is the state of one Run.
type tailRun struct {
	t       *FileTailer
	ctx     context.Context
	out     chan<- Event
	cur     *followed // the file at the path
	old     *followed // the file it replaced, still being drained
	first   bool      // no file opened yet in this Run
	missing bool      // the path was missing at the last poll
	buf     []byte
}

func (r *tailRun) close() {
	for _, f := range []*followed{r.cur, r.old} {
		if f != nil {
			f.f.Close()
		}
	}
}

// poll reads what was appended, following rotation and truncation.
func (r *tailRun) poll() error {
	defer func() {
		if r.t.afterPoll != nil {
			r.t.afterPoll()
		}
	}()
	log := r.t.o.Logger
	now := r.t.o.Clock.Now()
	if r.cur != nil {
		dev, ino, err := statIdentity(r.t.path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			// Renamed or deleted; keep reading it until a new file comes.
		case err != nil:
			return fmt.Errorf("stat sshd log: %w", err)
		case dev != r.cur.dev || ino != r.cur.ino:
			log.Info("sshd log replaced, following the new file", "path", r.t.path)
			if err := r.read(r.cur, true); err != nil {
				return err
			}
			if r.old != nil {
				if err := r.read(r.old, false); err != nil {
					return err
				}
				r.old.f.Close()
			}
			r.old, r.cur = r.cur, nil
			r.old.lastData = now
		}
	}
	if r.cur == nil {
		if err := r.open(); err != nil {
			return err
		}
	}
	if r.old != nil {
		if err := r.read(r.old, false); err != nil {
			return err
		}
		if r.cur != nil && r.cur.gotData && now.Sub(r.old.lastData) >= r.t.o.RotatedGrace {
			log.Info("stopped reading the rotated sshd log", "path", r.t.path)
			r.old.f.Close()
			r.old = nil
		}
	}
	if r.cur != nil {
		return r.read(r.cur, true)
	}
	return nil
}

// open opens the file at the path, if there is one, and decides where to
// start reading it.
func (r *tailRun) open() error {
	f, err := openTrusted(r.t.path)
	if errors.Is(err, fs.ErrNotExist) {
		if !r.missing {
			r.t.o.Logger.Info("sshd log missing, waiting for it", "path", r.t.path)
		}
		r.missing, r.first = true, false
		return nil
	}
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat sshd log: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		f.Close()
		return fmt.Errorf("stat sshd log %s: no inode", r.t.path)
	}
	fl := &followed{f: f, dev: uint64(st.Dev), ino: st.Ino}
	if r.first {
		// The file found at start: from the saved position or the end.
		switch s := r.t.o.Start; {
		case s == nil:
			fl.off = fi.Size()
		case s.Dev == fl.dev && s.Inode == fl.ino && s.Offset <= fi.Size():
			fl.off = s.Offset
		}
	}
	// A file that appears later is new: read all of it.
	r.first, r.missing = false, false
	r.cur = fl
	r.setPos(fl, fl.off)
	return nil
}

// read reads f to its end and delivers its whole lines. When isCur, the
// position follows it.
func (r *tailRun) read(f *followed, isCur bool) error {
	fi, err := f.f.Stat()
	if err != nil {
		return fmt.Errorf("stat sshd log: %w", err)
	}
	if fi.Size() < f.off {
		r.t.o.Logger.Info("sshd log truncated, reading it from the start", "path", r.t.path, "size", fi.Size(), "offset", f.off)
		f.off, f.line, f.skipping = 0, f.line[:0], false
		if isCur {
			r.setPos(f, 0)
		}
	}
	if r.buf == nil {
		r.buf = make([]byte, 32<<10)
	}
	for budget := MaxReadPerPoll; budget > 0; budget -= len(r.buf) {
		n, err := f.f.ReadAt(r.buf, f.off)
		if n > 0 {
			f.gotData = true
			f.lastData = r.t.o.Clock.Now()
			if derr := r.deliver(f, r.buf[:n], isCur); derr != nil {
				return derr
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read sshd log: %w", err)
		}
	}
	return nil // the rest at the next poll
}

// deliver splits data, read at f.off, into lines and sends their events.
func (r *tailRun) deliver(f *followed, data []byte, isCur bool) error {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			f.off += int64(len(data))
			if !f.skipping {
				f.line = append(f.line, data...)
				if len(f.line) > MaxLineBytes {
					f.line, f.skipping = f.line[:0], true
				}
			}
			return nil
		}
		chunk := data[:i]
		data = data[i+1:]
		f.off += int64(i + 1)
		if f.skipping {
			f.skipping = false
		} else {
			line := string(chunk)
			if len(f.line) > 0 {
				line = string(append(f.line, chunk...))
				f.line = f.line[:0]
			}
			if ev, ok := ParseLine(line, r.t.o.Clock.Now()); ok {
				select {
				case r.out <- ev:
				case <-r.ctx.Done():
					return r.ctx.Err()
				}
			}
		}
		if isCur {
			r.setPos(f, f.off)
		}
	}
	return nil
}

func (r *tailRun) setPos(f *followed, off int64) {
	r.t.mu.Lock()
	r.t.pos = Position{Dev: f.dev, Inode: f.ino, Offset: off}
	r.t.mu.Unlock()
}

// statIdentity returns the device and inode of the file at path.
func statIdentity(path string) (dev, ino uint64, err error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	return uint64(st.Dev), st.Ino, nil
}
