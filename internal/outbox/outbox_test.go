package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/outbox/outboxtest"
)

var start = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// logBuffer is a slog handler target tests can read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type env struct {
	dir  string
	fake *clock.Fake
	logs *logBuffer
}

func newEnv(t *testing.T) *env {
	return &env{dir: t.TempDir(), fake: clock.NewFake(start), logs: &logBuffer{}}
}

func (e *env) options(o outbox.Options) outbox.Options {
	o.Clock = e.fake
	o.Logger = slog.New(slog.NewTextHandler(e.logs, nil))
	return o
}

func (e *env) open(t *testing.T, o outbox.Options) *outbox.Outbox {
	t.Helper()
	b, err := outbox.Open(e.dir, "sink", e.options(o))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

type body struct {
	N int `json:"n"`
}

func enqueue(t *testing.T, b *outbox.Outbox, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := b.Enqueue(fmt.Sprintf("k%d", i), start.Add(time.Duration(i)*time.Second), body{i}); err != nil {
			t.Fatalf("Enqueue %d: %v", i, err)
		}
	}
}

// sink records what it is given; fail decides, per attempt, whether the
// attempt fails.
type sink struct {
	mu       sync.Mutex
	got      []outbox.Record
	attempts int
	fail     func(attempt int, recs []outbox.Record) (int, error)
}

func (s *sink) deliver(ctx context.Context, recs []outbox.Record) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	n := len(recs)
	var err error
	if s.fail != nil {
		n, err = s.fail(s.attempts, recs)
	}
	s.got = append(s.got, recs[:n]...)
	return n, err
}

func (s *sink) records() []outbox.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

var (
	run     = outboxtest.Run
	waitFor = outboxtest.WaitFor
)

func nextTimer(t *testing.T, fake *clock.Fake) time.Duration { return outboxtest.NextTimer(t, fake) }

func wantRecords(t *testing.T, got []outbox.Record, from, to int) {
	t.Helper()
	var want []int
	for i := from; i <= to; i++ {
		want = append(want, i)
	}
	var gotN []int
	for _, r := range got {
		var b body
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatalf("record %d body %s: %v", r.Seq, r.Body, err)
		}
		gotN = append(gotN, b.N)
		if r.Key != fmt.Sprintf("k%d", b.N) {
			t.Errorf("record %d has key %q", b.N, r.Key)
		}
		if want := start.Add(time.Duration(b.N) * time.Second); !r.Time.Equal(want) {
			t.Errorf("record %d has time %v, want %v", b.N, r.Time, want)
		}
	}
	if diff := cmp.Diff(want, gotN); diff != "" {
		t.Errorf("delivered records (-want +got):\n%s", diff)
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "sink", "*.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDeliversInOrder(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{MaxBatch: 7})
	enqueue(t, b, 1, 50)
	s := &sink{}
	run(t, b, s.deliver)
	enqueue(t, b, 51, 100)
	waitFor(t, "100 records", func() bool { return b.Stats().Delivered == 100 })

	got := s.records()
	wantRecords(t, got, 1, 100)
	for i, r := range got {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i+1, r.Seq)
		}
	}
	st := b.Stats()
	if st.Pending != 0 || st.Failed != 0 || st.Dropped != 0 || !st.OldestPending.IsZero() || !st.LastSuccess.Equal(start) {
		t.Errorf("stats %+v", st)
	}
	waitFor(t, "segments to be deleted", func() bool { return len(segments(t, e.dir)) == 0 })
}

func TestRetriesUntilSinkIsBack(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{MinBackoff: time.Second, MaxBackoff: 10 * time.Second})
	enqueue(t, b, 1, 3)
	const down = 6
	s := &sink{fail: func(attempt int, recs []outbox.Record) (int, error) {
		if attempt <= down {
			return 0, errors.New("connection refused")
		}
		return len(recs), nil
	}}
	run(t, b, s.deliver)

	// Waits double from 1s up to 10s, each with up to half taken off.
	for i, max := range []time.Duration{1, 2, 4, 8, 10, 10} {
		max *= time.Second
		d := nextTimer(t, e.fake)
		if d < max/2 || d > max {
			t.Errorf("wait %d is %s, want between %s and %s", i+1, d, max/2, max)
		}
		pending := 3
		if i > 2 {
			pending = 5
		}
		if st := b.Stats(); st.Failed != uint64(i+1) || st.LastError != "connection refused" || st.Pending != pending || !st.OldestPending.Equal(start.Add(time.Second)) {
			t.Errorf("stats after %d failures: %+v", i+1, st)
		}
		// Records enqueued during the outage do not cut the wait short.
		if i == 2 {
			enqueue(t, b, 4, 5)
			if d2 := nextTimer(t, e.fake); d2 != d {
				t.Errorf("wait changed from %s to %s by Enqueue", d, d2)
			}
		}
		e.fake.Advance(d)
	}
	waitFor(t, "delivery", func() bool { return b.Stats().Delivered == 5 })
	wantRecords(t, s.records(), 1, 5)
	if st := b.Stats(); st.Failed != down || st.Pending != 0 || st.LastSuccess.IsZero() {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(e.logs.String(), "delivering again") {
		t.Errorf("recovery not logged:\n%s", e.logs)
	}

	// The backoff starts again from MinBackoff after a success.
	s.mu.Lock()
	s.fail = func(int, []outbox.Record) (int, error) { return 0, errors.New("down again") }
	s.mu.Unlock()
	enqueue(t, b, 6, 6)
	if d := nextTimer(t, e.fake); d > time.Second {
		t.Errorf("first wait after a success is %s, want at most 1s", d)
	}
}

func TestPartialBatch(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{MaxBatch: 4})
	enqueue(t, b, 1, 6)
	s := &sink{fail: func(attempt int, recs []outbox.Record) (int, error) {
		if attempt == 1 {
			return 2, errors.New("third one failed")
		}
		return len(recs), nil
	}}
	run(t, b, s.deliver)
	// Two were delivered before the failure: the wait starts afresh.
	if d := nextTimer(t, e.fake); d > time.Second {
		t.Errorf("wait %s", d)
	}
	if st := b.Stats(); st.Delivered != 2 || st.Pending != 4 {
		t.Errorf("stats %+v", st)
	}
	e.fake.Advance(time.Second)
	waitFor(t, "delivery", func() bool { return b.Stats().Delivered == 6 })
	wantRecords(t, s.records(), 1, 6)
}

func TestPermanentFailureDropsRecord(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	enqueue(t, b, 1, 3)
	s := &sink{fail: func(_ int, recs []outbox.Record) (int, error) {
		if recs[0].Key == "k2" {
			return 0, fmt.Errorf("post: 400 Bad Request: %w", outbox.ErrPermanent)
		}
		return len(recs), nil
	}}
	run(t, b, s.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Pending == 0 })
	got := s.records()
	if len(got) != 2 || got[0].Key != "k1" || got[1].Key != "k3" {
		t.Errorf("delivered %v", got)
	}
	if st := b.Stats(); st.Delivered != 2 || st.Dropped != 1 || st.Failed != 1 || !strings.Contains(st.LastError, "400") {
		t.Errorf("stats %+v", st)
	}
	if _, ok := e.fake.NextDeadline(); ok {
		t.Error("a permanent failure started a backoff")
	}
	if !strings.Contains(e.logs.String(), "refused a record for good") {
		t.Errorf("drop not logged:\n%s", e.logs)
	}
}

func TestRestartDeliversPending(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	enqueue(t, b, 1, 10)
	// The sink takes four records, then hangs on the fifth, ignoring ctx:
	// the fifth is the batch in flight when Run is stopped.
	inFlight, release := make(chan struct{}), make(chan struct{})
	defer close(release)
	s := &sink{}
	stop := run(t, b, func(ctx context.Context, recs []outbox.Record) (int, error) {
		if recs[0].Key == "k5" {
			close(inFlight)
			<-release
			return 0, errors.New("released")
		}
		return s.deliver(ctx, recs)
	})
	<-inFlight
	stop()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	wantRecords(t, s.records(), 1, 4)

	b = e.open(t, outbox.Options{})
	if st := b.Stats(); st.Pending != 6 || !st.OldestPending.Equal(start.Add(5*time.Second)) {
		t.Errorf("after restart: %+v", st)
	}
	s2 := &sink{}
	run(t, b, s2.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Pending == 0 })
	wantRecords(t, s2.records(), 5, 10)
	if got := s2.records(); got[0].Seq != 5 {
		t.Errorf("sequence numbers restarted: %d", got[0].Seq)
	}
	// Sequence numbers go on after the delivered ones.
	enqueue(t, b, 11, 11)
	waitFor(t, "delivery", func() bool { return b.Stats().Pending == 0 })
	if got := s2.records(); got[len(got)-1].Seq != 11 {
		t.Errorf("new record has seq %d, want 11", got[len(got)-1].Seq)
	}
}

func TestRestartAfterEverythingDelivered(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	enqueue(t, b, 1, 3)
	s := &sink{}
	stop := run(t, b, s.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Delivered == 3 })
	waitFor(t, "compaction", func() bool { return len(segments(t, e.dir)) == 0 })
	stop()
	b.Close()

	b = e.open(t, outbox.Options{})
	if st := b.Stats(); st.Pending != 0 {
		t.Errorf("pending after restart: %+v", st)
	}
	enqueue(t, b, 4, 4)
	s2 := &sink{}
	run(t, b, s2.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Delivered == 1 })
	if got := s2.records(); len(got) != 1 || got[0].Seq != 4 {
		t.Errorf("got %+v", got)
	}
}

func TestTornLastLine(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	enqueue(t, b, 1, 3)
	b.Close()
	segs := segments(t, e.dir)
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	before, _ := os.ReadFile(segs[0])
	// An append cut short by a crash.
	f, _ := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"seq":4,"key":"k4","time":"2026-03-01T12:00`)
	f.Close()

	b = e.open(t, outbox.Options{})
	st := b.Stats()
	if st.Pending != 3 || st.Torn != 1 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(e.logs.String(), "torn record") {
		t.Errorf("torn line not reported:\n%s", e.logs)
	}
	if after, _ := os.ReadFile(segs[0]); !bytes.Equal(after, before) {
		t.Errorf("torn line not cut off:\n%s", after)
	}
	enqueue(t, b, 4, 4)
	s := &sink{}
	run(t, b, s.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Pending == 0 })
	wantRecords(t, s.records(), 1, 4)
}

func TestDamagedLineIsReported(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	enqueue(t, b, 1, 3)
	b.Close()
	seg := segments(t, e.dir)[0]
	data, _ := os.ReadFile(seg)
	lines := strings.SplitAfter(string(data), "\n")
	lines[1] = strings.Repeat("\x00", len(lines[1])-1) + "\n"
	os.WriteFile(seg, []byte(strings.Join(lines, "")), 0o600)

	b = e.open(t, outbox.Options{})
	if st := b.Stats(); st.Pending != 2 || st.Dropped != 1 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(e.logs.String(), "lost to damage") {
		t.Errorf("loss not reported:\n%s", e.logs)
	}
	s := &sink{}
	run(t, b, s.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Pending == 0 })
	if got := s.records(); len(got) != 2 || got[0].Key != "k1" || got[1].Key != "k3" {
		t.Errorf("delivered %+v", got)
	}
}

func TestMaxRecordsDropsOldest(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{MaxRecords: 3})
	enqueue(t, b, 1, 5)
	st := b.Stats()
	if st.Pending != 3 || st.Dropped != 2 || !st.OldestPending.Equal(start.Add(3*time.Second)) {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(e.logs.String(), "outbox full") {
		t.Errorf("drop not logged:\n%s", e.logs)
	}
	s := &sink{}
	run(t, b, s.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Pending == 0 })
	wantRecords(t, s.records(), 3, 5)
	if st := b.Stats(); st.Delivered != 3 || st.Dropped != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestMaxAgeDropsOldRecords(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{MaxAge: time.Hour})
	enqueue(t, b, 1, 3)
	e.fake.Advance(time.Hour + 2*time.Second + time.Millisecond) // 1 and 2 are now too old
	s := &sink{}
	run(t, b, s.deliver)
	waitFor(t, "delivery", func() bool { return b.Stats().Pending == 0 })
	wantRecords(t, s.records(), 3, 3)
	if st := b.Stats(); st.Dropped != 2 || st.Delivered != 1 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(e.logs.String(), "older than the maximum age") || !strings.Contains(e.logs.String(), "dropped=2") {
		t.Errorf("drop not logged:\n%s", e.logs)
	}
}

func TestRunReturnsOnCancel(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})

	// Idle.
	stop := run(t, b, (&sink{}).deliver)
	stop()

	// In a backoff wait.
	enqueue(t, b, 1, 1)
	stop = run(t, b, (&sink{fail: func(int, []outbox.Record) (int, error) { return 0, errors.New("down") }}).deliver)
	nextTimer(t, e.fake)
	stop()

	// In a Deliver that honours ctx.
	called := make(chan struct{})
	stop = run(t, b, func(ctx context.Context, recs []outbox.Record) (int, error) {
		close(called)
		<-ctx.Done()
		return 0, ctx.Err()
	})
	<-called
	stop()
	if st := b.Stats(); st.Pending != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestEnqueueDoesNotWaitForDelivery(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	release := make(chan struct{})
	defer close(release)
	called := make(chan struct{}, 1)
	stop := run(t, b, func(ctx context.Context, recs []outbox.Record) (int, error) {
		called <- struct{}{}
		<-release // blocks forever, ctx or not
		return 0, errors.New("released")
	})
	enqueue(t, b, 1, 1)
	<-called

	done := make(chan error)
	go func() {
		for i := 2; i <= 50; i++ {
			if err := b.Enqueue(fmt.Sprintf("k%d", i), start, body{i}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Enqueue blocked behind a hung Deliver")
	}
	if st := b.Stats(); st.Pending != 50 {
		t.Errorf("stats %+v", st)
	}
	stop() // returns although Deliver does not
}

func TestOpenErrors(t *testing.T) {
	e := newEnv(t)
	e.open(t, outbox.Options{})
	if _, err := outbox.Open(e.dir, "sink", e.options(outbox.Options{})); !errors.Is(err, outbox.ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	for _, name := range []string{"", ".", "..", "a/b"} {
		if _, err := outbox.Open(e.dir, name, outbox.Options{}); err == nil {
			t.Errorf("Open(%q) succeeded", name)
		}
	}
	if _, err := outbox.Open(e.dir, "x", outbox.Options{MaxAge: -1}); err == nil {
		t.Error("negative MaxAge accepted")
	}
}

func TestMisuse(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	run(t, b, (&sink{}).deliver)
	enqueue(t, b, 1, 1)
	waitFor(t, "Run to start", func() bool { return b.Stats().Delivered == 1 })
	if err := b.Run(context.Background(), (&sink{}).deliver); !errors.Is(err, outbox.ErrRunning) {
		t.Errorf("second Run: %v", err)
	}
	if err := b.Enqueue("k", start, make(chan int)); err == nil {
		t.Error("unencodable body accepted")
	}
	if err := b.Enqueue("k", start, strings.Repeat("x", outbox.MaxRecordSize)); !errors.Is(err, outbox.ErrTooLarge) {
		t.Errorf("huge record: %v", err)
	}
	b2, err := outbox.Open(e.dir, "other", e.options(outbox.Options{}))
	if err != nil {
		t.Fatal(err)
	}
	b2.Close()
	if err := b2.Enqueue("k", start, 1); !errors.Is(err, outbox.ErrClosed) {
		t.Errorf("Enqueue after Close: %v", err)
	}
	if err := b2.Run(context.Background(), (&sink{}).deliver); !errors.Is(err, outbox.ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
}

func TestDamagedAckFileRedelivers(t *testing.T) {
	e := newEnv(t)
	b := e.open(t, outbox.Options{})
	enqueue(t, b, 1, 2)
	b.Close()
	os.WriteFile(filepath.Join(e.dir, "sink", "acked.json"), []byte("{"), 0o600)
	b = e.open(t, outbox.Options{})
	if st := b.Stats(); st.Pending != 2 {
		t.Errorf("stats %+v", st)
	}
	if !strings.Contains(e.logs.String(), "damaged acknowledgement file") {
		t.Errorf("not reported:\n%s", e.logs)
	}
}
