package hold

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// fakeTags is a TagReader answering what the test sets.
type fakeTags struct {
	mu    sync.Mutex
	value string
	err   error
	reads int
	// block, when set, makes ReadTag wait for its context (a metadata
	// service that hangs); entered is told when a read starts.
	block   bool
	entered chan struct{}
}

func (f *fakeTags) set(value string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.value, f.err = value, err
}

func (f *fakeTags) ReadTag(ctx context.Context) (string, error) {
	f.mu.Lock()
	f.reads++
	v, err, block, entered := f.value, f.err, f.block, f.entered
	f.mu.Unlock()
	if entered != nil {
		entered <- struct{}{}
	}
	if block {
		<-ctx.Done()
		return "", fmt.Errorf("read instance metadata: %w", ctx.Err())
	}
	return v, err
}

func (f *fakeTags) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

// logBuffer collects log lines.
type logBuffer struct{ testproc.Buffer }

func (l *logBuffer) count(level string) int { return strings.Count(l.String(), "level="+level) }

// newStartHold returns a start hold on a fake clock at t0 (booted an hour
// before, clock.FakeBootElapsed), its reader and its log.
func newStartHold(t *testing.T, max time.Duration) (*StartHold, *fakeTags, *clock.Fake, *logBuffer) {
	t.Helper()
	clk := clock.NewFake(t0)
	tags := &fakeTags{err: ErrTagAbsent}
	logs := &logBuffer{}
	h := NewStartHold(StartHoldOptions{Reader: tags, Clock: clk, Boot: t0.Add(-clock.FakeBootElapsed), Max: max,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return h, tags, clk, logs
}

func holdsAt(t *testing.T, h *StartHold, now time.Time) []policy.Hold {
	t.Helper()
	hs, err := h.Holds(now)
	if err != nil {
		t.Fatalf("Holds: %v", err)
	}
	return hs
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func TestStartHoldActiveThenExpired(t *testing.T) {
	h, tags, clk, logs := newStartHold(t, 2*time.Hour) // the cap: t0+1h
	until := t0.Add(10 * time.Minute)
	tags.set(stamp(until), nil)
	h.Refresh(t.Context())
	hs := holdsAt(t, h, t0)
	if len(hs) != 1 || hs[0].Kind != policy.HoldStart || hs[0].Name != StartHoldTag || hs[0].Until == nil || !hs[0].Until.Equal(until) {
		t.Fatalf("holds %+v, want a start hold until %v", hs, until)
	}
	if want := "until 2026-11-21T12:10:00Z (instance tag connwatch:hold-until)"; hs[0].Reason != want {
		t.Errorf("reason %q, want %q", hs[0].Reason, want)
	}
	if hs := holdsAt(t, h, until.Add(-time.Nanosecond)); len(hs) != 1 {
		t.Errorf("a moment before the end: %v", hs)
	}
	if hs := holdsAt(t, h, until); len(hs) != 0 {
		t.Errorf("at the end: %v", hs)
	}
	// Read again after the end: no warning that the time is past, the
	// hold ended as it should.
	clk.Set(until.Add(30 * time.Second))
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 0 {
		t.Errorf("after the end: %v", hs)
	}
	if n := logs.count("WARN"); n != 0 || !strings.Contains(logs.String(), "start hold ended") {
		t.Errorf("%d warnings; log:\n%s", n, logs)
	}
}

// A tag far ahead keeps the machine up start_hold_max after boot, no
// longer, with one warning.
func TestStartHoldCapped(t *testing.T) {
	h, tags, clk, logs := newStartHold(t, clock.FakeBootElapsed+10*time.Minute) // the cap: t0+10m
	tags.set("2099-01-01T00:00:00Z", nil)
	h.Refresh(t.Context())
	hs := holdsAt(t, h, t0)
	if len(hs) != 1 || !hs[0].Until.Equal(t0.Add(10*time.Minute)) || !strings.Contains(hs[0].Reason, "capped at start_hold_max 1h10m0s after boot") {
		t.Fatalf("holds %+v, want one until t0+10m, capped", hs)
	}
	// The end stays put between reads, whenever the loop asks (it
	// publishes the holds, and a moving end would rewrite its view).
	if a, b := holdsAt(t, h, t0.Add(time.Millisecond)), holdsAt(t, h, t0.Add(time.Second)); len(a) != 1 || len(b) != 1 || !a[0].Until.Equal(*b[0].Until) {
		t.Errorf("the capped end moved between two looks: %+v, %+v", a, b)
	}
	clk.Advance(5 * time.Minute)
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 1 {
		t.Errorf("before the cap: %v", hs)
	}
	clk.Advance(5 * time.Minute)
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 0 {
		t.Errorf("at the cap: %v", hs)
	}
	if n := logs.count("WARN"); n != 1 {
		t.Errorf("%d warnings, want 1; log:\n%s", n, logs)
	}
	// A wall-clock step back does not bring the hold back: the cap is
	// measured on the elapsed time since boot.
	clk.StepWall(-time.Hour)
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 0 {
		t.Errorf("after stepping the wall clock back an hour: %+v", hs)
	}
}

// Without the elapsed time since boot the cap counts from the boot time.
func TestStartHoldCapByBootTime(t *testing.T) {
	tags := &fakeTags{value: "2099-01-01T00:00:00Z"}
	h := NewStartHold(StartHoldOptions{Reader: tags, Clock: noElapsed{clock.NewFake(t0)}, Boot: t0.Add(-30 * time.Minute), Max: time.Hour,
		Logger: slog.New(slog.DiscardHandler)})
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, t0); len(hs) != 1 || !hs[0].Until.Equal(t0.Add(30*time.Minute)) {
		t.Errorf("holds %+v, want one until boot+1h", hs)
	}
}

type noElapsed struct{ *clock.Fake }

func (noElapsed) Elapsed() time.Duration { return 0 }

// Values that are no start hold hold nothing and are warned about once,
// escaped and cut.
func TestStartHoldBadValues(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		want        []string // in the log
		notWant     string
	}{
		{"past", stamp(t0.Add(-time.Minute)), []string{"in the past", "2026-11-21T11:59:00Z"}, ""},
		{"exactly now", stamp(t0), []string{"in the past"}, ""},
		{"not a time", "tomorrow", []string{"RFC 3339", "tomorrow"}, ""},
		{"no zone", "2026-11-21T12:10:00", []string{"RFC 3339"}, ""},
		{"empty", "", []string{"RFC 3339"}, ""},
		{"overlong", "2026-11-21T12:10:00Z" + strings.Repeat(" ", 60), []string{"longer than 64 bytes"}, ""},
		{"huge", strings.Repeat("A", 5000), []string{"longer than 64 bytes", strings.Repeat("A", 64) + "…"}, strings.Repeat("A", 65)},
		{"escape", "2026-11-21T12:10:00Z\x1b[2J", []string{"control character", `\x1b[2J`}, "\x1b"},
		{"newline", "2026-11-21T12:10:00Z\nlevel=ERROR fake", []string{"control character", `\n`}, "\nlevel=ERROR"},
		{"bidi", "2026-11-21T12:10:00Z\u202e", []string{"not printable ASCII", `\u202e`}, "\u202e"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h, tags, clk, logs := newStartHold(t, 2*time.Hour)
			tags.set(tt.value, nil)
			for range 3 {
				h.Refresh(t.Context())
				if hs := holdsAt(t, h, clk.Now()); len(hs) != 0 {
					t.Fatalf("value %q holds: %+v", tt.value, hs)
				}
				clk.Advance(30 * time.Second)
			}
			out := logs.String()
			if n := logs.count("WARN"); n != 1 {
				t.Errorf("%d warnings, want 1; log:\n%s", n, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("log lacks %q:\n%s", w, out)
				}
			}
			if tt.notWant != "" && strings.Contains(out, tt.notWant) {
				t.Errorf("log has %q:\n%s", tt.notWant, out)
			}
		})
	}
}

func TestParseHoldUntil(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Time
	}{
		{"2026-12-05T22:10:00Z", time.Date(2026, 12, 5, 22, 10, 0, 0, time.UTC)},
		{"2026-12-05T23:10:00+01:00", time.Date(2026, 12, 5, 22, 10, 0, 0, time.UTC)},
		{"2026-12-05T22:10:00.5Z", time.Date(2026, 12, 5, 22, 10, 0, 5e8, time.UTC)},
	} {
		got, err := ParseHoldUntil(tt.in)
		if err != nil || !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("ParseHoldUntil(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "now", "2026-12-05 22:10:00Z", "2026-12-05T22:10:00Z ", "2026-13-05T22:10:00Z", strings.Repeat("9", 65)} {
		if _, err := ParseHoldUntil(in); !errors.Is(err, ErrStartHoldValue) {
			t.Errorf("ParseHoldUntil(%q): %v, want ErrStartHoldValue", in, err)
		}
	}
}

// Tags not served by the metadata service: no hold, one warning however
// often the tag is read.
func TestStartHoldTagsDisabledWarnsOnce(t *testing.T) {
	h, tags, clk, logs := newStartHold(t, time.Hour)
	tags.set("", fmt.Errorf("%w: enable them with `aws ec2 modify-instance-metadata-options --instance-id i-0123456789abcdef0 --instance-metadata-tags enabled`", ErrTagsDisabled))
	for range 5 {
		h.Refresh(t.Context())
		clk.Advance(30 * time.Second)
	}
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 0 {
		t.Errorf("holds %v", hs)
	}
	if n := logs.count("WARN"); n != 1 || !strings.Contains(logs.String(), "modify-instance-metadata-options") {
		t.Errorf("%d warnings, want 1 saying how to enable tags; log:\n%s", n, logs)
	}
	// No tag at all is not worth a warning.
	h, tags, _, logs = newStartHold(t, time.Hour)
	tags.set("", fmt.Errorf("read instance tag: %w", ErrTagAbsent))
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, t0); len(hs) != 0 || logs.count("WARN") != 0 {
		t.Errorf("no tag: holds %v; log:\n%s", hs, logs)
	}
}

// A read that fails after one that found a hold keeps that hold until
// its end; with no successful read ever, nothing holds.
func TestStartHoldUnknownState(t *testing.T) {
	h, tags, clk, logs := newStartHold(t, 2*time.Hour)
	until := t0.Add(3 * time.Minute)
	tags.set(stamp(until), nil)
	h.Refresh(t.Context())
	tags.set("", errors.New("read instance metadata tags/instance/connwatch:hold-until: 500 Internal Server Error"))
	for i := range 4 {
		clk.Advance(30 * time.Second)
		h.Refresh(t.Context())
		if hs := holdsAt(t, h, clk.Now()); len(hs) != 1 || !hs[0].Until.Equal(until) {
			t.Fatalf("failed read %d: holds %+v, want the one read before", i, hs)
		}
	}
	clk.Set(until)
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, until); len(hs) != 0 {
		t.Errorf("after the end: %v", hs)
	}
	if n := logs.count("WARN"); n != 1 || !strings.Contains(logs.String(), "keeping the start hold read before") {
		t.Errorf("%d warnings, want 1; log:\n%s", n, logs)
	}
	// Readable again: the tag's new answer counts.
	tags.set("", ErrTagAbsent)
	h.Refresh(t.Context())
	if !strings.Contains(logs.String(), "can be read again") {
		t.Errorf("recovery not logged:\n%s", logs)
	}

	// Never read: no hold, and the log says why.
	h, tags, _, logs = newStartHold(t, 2*time.Hour)
	tags.set("", context.DeadlineExceeded)
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, t0); len(hs) != 0 {
		t.Errorf("never read: holds %v", hs)
	}
	if !strings.Contains(logs.String(), "no start hold until it is read") {
		t.Errorf("log:\n%s", logs)
	}
}

// The tag removed (or rewritten) while a hold lasts: the new answer counts.
func TestStartHoldTagChanges(t *testing.T) {
	h, tags, _, _ := newStartHold(t, 2*time.Hour)
	tags.set(stamp(t0.Add(10*time.Minute)), nil)
	h.Refresh(t.Context())
	tags.set(stamp(t0.Add(20*time.Minute)), nil)
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, t0); len(hs) != 1 || !hs[0].Until.Equal(t0.Add(20*time.Minute)) {
		t.Errorf("rewritten: %+v", hs)
	}
	tags.set("", ErrTagAbsent)
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, t0); len(hs) != 0 {
		t.Errorf("removed: %+v", hs)
	}
}

// Run reads at once and then every 30 s of the clock, not more often;
// start_hold_max 0 reads nothing, holds nothing and arms no timer, and
// turning it on reads at once.
func TestStartHoldRunRate(t *testing.T) {
	h, tags, clk, logs := newStartHold(t, 0)
	tags.set(stamp(t0.Add(time.Hour)), nil)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	armed := func(at time.Time) {
		t.Helper()
		testproc.WaitFor(t, "the timer armed at "+at.Sub(t0).String(), 10*time.Second, func() bool {
			d, ok := clk.NextDeadline()
			return ok && d.Equal(at)
		})
	}
	armed(t0)
	clk.Advance(0)
	// Off: no timer at all once the first one has fired.
	testproc.WaitFor(t, "asleep while off", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "start hold is off")
	})
	for range 4 {
		clk.Advance(DefaultStartHoldEvery)
		if d, ok := clk.NextDeadline(); ok {
			t.Fatalf("start_hold_max 0: a timer armed for %s", d.Sub(t0))
		}
	}
	if n := tags.count(); n != 0 {
		t.Errorf("start_hold_max 0: %d reads", n)
	}
	h.mu.Lock()
	h.until = t0.Add(time.Hour) // as if read before it was turned off
	h.mu.Unlock()
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 0 {
		t.Errorf("start_hold_max 0: holds %v", hs)
	}

	h.SetMax(2 * time.Hour)
	testproc.WaitFor(t, "a read once turned on", 10*time.Second, func() bool { return tags.count() == 1 })
	start := clk.Now()
	armed(start.Add(DefaultStartHoldEvery))
	for i := range 20 {
		clk.Advance(5 * time.Second)
		if i%6 == 5 {
			armed(clk.Now().Add(DefaultStartHoldEvery))
		}
	}
	// 100 s: reads at 30, 60 and 90 s besides the first.
	testproc.WaitFor(t, "4 reads", 10*time.Second, func() bool { return tags.count() == 4 })
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 1 {
		t.Errorf("holds %v", hs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if n := tags.count(); n != 4 {
		t.Errorf("%d reads in 100 s, want 4", n)
	}
}

// A metadata service that hangs: Holds answers at once while a read
// waits, and the read ends at its timeout.
func TestStartHoldNeverWaits(t *testing.T) {
	clk := clock.NewFake(t0)
	tags := &fakeTags{block: true, entered: make(chan struct{}, 1)}
	logs := &logBuffer{}
	h := NewStartHold(StartHoldOptions{Reader: tags, Clock: clk, Max: time.Hour, Timeout: time.Hour,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	testproc.WaitFor(t, "Run to arm its timer", 10*time.Second, func() bool { _, ok := clk.NextDeadline(); return ok })
	clk.Advance(0)
	<-tags.entered // a read hangs
	answered := make(chan struct{})
	var hs []policy.Hold
	var err error
	go func() { hs, err = h.Holds(clk.Now()); close(answered) }()
	if !testproc.WaitClosed(answered, 5*time.Second) {
		t.Fatal("Holds waits for a read that hangs")
	}
	if err != nil || len(hs) != 0 {
		t.Fatalf("holds %v, %v", hs, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if n := logs.count("WARN"); n != 0 {
		t.Errorf("stopping is not a failed read:\n%s", logs)
	}

	// The timeout ends a read that hangs.
	tags.entered = nil
	h = NewStartHold(StartHoldOptions{Reader: tags, Clock: clk, Max: time.Hour, Timeout: time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	h.Refresh(t.Context())
	if !strings.Contains(logs.String(), "deadline exceeded") {
		t.Errorf("log:\n%s", logs)
	}
}

// A resume from hibernation starts the machine again: the cap counts
// from the resume, not from a boot long before it.
func TestStartHoldCapAfterResume(t *testing.T) {
	clk := clock.NewFake(t0)
	tags := &fakeTags{err: ErrTagAbsent}
	var suspended time.Duration
	h := NewStartHold(StartHoldOptions{Reader: tags, Clock: clk, Boot: t0.Add(-clock.FakeBootElapsed), Max: 30 * time.Minute,
		Suspended: func() time.Duration { return suspended }, Logger: slog.New(slog.DiscardHandler)})
	// Up for an hour (FakeBootElapsed): a tag for 10 minutes holds
	// nothing, the cap passed long ago.
	tags.set(stamp(t0.Add(10*time.Minute)), nil)
	h.Refresh(t.Context())
	if hs := holdsAt(t, h, t0); len(hs) != 0 {
		t.Fatalf("an hour after boot with a 30m cap: %+v", hs)
	}
	// Hibernated for two hours, then resumed and tagged anew by connect.
	clk.Advance(2 * time.Hour)
	suspended += 2 * time.Hour
	until := clk.Now().Add(10 * time.Minute)
	tags.set(stamp(until), nil)
	h.Refresh(t.Context())
	hs := holdsAt(t, h, clk.Now())
	if len(hs) != 1 || !hs[0].Until.Equal(until) {
		t.Fatalf("just after a resume: holds %+v, want one until %v", hs, until)
	}
	// A tag far ahead is capped at 30 minutes after the resume.
	tags.set("2099-01-01T00:00:00Z", nil)
	h.Refresh(t.Context())
	hs = holdsAt(t, h, clk.Now())
	if len(hs) != 1 || !hs[0].Until.Equal(clk.Now().Add(30*time.Minute)) {
		t.Fatalf("far tag after a resume: holds %+v, want one until resume+30m", hs)
	}
	// Small differences between the clocks are no resume.
	suspended += 500 * time.Millisecond
	clk.Advance(31 * time.Minute)
	if hs := holdsAt(t, h, clk.Now()); len(hs) != 0 {
		t.Errorf("31 minutes after the resume: %+v", hs)
	}
}
