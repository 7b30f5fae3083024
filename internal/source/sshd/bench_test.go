package sshd

import (
	"context"
	"fmt"
	"testing"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/testkit/procfixture"
)

// benchTree is a busy machine: n processes, of which one in 50 belongs
// to an sshd connection (half authenticated, half bots at the prompt).
func benchTree(n int) procfixture.Tree {
	t := procfixture.Tree{BootTime: bootTime}
	t.Procs = append(t.Procs, procfixture.Proc{PID: 1, Comm: "init", Title: "/sbin/init"},
		procfixture.Proc{PID: 2, PPID: 1, Comm: "sshd", Title: "sshd: /usr/sbin/sshd -D [listener] 10 of 10-100 startups"})
	pid := 3
	for conn := 0; len(t.Procs) < n; conn++ {
		if conn%25 == 0 {
			ino := uint64(100_000 + conn)
			t.TCP = append(t.TCP, procfixture.TCP{Local: "10.0.0.5:22", Remote: fmt.Sprintf("198.51.100.%d:%d", conn%250+1, 40_000+conn%20_000), State: 1, Inode: ino})
			user := fmt.Sprintf("user%d", conn)
			if conn%50 == 0 {
				t.Procs = append(t.Procs,
					procfixture.Proc{PID: pid, PPID: 2, Comm: "sshd", Title: "sshd: " + user + " [priv]", StartTicks: 500, Sockets: map[int]uint64{4: ino}},
					procfixture.Proc{PID: pid + 1, PPID: pid, Comm: "sshd", Title: "sshd: " + user + "@notty", StartTicks: 501})
			} else {
				t.Procs = append(t.Procs,
					procfixture.Proc{PID: pid, PPID: 2, Comm: "sshd", Title: "sshd: root [priv]", StartTicks: 500, Sockets: map[int]uint64{4: ino}},
					procfixture.Proc{PID: pid + 1, PPID: pid, Comm: "sshd", Title: "sshd: root [net]", StartTicks: 501})
			}
			pid += 2
			continue
		}
		t.Procs = append(t.Procs, procfixture.Proc{PID: pid, PPID: 1, Comm: "worker", Title: "/usr/bin/worker --id " + fmt.Sprint(pid), StartTicks: 400})
		pid++
	}
	return t
}

// BenchmarkScan measures a steady-state scan (what the agent does every
// tick: processes seen before and of no interest are skipped).
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("procs=%d", n), func(b *testing.B) {
			root := writeTree(b, benchTree(n))
			src := New(Options{ProcRoot: root, Clock: clock.NewFake(fixtureNow)})
			snap, err := src.Scan(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			if len(snap.Sessions) == 0 || len(snap.PendingAuth) == 0 {
				b.Fatalf("fixture has %d sessions, %d pending", len(snap.Sessions), len(snap.PendingAuth))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := src.Scan(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScanEvents measures a scan while process events come (what the
// agent does every tick and in the bursts events start, between the
// backstop walks): only the sshd trees are read, here 200 connections'.
func BenchmarkScanEvents(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("procs=%d", n), func(b *testing.B) {
			root := writeTree(b, benchTree(n))
			clk := clock.NewFake(fixtureNow)
			src := New(Options{ProcRoot: root, Clock: clk})
			src.SetEvents(true)
			if _, err := src.Scan(context.Background()); err != nil {
				b.Fatal(err)
			}
			walks := src.walks
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := src.Scan(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if src.walks != walks {
				b.Fatalf("%d walks during the benchmark", src.walks-walks)
			}
		})
	}
}

// BenchmarkScanCold measures a first scan (what `connwatch status` does):
// every process is read.
func BenchmarkScanCold(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("procs=%d", n), func(b *testing.B) {
			root := writeTree(b, benchTree(n))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				src := New(Options{ProcRoot: root, Clock: clock.NewFake(fixtureNow)})
				if _, err := src.Scan(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScanLive scans this machine's real /proc.
func BenchmarkScanLive(b *testing.B) {
	src := New(Options{})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := src.Scan(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScanLiveCold scans this machine's real /proc as `connwatch
// status` does: a new source, every process read.
func BenchmarkScanLiveCold(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(Options{}).Scan(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
