package openvpntest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ErrTimeout is wrapped by the errors of bounded waits that ran out.
var ErrTimeout = errors.New("timed out")

// Line is one line a process printed, with the time the harness read it.
type Line struct {
	At   time.Time
	Text string
}

// processLog collects the lines of a process's output as they come.
type processLog struct {
	mu      sync.Mutex
	lines   []Line
	changed chan struct{} // closed and replaced on every new line
	closed  bool          // the output reached EOF
}

func newProcessLog() *processLog { return &processLog{changed: make(chan struct{})} }

// consume reads r line by line until EOF.
func (l *processLog) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.add(Line{At: time.Now(), Text: sc.Text()})
	}
	l.mu.Lock()
	l.closed = true
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *processLog) add(ln Line) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, ln)
	close(l.changed)
	l.changed = make(chan struct{})
}

// Lines returns a copy of the lines so far.
func (l *processLog) Lines() []Line {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Line(nil), l.lines...)
}

// String returns the output so far.
func (l *processLog) String() string {
	var b strings.Builder
	for _, ln := range l.Lines() {
		b.WriteString(ln.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// waitFor waits at most timeout for a line from index from on that
// contains one of subs, and returns it and the index of the sub.
func (l *processLog) waitFor(from int, timeout time.Duration, subs ...string) (Line, int, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		for _, ln := range l.lines[min(from, len(l.lines)):] {
			for i, s := range subs {
				if strings.Contains(ln.Text, s) {
					l.mu.Unlock()
					return ln, i, nil
				}
			}
		}
		from = len(l.lines)
		closed, changed := l.closed, l.changed
		l.mu.Unlock()
		if closed {
			return Line{}, -1, fmt.Errorf("wait for %q: output ended", subs)
		}
		select {
		case <-changed:
		case <-timer.C:
			return Line{}, -1, fmt.Errorf("wait %v for %q: %w", timeout, subs, ErrTimeout)
		}
	}
}

// tail returns at most the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
