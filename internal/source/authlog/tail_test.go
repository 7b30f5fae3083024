package authlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// tailHarness runs a FileTailer on a fake clock and steps it one poll at
// a time: nothing here sleeps.
type tailHarness struct {
	t      *testing.T
	clk    *clock.Fake
	tailer *FileTailer
	out    chan Event
	polled chan struct{}
	done   chan error
	cancel context.CancelFunc
}

func startTail(t *testing.T, path string, o FileOptions) *tailHarness {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC))
	o.Clock = clk
	h := &tailHarness{
		t:      t,
		clk:    clk,
		tailer: NewFileTailer(path, o),
		out:    make(chan Event, 100),
		polled: make(chan struct{}, 1),
		done:   make(chan error, 1),
	}
	h.tailer.afterPoll = func() { h.polled <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.tailer.Run(ctx, h.out) }()
	h.waitPoll() // the first poll, at start
	t.Cleanup(func() {
		cancel()
		for {
			select {
			case <-h.polled: // a poll racing the cancel
			case err := <-h.done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run = %v, want context.Canceled", err)
				}
				return
			}
		}
	})
	return h
}

func (h *tailHarness) waitPoll() {
	h.t.Helper()
	select {
	case <-h.polled:
	case err := <-h.done:
		h.t.Fatalf("Run returned %v", err)
	case <-time.After(10 * time.Second): // a safety net, not a wait
		h.t.Fatal("no poll within 10 s")
	}
}

// step advances the clock by one interval and waits for the poll, then
// returns the events it delivered.
func (h *tailHarness) step() []Event {
	h.t.Helper()
	h.clk.Advance(h.tailer.o.Interval)
	h.waitPoll()
	var evs []Event
	for {
		select {
		case ev := <-h.out:
			evs = append(evs, ev)
		default:
			return evs
		}
	}
}

// expectPorts checks the Accepted events by port.
func (h *tailHarness) expectPorts(evs []Event, ports ...int) {
	h.t.Helper()
	var got []int
	for _, e := range evs {
		got = append(got, e.Port)
	}
	if fmt.Sprint(got) != fmt.Sprint(ports) {
		h.t.Fatalf("events on ports %v, want %v", got, ports)
	}
}

func accepted(port int) string {
	return fmt.Sprintf("Accepted publickey for cwtest from 127.0.0.1 port %d ssh2: ED25519 SHA256:x\r\n", port)
}

func appendTo(t *testing.T, path string, lines ...string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, l := range lines {
		if _, err := f.WriteString(l); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTailFromEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd.log")
	appendTo(t, path, accepted(1), "Server listening on 127.0.0.1 port 22.\r\n")
	h := startTail(t, path, FileOptions{})
	h.expectPorts(h.step()) // what was there at start is skipped
	appendTo(t, path, accepted(2), "Connection from 127.0.0.1 port 3 on 127.0.0.1 port 22 rdomain \"\"\r\n")
	evs := h.step()
	h.expectPorts(evs, 2, 3)
	if evs[0].Kind != Accepted || evs[1].Kind != Preauth {
		t.Errorf("kinds %v %v", evs[0].Kind, evs[1].Kind)
	}
	if want := h.clk.Now(); !evs[0].Time.Equal(want) {
		t.Errorf("time %v, want the clock's %v", evs[0].Time, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if pos := h.tailer.Position(); pos.Offset != fi.Size() || pos.Inode == 0 {
		t.Errorf("position %+v, want offset %d", pos, fi.Size())
	}
}

func TestTailPartialLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd.log")
	appendTo(t, path, "")
	h := startTail(t, path, FileOptions{})
	line := accepted(7)
	appendTo(t, path, line[:20])
	h.expectPorts(h.step())
	if pos := h.tailer.Position(); pos.Offset != 0 {
		t.Errorf("position %d inside a partial line, want 0", pos.Offset)
	}
	appendTo(t, path, line[20:])
	h.expectPorts(h.step(), 7)
}

func TestTailOverlongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd.log")
	appendTo(t, path, "")
	h := startTail(t, path, FileOptions{})
	long := make([]byte, MaxLineBytes+100)
	for i := range long {
		long[i] = 'x'
	}
	appendTo(t, path, string(long))
	h.expectPorts(h.step())
	appendTo(t, path, string(long[:10])+accepted(1), accepted(2))
	h.expectPorts(h.step(), 2) // the overlong line ends at the first newline
}

// TestTailRotation covers rename-and-recreate with a writer that keeps
// the old file (sshd -E does), copytruncate, and delete-and-recreate.
func TestTailRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sshd.log")
	appendTo(t, path, "")
	h := startTail(t, path, FileOptions{RotatedGrace: time.Second})

	appendTo(t, path, accepted(1))
	h.expectPorts(h.step(), 1)

	// logrotate renames; sshd still writes to the renamed file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path+".1", accepted(2))
	h.expectPorts(h.step(), 2) // the path is missing: the old file is still followed
	appendTo(t, path+".1", accepted(3))
	appendTo(t, path, accepted(4)) // sshd restarted: the new file
	h.expectPorts(h.step(), 3, 4)  // the old file drained first
	appendTo(t, path+".1", accepted(5))
	appendTo(t, path, accepted(6))
	h.expectPorts(h.step(), 5, 6) // both followed within the grace
	for range 10 {                // one second of quiet in the old file
		h.step()
	}
	appendTo(t, path+".1", accepted(7))
	appendTo(t, path, accepted(8))
	h.expectPorts(h.step(), 8) // the old file is let go

	// copytruncate: the file shrinks.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, accepted(9))
	h.expectPorts(h.step(), 9)
	pos := h.tailer.Position()
	if fi, _ := os.Stat(path); pos.Offset != fi.Size() {
		t.Errorf("position %d after truncation, want %d", pos.Offset, fi.Size())
	}

	// Deleted, and a while later created again.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	h.expectPorts(h.step())
	h.expectPorts(h.step())
	appendTo(t, path, accepted(10))
	h.expectPorts(h.step(), 10)
}

func TestTailMissingAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd.log")
	h := startTail(t, path, FileOptions{})
	h.expectPorts(h.step())
	appendTo(t, path, accepted(1)) // a file that appears is read whole
	h.expectPorts(h.step(), 1)
}

func TestTailFromPosition(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd.log")
	appendTo(t, path, accepted(1))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	dev, ino, err := statIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	appendTo(t, path, accepted(2))

	h := startTail(t, path, FileOptions{Start: &Position{Dev: dev, Inode: ino, Offset: fi.Size()}})
	h.expectPorts(h.step(), 2) // written while we were away

	// A position in a file that has been rotated away since: the new file
	// is read from its start.
	other := filepath.Join(t.TempDir(), "sshd.log")
	appendTo(t, other, accepted(3), accepted(4))
	h2 := startTail(t, other, FileOptions{Start: &Position{Dev: dev, Inode: ino, Offset: fi.Size()}})
	h2.expectPorts(h2.step(), 3, 4)
}

func TestTailCancelWhileBlocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd.log")
	appendTo(t, path, "")
	clk := clock.NewFake(time.Unix(0, 0))
	tailer := NewFileTailer(path, FileOptions{Clock: clk})
	polled := make(chan struct{}, 10)
	tailer.afterPoll = func() { polled <- struct{}{} }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tailer.Run(ctx, make(chan Event)) }() // nobody reads
	<-polled
	appendTo(t, path, accepted(1))
	clk.Advance(DefaultInterval) // Run now blocks sending the event
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if pos := tailer.Position(); pos.Offset != 0 {
		t.Errorf("position %d past an undelivered line", pos.Offset)
	}
}

// TestTailRefusesUntrusted: a file whose lines anybody but root (or the
// agent's own user) could have written is refused at once, with
// ErrUntrustedLog, and nothing of it is read: a symlink, a directory, a
// FIFO or /dev/zero (which would otherwise block or burn a core), a file
// writable by its group or by others, a file in a directory anybody can
// write to.
func TestTailRefusesUntrusted(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		appendTo(t, p, accepted(1))
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := mk("good.log", 0o600)
	link := filepath.Join(dir, "link.log")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.log")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	inOpen := filepath.Join(open, "sshd.log")
	appendTo(t, inOpen, accepted(1))
	sticky := filepath.Join(dir, "sticky")
	if err := os.Mkdir(sticky, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	inSticky := filepath.Join(sticky, "sshd.log")
	appendTo(t, inSticky, accepted(1))
	for _, tc := range []struct {
		name, path string
		refused    bool
	}{
		{"root's file", good, false},
		{"in a sticky world-writable directory", inSticky, false},
		{"symlink", link, true},
		{"directory", dir, true},
		{"FIFO", fifo, true},
		{"/dev/zero", "/dev/zero", true},
		{"group-writable", mk("group.log", 0o620), true},
		{"world-writable", mk("world.log", 0o606), true},
		{"in a world-writable directory", inOpen, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out := make(chan Event, 10)
			tailer := NewFileTailer(tc.path, FileOptions{Start: &Position{}, Interval: time.Hour})
			tailer.afterPoll = cancel // one poll is enough
			err := tailer.Run(ctx, out)
			if tc.refused {
				if !errors.Is(err, ErrUntrustedLog) {
					t.Errorf("Run = %v, want ErrUntrustedLog", err)
				}
				if len(out) != 0 {
					t.Errorf("%d events from a refused file", len(out))
				}
				return
			}
			if !errors.Is(err, context.Canceled) || len(out) != 1 {
				t.Errorf("Run = %v with %d events, want the file followed", err, len(out))
			}
		})
	}
}

// TestTailRefusesUserFile: a real unprivileged user's file (the -E file
// of a listener they started, "-E /home/u/fake.log") is refused, and
// nothing they append to it becomes an event.
func TestTailRefusesUserFile(t *testing.T) {
	u := testproc.HostileUser(t)
	path := filepath.Join(u.Home, "fake-sshd.log")
	t.Cleanup(func() { os.Remove(path) })
	u.Run(t, fmt.Sprintf("rm -f %s; printf 'Accepted publickey for root from 127.0.0.1 port 5 ssh2: x\\r\\n' > %s; chmod 600 %s", path, path, path))
	out := make(chan Event, 10)
	err := NewFileTailer(path, FileOptions{Start: &Position{}}).Run(context.Background(), out)
	if !errors.Is(err, ErrUntrustedLog) || !strings.Contains(err.Error(), fmt.Sprintf("owned by uid %d", u.UID)) {
		t.Errorf("Run = %v, want ErrUntrustedLog naming uid %d", err, u.UID)
	}
	if len(out) != 0 {
		t.Errorf("%d events from the user's file", len(out))
	}
}

// TestTailReadsBoundedPerPoll: a poll reads at most MaxReadPerPoll, so a
// file that grows without end costs bounded work per interval.
func TestTailReadsBoundedPerPoll(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd.log")
	line := strings.Repeat("x", 1023) + "\n"
	appendTo(t, path, strings.Repeat(line, 3*MaxReadPerPoll/len(line)))
	h := startTail(t, path, FileOptions{Start: &Position{}})
	if off := h.tailer.Position().Offset; off == 0 || off > MaxReadPerPoll {
		t.Fatalf("after one poll at offset %d, want (0, %d]", off, MaxReadPerPoll)
	}
	h.step()
	h.step()
	h.step()
	if off := h.tailer.Position().Offset; off != int64(3*MaxReadPerPoll/len(line)*len(line)) {
		t.Errorf("after four polls at offset %d, want the end", off)
	}
}
