package outbox_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/outbox"
)

const crashDirEnv = "OUTBOX_CRASH_DIR"

// TestCrashHelper is the process TestKilledWhileEnqueueing kills: it
// enqueues records as fast as it can and prints the number of each one
// Enqueue accepted.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("helper process for TestKilledWhileEnqueueing")
	}
	b, err := outbox.Open(dir, "sink", outbox.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	pad := make([]byte, 3000) // long lines, so that the kill often lands in a write
	for i := 1; ; i++ {
		if err := b.Enqueue(fmt.Sprintf("k%d", i), start, map[string]any{"n": i, "pad": pad}); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(i)
	}
}

// TestKilledWhileEnqueueing kills (SIGKILL) a process in the middle of
// enqueueing and checks that every record it was told was accepted is
// there, in order, and nothing else is damaged.
func TestKilledWhileEnqueueing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	for round := range 3 {
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		accepted := 0
		for accepted < 50+round*40 && sc.Scan() {
			n, err := strconv.Atoi(sc.Text())
			if err != nil {
				t.Fatalf("helper: %s", sc.Text())
			}
			accepted = n
		}
		cmd.Process.Signal(syscall.SIGKILL)
		// Whatever it printed before dying was accepted too.
		for sc.Scan() {
			if n, err := strconv.Atoi(sc.Text()); err == nil {
				accepted = n
			}
		}
		cmd.Wait()

		b, err := outbox.Open(dir, "sink", outbox.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatalf("Open after kill: %v", err)
		}
		st := b.Stats()
		if st.Pending < accepted || st.Pending > accepted+1 || st.Dropped != 0 {
			t.Errorf("round %d: %d accepted, stats %+v", round, accepted, st)
		}
		t.Logf("round %d: %d accepted, %d pending, %d torn lines discarded", round, accepted, st.Pending, st.Torn)
		var seqs []uint64
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() {
			done <- b.Run(ctx, func(_ context.Context, recs []outbox.Record) (int, error) {
				for _, r := range recs {
					seqs = append(seqs, r.Seq)
				}
				if len(seqs) == st.Pending {
					cancel()
				}
				return len(recs), nil
			})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("delivery after kill did not finish")
		}
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("round %d: record %d has seq %d", round, i+1, s)
			}
		}
		b.Close()
	}
}
