//go:build linux

package procevents

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spawn runs n `true` processes, workers at a time, and returns their pids.
func spawn(t testing.TB, n, workers int) map[int]bool {
	t.Helper()
	var (
		mu   sync.Mutex
		pids = make(map[int]bool, n)
		wg   sync.WaitGroup
		errs = make(chan error, workers)
		jobs = make(chan struct{}, n)
	)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				cmd := exec.Command("true")
				if err := cmd.Run(); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				pids[cmd.Process.Pid] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return pids
}

// marker runs one more process; once its Exit event has arrived, so has
// every event of processes that ended before it started, or an Overrun.
func marker(t testing.TB) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// tally counts the events of a set of processes.
type tally struct {
	Forks, Execs, Exits, Complete, Overruns int
}

func (c *tally) add(pids map[int]bool, seen map[int]Kind, ev Event) {
	if ev.Kind == Overrun {
		c.Overruns++
		return
	}
	if !pids[ev.PID] {
		return
	}
	switch ev.Kind {
	case Fork:
		c.Forks++
	case Exec:
		c.Execs++
	case Exit:
		c.Exits++
	}
	seen[ev.PID] |= 1 << ev.Kind
	if seen[ev.PID] == 1<<Fork|1<<Exec|1<<Exit {
		c.Complete++
	}
}

// TestBurst starts 2,000 short processes as fast as it can and checks
// that every one is reported, or that the loss is reported.
func TestBurst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 2,000 processes")
	}
	l := listen(t)
	events := run(t, l)

	const n, workers = 2000, 16
	var (
		pids  map[int]bool
		mark  int
		spawn = func() {
			pids = spawn(t, n, workers)
			mark = marker(t)
		}
	)
	// Collect while spawning: pids are known only afterwards, so keep all.
	var all []Event
	start := time.Now()
	done := make(chan struct{})
	go func() { spawn(); close(done) }()
	timeout := time.After(60 * time.Second)
	for finished := false; ; {
		select {
		case ev := <-events:
			all = append(all, ev)
			if finished && ev.Kind == Exit && ev.PID == mark {
				goto counted
			}
		case <-done:
			finished, done = true, nil
			// The marker's exit may have been collected already.
			if slices.ContainsFunc(all, func(ev Event) bool { return ev.Kind == Exit && ev.PID == mark }) {
				goto counted
			}
		case <-timeout:
			t.Fatal("timed out after 60s")
		}
	}
counted:
	elapsed := time.Since(start)
	var c tally
	seen := map[int]Kind{}
	for _, ev := range all {
		c.add(pids, seen, ev)
	}
	t.Logf("%d processes in %v (%.0f/s): fork %d, exec %d, exit %d, complete %d; Lost()=%d, overrun events %d; %d events in all",
		n, elapsed.Round(time.Millisecond), n/elapsed.Seconds(), c.Forks, c.Execs, c.Exits, c.Complete, l.Lost(), c.Overruns, len(all))
	if c.Complete != n && l.Lost() == 0 {
		t.Errorf("%d of %d processes fully reported and no loss reported", c.Complete, n)
	}
	if l.Lost() > 0 && c.Overruns == 0 {
		t.Errorf("Lost()=%d but no Overrun event", l.Lost())
	}
}

// TestOverrunReported lets a tiny socket buffer overflow before Run reads
// it and checks that the loss is counted and sent as Overrun, and that
// events flow again afterwards.
func TestOverrunReported(t *testing.T) {
	saved := recvBufBytes
	recvBufBytes = 4096 // the kernel makes it 8 KiB: a few events
	t.Cleanup(func() { recvBufBytes = saved })
	l := listen(t)

	spawn(t, 100, 4) // 300 events while nobody reads
	events := run(t, l)
	collect(t, events, func(ev Event) bool { return ev.Kind == Overrun })
	if l.Lost() == 0 {
		t.Error("Overrun event, but Lost() = 0")
	}
	// With the usual buffer again, so that the rest of the machine cannot
	// overrun it while the marker runs.
	l.rc.Control(func(fd uintptr) { setRecvBuf(int(fd), saved) })
	// Events flow again: a marker's exit arrives. The rest of the machine
	// (other test packages forking in parallel) may still overrun the
	// socket before the bigger buffer takes effect, losing one marker's
	// exit: try a few, each bounded.
	for attempt := 1; ; attempt++ {
		mark := marker(t)
		if waitFor(events, 2*time.Second, func(ev Event) bool { return ev.Kind == Exit && ev.PID == mark }) {
			break
		}
		if attempt == 5 {
			t.Fatalf("no marker's exit seen in %d attempts after the overrun (Lost()=%d)", attempt, l.Lost())
		}
	}
	t.Logf("Lost()=%d", l.Lost())
}

// waitFor reads events until done says it has seen enough (true) or d
// has passed (false).
func waitFor(events <-chan Event, d time.Duration, done func(Event) bool) bool {
	timeout := time.After(d)
	for {
		select {
		case ev := <-events:
			if done(ev) {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

func monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// drainReport is what the drain child reports for one phase.
type drainReport struct {
	Events, Overruns int
	Lost             uint64
	// Forks of the parent's children, and how long after the kernel
	// stamped them they came out of Run's channel.
	Forks                          int
	LatP50, LatP90, LatP99, LatMax time.Duration
	UserNs, SysNs                  int64
	CtxSwitches                    int64 // voluntary: the process went to sleep
	MaxRSSKiB                      int64
}

// TestMeasure runs a listener alone in a child process, as the agent
// would, starts processes from here, and logs the child's delivery latency
// and CPU time. Run with -procevents.measure (root).
func TestMeasure(t *testing.T) {
	if !*measure {
		t.Skip("run with -procevents.measure")
	}
	requireRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	child := childCommand(ctx, self, "drain")
	child.Stderr = os.Stderr
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	defer stdin.Close()
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("child: %q %v", lines.Text(), lines.Err())
	}
	phase := func(name string, n, workers int) {
		start := time.Now()
		spawn(t, n, workers)
		mark := marker(t)
		wall := time.Since(start)
		fmt.Fprintln(stdin, mark)
		if !lines.Scan() {
			t.Fatalf("child: %v", lines.Err())
		}
		var r drainReport
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			t.Fatalf("child said %q: %v", lines.Text(), err)
		}
		cpu := time.Duration(r.UserNs + r.SysNs)
		t.Logf("%s: %d processes (%d workers) in %v, %.0f/s", name, n, workers, wall.Round(time.Millisecond), float64(n)/wall.Seconds())
		t.Logf("  listener: %d events (whole machine), %d forks of ours seen, Lost()=%d, overrun events %d", r.Events, r.Forks, r.Lost, r.Overruns)
		t.Logf("  fork->receipt: p50 %v, p90 %v, p99 %v, max %v", r.LatP50, r.LatP90, r.LatP99, r.LatMax)
		t.Logf("  CPU: user %v + sys %v = %.1f%% of one CPU over the phase, %.2f µs and %.2f sleeps per event; max RSS %d KiB",
			time.Duration(r.UserNs).Round(time.Millisecond), time.Duration(r.SysNs).Round(time.Millisecond),
			100*cpu.Seconds()/wall.Seconds(), float64(cpu.Nanoseconds())/1e3/float64(r.Events),
			float64(r.CtxSwitches)/float64(r.Events), r.MaxRSSKiB)
	}
	phase("sequential", 200, 1)
	phase("burst", 2000, 16)
	phase("burst", 5000, 32)
}

// childDrain listens and counts events. For every pid read from stdin it
// waits for that process's exit, then prints a drainReport as JSON for the
// events since the previous report.
func childDrain() {
	l, err := Listen()
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan Event, 1024)
	go l.Run(ctx, events)
	marks := make(chan int)
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			pid, _ := strconv.Atoi(in.Text())
			marks <- pid
		}
		close(marks)
	}()

	usage := func() (u, s, cs, rss int64) {
		var ru unix.Rusage
		unix.Getrusage(unix.RUSAGE_SELF, &ru)
		return ru.Utime.Nano(), ru.Stime.Nano(), ru.Nvcsw, ru.Maxrss
	}
	parent := os.Getppid()
	var (
		r              drainReport
		lat            []time.Duration
		exited         = map[int]bool{}
		want           = -1
		u0, s0, cs0, _ = usage()
	)
	fmt.Println("ready")
	for {
		select {
		case ev := <-events:
			r.Events++
			switch ev.Kind {
			case Overrun:
				r.Overruns++
			case Fork:
				if ev.ParentPID == parent {
					lat = append(lat, monotonic()-ev.Time)
				}
			case Exit:
				exited[ev.PID] = true
			}
		case pid, ok := <-marks:
			if !ok {
				cancel()
				l.Close()
				os.Exit(0)
			}
			want = pid
		}
		if want > 0 && exited[want] {
			u, s, cs, rss := usage()
			r.UserNs, r.SysNs, r.CtxSwitches, r.MaxRSSKiB, r.Lost = u-u0, s-s0, cs-cs0, rss, l.Lost()
			slices.Sort(lat)
			if n := len(lat); n > 0 {
				q := func(p float64) time.Duration { return lat[int(p*float64(n-1))] }
				r.Forks, r.LatP50, r.LatP90, r.LatP99, r.LatMax = n, q(0.5), q(0.9), q(0.99), q(1)
			}
			b, _ := json.Marshal(r)
			fmt.Println(string(b))
			r, lat, u0, s0, cs0, want = drainReport{}, lat[:0], u, s, cs, -1
			clear(exited)
		}
	}
}
