package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// TestSegments rotates segments after a few records, and checks that
// delivered segments are deleted while later ones stay, across a restart.
func TestSegments(t *testing.T) {
	dir := t.TempDir()
	o := Options{Clock: clock.NewFake(time.Unix(0, 0)), Logger: slog.New(slog.DiscardHandler), MaxBatch: 3}
	b, err := Open(dir, "s", o)
	if err != nil {
		t.Fatal(err)
	}
	b.segMax = 150 // two records of about 75 bytes
	for i := 1; i <= 20; i++ {
		if err := b.Enqueue(fmt.Sprint(i), time.Unix(int64(i), 0), i); err != nil {
			t.Fatal(err)
		}
	}
	segs := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "s", "*.jsonl"))
		return m
	}
	if n := len(segs()); n < 7 {
		t.Fatalf("%d segments, want 7 or more", n)
	}

	var mu sync.Mutex
	var got []uint64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- b.Run(ctx, func(_ context.Context, recs []Record) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			n := min(len(recs), 10-len(got))
			for _, r := range recs[:n] {
				got = append(got, r.Seq)
			}
			if n < len(recs) {
				return n, fmt.Errorf("stop at 10")
			}
			return n, nil
		})
	}()
	for b.Stats().Failed == 0 {
		runtime.Gosched()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, s := range segs() {
		if filepath.Base(s) < segmentName(9) {
			t.Errorf("segment %s of delivered records is still there", filepath.Base(s))
		}
	}
	b.Close()

	b, err = Open(dir, "s", o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if st := b.Stats(); st.Pending != 10 || !st.OldestPending.Equal(time.Unix(11, 0)) {
		t.Fatalf("after restart: %+v", st)
	}
	var rest []uint64
	ctx, cancel = context.WithCancel(context.Background())
	go func() {
		done <- b.Run(ctx, func(_ context.Context, recs []Record) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			for _, r := range recs {
				rest = append(rest, r.Seq)
			}
			return len(recs), nil
		})
	}()
	for len(segs()) > 0 {
		runtime.Gosched()
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	for i, seq := range append(got, rest...) {
		if seq != uint64(i+1) {
			t.Fatalf("delivered %v then %v", got, rest)
		}
	}
}

func TestQueueMemoryIsReleased(t *testing.T) {
	var q queue
	for i := range 100_000 {
		q.push(entry{time: int64(i)})
	}
	for q.len() > 1 {
		q.pop(7)
		if q.len() > 0 && q.at(0).time != int64(100_000-q.len()) {
			t.Fatalf("head %d with %d left", q.at(0).time, q.len())
		}
		if q.len() < 7 {
			q.pop(q.len())
		}
	}
	if q.buf != nil {
		t.Errorf("drained queue still holds %d entries of memory", cap(q.buf))
	}
}

// TestFailedAppend makes an append fail and leave part of its line in the
// file (as a full disk can), and checks that the records around it are
// read back, both before and after a restart.
func TestFailedAppend(t *testing.T) {
	dir := t.TempDir()
	o := Options{Clock: clock.NewFake(time.Unix(0, 0)), Logger: slog.New(slog.DiscardHandler), MaxBatch: 5}
	b, err := Open(dir, "s", o)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Enqueue("1", time.Unix(1, 0), 1); err != nil {
		t.Fatal(err)
	}
	// A read-only handle: the write fails, and so does taking it back.
	good := b.tail
	ro, err := os.Open(good.Name())
	if err != nil {
		t.Fatal(err)
	}
	b.tail = ro
	if err := b.Enqueue("2", time.Unix(2, 0), 2); err == nil {
		t.Fatal("Enqueue on a read-only file succeeded")
	}
	ro.Close()
	b.tail = good
	// Pretend part of the line made it.
	good.WriteString(`{"seq":2,"ke`)
	b.segs[0].size += int64(len(`{"seq":2,"ke`))
	if !b.tailDirty {
		t.Fatal("failed append not noted")
	}
	if err := b.Enqueue("3", time.Unix(3, 0), 3); err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Pending != 2 {
		t.Fatalf("stats %+v", st)
	}
	recs, err := b.batch()
	if err != nil || len(recs) != 2 || recs[0].Key != "1" || recs[1].Key != "3" {
		t.Fatalf("batch %+v, %v", recs, err)
	}
	deliverAll := func(b *Outbox) []string {
		var keys []string
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- b.Run(ctx, func(_ context.Context, recs []Record) (int, error) {
				for _, r := range recs {
					keys = append(keys, r.Key)
				}
				return len(recs), nil
			})
		}()
		for b.Stats().Pending > 0 {
			runtime.Gosched()
		}
		cancel()
		<-done
		return keys
	}
	b.Close()
	b, err = Open(dir, "s", o)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(deliverAll(b)); got != "[1 3]" {
		t.Errorf("after restart delivered %s, want [1 3]", got)
	}
	if err := b.Enqueue("4", time.Unix(4, 0), 4); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(deliverAll(b)); got != "[4]" {
		t.Errorf("delivered %s, want [4]", got)
	}
	b.Close()
}
