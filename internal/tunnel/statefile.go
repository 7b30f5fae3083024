package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/clock"
)

// StatusDir is the directory under the state directory holding one
// status file per running tunnel.
const StatusDir = "tunnels"

// StatusFile is what a running tunnel writes to
// STATE_DIR/tunnels/<host>.json.
type StatusFile struct {
	PID     int       `json:"pid"`
	Written time.Time `json:"written"`
	Status
	// Stale is set by ReadStatusFiles when PID is not running; it is
	// never written.
	Stale bool `json:"stale,omitempty"`
}

// StatusPath is the status file of host under dir (STATE_DIR/tunnels).
// Characters that cannot be in a file name are replaced by '_'.
func StatusPath(dir, host string) string {
	name := strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, host)
	if name == "" || name[0] == '.' {
		name = "_" + name
	}
	return filepath.Join(dir, name+".json")
}

// StatusWriter keeps the status files of a process's tunnels current:
// a state change is written at once, a keepalive RTT or a connection
// count at most every Every. Make one with NewStatusWriter, pass its Changed to each tunnel's
// Options.OnChange, then Run it.
type StatusWriter struct {
	Dir    string        // STATE_DIR/tunnels, created if missing
	PID    int           // default os.Getpid()
	Every  time.Duration // default 5 s
	Clock  clock.Clock   // default clock.Real
	Logger *slog.Logger  // default slog.Default

	kick  chan struct{}
	dirty chan struct{}
}

// NewStatusWriter returns a StatusWriter for dir (STATE_DIR/tunnels)
// with the defaults; set the other fields before Run.
func NewStatusWriter(dir string, log *slog.Logger) *StatusWriter {
	return &StatusWriter{Dir: dir, Logger: log, kick: make(chan struct{}, 1), dirty: make(chan struct{}, 1)}
}

// Changed is an Options.OnChange: it never blocks.
func (w *StatusWriter) Changed(urgent bool) {
	ch := w.dirty
	if urgent {
		ch = w.kick
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Run writes the files of tunnels until ctx ends, then removes them. A
// failed write is logged, never fatal: the tunnels matter more.
func (w *StatusWriter) Run(ctx context.Context, tunnels []*Tunnel) error {
	if w.PID == 0 {
		w.PID = os.Getpid()
	}
	if w.Every <= 0 {
		w.Every = 5 * time.Second
	}
	if w.Clock == nil {
		w.Clock = clock.Real{}
	}
	if w.Logger == nil {
		w.Logger = slog.Default()
	}
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		w.Logger.Warn("tunnel status files disabled", keyErr, err)
		<-ctx.Done()
		return nil
	}
	defer func() {
		for _, t := range tunnels {
			os.Remove(StatusPath(w.Dir, t.spec.Host))
		}
	}()
	tick := w.Clock.NewTicker(w.Every)
	defer tick.Stop()
	var pending bool
	failing := false
	write := func() {
		pending = false
		for _, t := range tunnels {
			f := StatusFile{PID: w.PID, Written: w.Clock.Now(), Status: t.Status()}
			err := atomicfile.WriteJSON(StatusPath(w.Dir, f.Host), f, 0o644)
			if err != nil && !failing {
				w.Logger.Warn("write tunnel status", keyErr, err)
			}
			failing = err != nil
		}
	}
	write()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
			write()
		case <-w.dirty:
			pending = true
		case <-tick.C():
			if pending {
				write()
			}
		}
	}
}

// ReadStatusFiles reads every status file in dir (STATE_DIR/tunnels),
// sorted by host, marking those whose process is gone as Stale. A
// missing dir is no files; an unreadable file is skipped and reported in
// the joined error.
func ReadStatusFiles(dir string) ([]StatusFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read tunnel status: %w", err)
	}
	var out []StatusFile
	var errs []error
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		var f StatusFile
		if err := atomicfile.ReadJSON(filepath.Join(dir, e.Name()), &f); err != nil {
			errs = append(errs, err)
			continue
		}
		f.Stale = !ProcessAlive(f.PID)
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Host < out[j].Host })
	return out, errors.Join(errs...)
}

// ProcessAlive reports whether a process with pid exists (signal 0; a
// process of another user counts as alive).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
