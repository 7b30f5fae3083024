package outbox_test

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/outbox"
)

// benchBody is about the size of a notification message (~450 bytes of
// JSON): an event with its session, the host and the key.
var benchBody = map[string]any{
	"time": start, "type": "session_start",
	"session": map[string]any{
		"id": "ssh-12345-1700000000", "kind": "ssh", "user": "alice",
		"remote_addr": "198.51.100.7", "remote_port": 50122, "local_addr": "10.0.0.5", "local_port": 22,
		"tty": "pts/0", "mode": "tty", "pid": 12345, "user_pid": 12350,
		"started_at": start, "last_activity_at": start,
	},
	"host": "dev-box", "instance_id": "i-0123456789abcdef0",
	"key": "3f9a1c0e5b7d2a4f6e8c0b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a",
}

// BenchmarkEnqueue measures one durable Enqueue: encode, append, fsync.
func BenchmarkEnqueue(b *testing.B) {
	box, err := outbox.Open(b.TempDir(), "sink", outbox.Options{Logger: slog.New(slog.DiscardHandler), MaxRecords: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer box.Close()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := box.Enqueue(fmt.Sprint(i), start, benchBody); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnqueueDelivered measures Enqueue while Run keeps the outbox
// empty, the steady state: each record starts a segment (a create and a
// directory fsync besides the record's own) that delivery then deletes.
func BenchmarkEnqueueDelivered(b *testing.B) {
	box, err := outbox.Open(b.TempDir(), "sink", outbox.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer box.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- box.Run(ctx, func(_ context.Context, recs []outbox.Record) (int, error) { return len(recs), nil })
	}()
	b.ReportAllocs()
	var i int
	for b.Loop() {
		if err := box.Enqueue(fmt.Sprint(i), start, benchBody); err != nil {
			b.Fatal(err)
		}
		// Wait, untimed, for the delivery, so that the next Enqueue
		// starts a segment.
		b.StopTimer()
		for box.Stats().Pending > 0 {
			runtime.Gosched()
		}
		b.StartTimer()
		i++
	}
	b.StopTimer()
	cancel()
	<-done
}

// BenchmarkPendingMemory measures the heap an outbox holds for 10,000
// pending records (run with -benchtime=1x: each iteration enqueues 10,000
// records with an fsync each).
func BenchmarkPendingMemory(b *testing.B) {
	const n = 10_000
	var held uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		box, err := outbox.Open(b.TempDir(), "sink", outbox.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		for i := range n {
			if err := box.Enqueue(fmt.Sprint(i), start.Add(time.Duration(i)), benchBody); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if st := box.Stats(); st.Pending != n {
			b.Fatalf("pending %d", st.Pending)
		}
		held = after.HeapAlloc - before.HeapAlloc
		box.Close()
	}
	b.ReportMetric(float64(held), "bytes/10k-pending")
}

// BenchmarkOpen10k measures Open recovering 10,000 pending records.
func BenchmarkOpen10k(b *testing.B) {
	dir := b.TempDir()
	o := outbox.Options{Logger: slog.New(slog.DiscardHandler)}
	box, err := outbox.Open(dir, "sink", o)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10_000 {
		if err := box.Enqueue(fmt.Sprint(i), start, benchBody); err != nil {
			b.Fatal(err)
		}
	}
	box.Close()
	for b.Loop() {
		box, err := outbox.Open(dir, "sink", o)
		if err != nil {
			b.Fatal(err)
		}
		if box.Stats().Pending != 10_000 {
			b.Fatal("records missing")
		}
		box.Close()
	}
}
