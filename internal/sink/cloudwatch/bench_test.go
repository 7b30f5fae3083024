package cloudwatch

import (
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
)

// BenchmarkRecord is the cost of one datapoint on the way in: appended to
// the spool and fsync'd. It reports the spool's bytes and the heap held
// per buffered (undelivered) datapoint.
func BenchmarkRecord(b *testing.B) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p, err := New(Options{SpoolDir: b.TempDir(), Clock: clock.NewFake(t0), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for i := range b.N {
		p.Record(t0.Add(time.Duration(i)*time.Minute), float64(i%4))
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := p.Stats()
	b.ReportMetric(float64(st.SpoolBytes)/float64(b.N), "disk-B/datapoint")
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(b.N), "heap-B/datapoint")
	runtime.KeepAlive(p)
}

// BenchmarkLoadTwoWeeks opens a spool holding two weeks of one-minute
// datapoints (20,160, the most CloudWatch would still accept), as a
// restart after a long outage does.
func BenchmarkLoadTwoWeeks(b *testing.B) {
	dir := b.TempDir()
	var pts []point
	for i := range 14 * 24 * 60 {
		pts = append(pts, point{int64(1772366400 + 60*i), float64(i % 3)})
	}
	data := encodePoints(pts)
	if err := os.WriteFile(filepath.Join(dir, SpoolFile), data, 0o600); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		s, res, err := openSpool(dir)
		if err != nil || len(res.points) != len(pts) {
			b.Fatal(err, len(res.points))
		}
		s.close()
	}
	b.ReportMetric(float64(len(data)), "spool-B")
}
