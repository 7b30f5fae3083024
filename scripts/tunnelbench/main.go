// Command tunnelbench is the measuring half of scripts/bench-tunnel.sh:
// a data server to put behind a forward, a bulk transfer through one, an
// outage run (cut the link, watch the client's SSH connection die,
// restore, probe until data flows again) and a peak RSS sampler for a
// process tree. It talks only to the addresses it is given, which the
// script takes from the network namespaces it made.
//
//	tunnelbench serve ADDR                    echo / sink / source server
//	tunnelbench ping ADDR [TIMEOUT]           one round trip, exit 1 on failure
//	tunnelbench xfer ADDR up|down BYTES       prints MB/s
//	tunnelbench outage PROBE SSHADDR HOLD CUTCMD RESTORECMD
//	tunnelbench flowdrop PROBE SSHADDR DROPCMD RESTORECMD   DROPCMD's {ports}: the flows' client ports
//	tunnelbench rss PID                       peak summed VmHWM of PID's tree, in kB, on SIGTERM
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
)

// Operations a client asks the server for: the first byte of a
// connection, then (for sink and source) 8 bytes of length.
const (
	opEcho   = 'e' // echo lines until EOF
	opSink   = 'u' // read N bytes, then answer 8 bytes: the count read
	opSource = 'd' // write N bytes, then close
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	a := os.Args[2:]
	switch os.Args[1] {
	case "serve":
		err = serve(arg(a, 0))
	case "ping":
		d := 2 * time.Second
		if len(a) > 1 {
			d, err = time.ParseDuration(a[1])
		}
		if err == nil {
			err = ping(arg(a, 0), d)
		}
	case "xfer":
		var n int64
		n, err = strconv.ParseInt(arg(a, 2), 10, 64)
		if err == nil {
			err = xfer(arg(a, 0), arg(a, 1), n)
		}
	case "outage":
		var hold time.Duration
		hold, err = time.ParseDuration(arg(a, 2))
		if err == nil {
			err = outage(arg(a, 0), arg(a, 1), hold, arg(a, 3), arg(a, 4))
		}
	case "flowdrop":
		err = flowdrop(arg(a, 0), arg(a, 1), arg(a, 2), arg(a, 3))
	case "rss":
		var pid int
		pid, err = strconv.Atoi(arg(a, 0))
		if err == nil {
			err = rss(pid)
		}
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tunnelbench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tunnelbench serve|ping|xfer|outage|flowdrop|rss ARGS (see the package doc)")
	os.Exit(2)
}

func arg(a []string, i int) string {
	if i >= len(a) {
		usage()
	}
	return a[i]
}

// serve answers echo, sink and source requests on addr until killed.
func serve(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_ = handle(c)
		}()
	}
}

func handle(c net.Conn) error {
	var op [1]byte
	if _, err := io.ReadFull(c, op[:]); err != nil {
		return err
	}
	if op[0] == opEcho {
		_, err := io.Copy(c, c)
		return err
	}
	var nb [8]byte
	if _, err := io.ReadFull(c, nb[:]); err != nil {
		return err
	}
	n := int64(binary.BigEndian.Uint64(nb[:]))
	buf := make([]byte, 256<<10)
	switch op[0] {
	case opSink:
		got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf)
		if err != nil {
			return err
		}
		_, err = c.Write(binary.BigEndian.AppendUint64(nil, uint64(got)))
		return err
	case opSource:
		for n > 0 {
			w, err := c.Write(buf[:min(n, int64(len(buf)))])
			if err != nil {
				return err
			}
			n -= int64(w)
		}
		return nil
	}
	return fmt.Errorf("unknown op %q", op[0])
}

// ping sends a line and waits for its echo, all within d.
func ping(addr string, d time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte{opEcho, 'p', 'i', 'n', 'g', '\n'}); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != "ping\n" {
		return fmt.Errorf("echo mismatch: %q", got)
	}
	return nil
}

// xfer moves n bytes through addr, up (to a sink) or down (from a
// source), and prints the rate in MB/s (10⁶ bytes a second).
func xfer(addr, dir string, n int64) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	buf := make([]byte, 256<<10)
	start := time.Now()
	hdr := binary.BigEndian.AppendUint64(nil, uint64(n))
	switch dir {
	case "up":
		if _, err := c.Write(append([]byte{opSink}, hdr...)); err != nil {
			return err
		}
		for left := n; left > 0; {
			w, err := c.Write(buf[:min(left, int64(len(buf)))])
			if err != nil {
				return err
			}
			left -= int64(w)
		}
		var ack [8]byte
		if _, err := io.ReadFull(c, ack[:]); err != nil {
			return fmt.Errorf("read the sink's count: %w", err)
		}
		if got := int64(binary.BigEndian.Uint64(ack[:])); got != n {
			return fmt.Errorf("sink read %d bytes, want %d", got, n)
		}
	case "down":
		if _, err := c.Write(append([]byte{opSource}, hdr...)); err != nil {
			return err
		}
		got, err := io.CopyBuffer(io.Discard, c, buf)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("read %d bytes, want %d", got, n)
		}
	default:
		return fmt.Errorf("direction %q: want up or down", dir)
	}
	fmt.Printf("%.0f\n", float64(n)/time.Since(start).Seconds()/1e6)
	return nil
}

// outage cuts the link with cutCmd, reports how long until no TCP
// connection to sshAddr is established any more (the client noticed),
// restores with restoreCmd after hold, and reports how long until a
// probe through the forward at probe gets its echo. Probes start every
// 100 ms from the cut on, each given 2 s. Every wait is bounded.
func outage(probe, sshAddr string, hold time.Duration, cutCmd, restoreCmd string) error {
	if err := ping(probe, 5*time.Second); err != nil {
		return fmt.Errorf("probe before the cut: %w", err)
	}
	if n, err := established(sshAddr); err != nil || n == 0 {
		return fmt.Errorf("no established connection to %s before the cut (%d, %v)", sshAddr, n, err)
	}
	ok, stop := startProbes(probe)
	defer stop()
	if err := sh(cutCmd); err != nil {
		return fmt.Errorf("cut: %w", err)
	}
	cut := time.Now()
	notice := time.Duration(-1)
	for time.Since(cut) < hold {
		if notice < 0 {
			if n, _ := established(sshAddr); n == 0 {
				notice = time.Since(cut)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sh(restoreCmd); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Printf("notice=%s recover=%s\n", secs(notice), firstAfter(ok, time.Now()))
	return nil
}

// probeBound bounds the wait for a probe to get through.
const probeBound = 180 * time.Second

// startProbes pings probe every 100 ms, each ping given 2 s, until stop;
// the time of each that got its echo arrives on the channel (dropped
// when it is full). stop returns once every ping has ended.
func startProbes(probe string) (<-chan time.Time, func()) {
	ok := make(chan time.Time, 1024)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			wg.Go(func() {
				if ping(probe, 2*time.Second) == nil {
					select {
					case ok <- time.Now():
					default:
					}
				}
			})
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	return ok, func() { cancel(); wg.Wait() }
}

// firstAfter returns, in seconds, how long after from the first probe
// to get through after it did, or ">180.00" when none did within
// probeBound.
func firstAfter(ok <-chan time.Time, from time.Time) string {
	tm := time.NewTimer(probeBound)
	defer tm.Stop()
	for {
		select {
		case at := <-ok:
			if at.After(from) {
				return secs(at.Sub(from))
			}
		case <-tm.C:
			return ">" + secs(probeBound)
		}
	}
}

// flowdrop drops only the SSH connections to sshAddr that are open now
// (dropCmd with {ports} replaced by their client ports, comma
// separated: what a NAT or firewall that forgot the flows does, while
// new connections get through), and prints how long until a new
// connection through probe (one every 100 ms from the drop on) gets its
// echo, at most 180 s; then runs restoreCmd.
func flowdrop(probe, sshAddr, dropCmd, restoreCmd string) error {
	if err := ping(probe, 5*time.Second); err != nil {
		return fmt.Errorf("probe before the drop: %w", err)
	}
	ports, err := clientPorts(sshAddr)
	if err != nil || len(ports) == 0 {
		return fmt.Errorf("no established connection to %s before the drop (%v)", sshAddr, err)
	}
	if err := sh(strings.ReplaceAll(dropCmd, "{ports}", strings.Join(ports, ", "))); err != nil {
		return fmt.Errorf("drop: %w", err)
	}
	dropped := time.Now()
	defer func() { _ = sh(restoreCmd) }()
	ok, stop := startProbes(probe)
	defer stop()
	fmt.Printf("flow=%s\n", firstAfter(ok, dropped))
	return nil
}

func secs(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64)
}

func sh(cmd string) error {
	out, err := exec.Command("sh", "-c", cmd).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, out)
	}
	return nil
}

// established counts the TCP connections of this network namespace to
// addr (an IPv4 host:port) that are ESTABLISHED.
func established(addr string) (int, error) {
	ports, err := clientPorts(addr)
	return len(ports), err
}

// clientPorts returns the local ports of the TCP connections of this
// network namespace to addr (an IPv4 host:port) that are ESTABLISHED.
func clientPorts(addr string) ([]string, error) {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	ip := ap.IP.To4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], ap.Port)
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return nil, err
	}
	var ports []string
	for _, l := range bytes.Split(b, []byte("\n"))[1:] {
		f := strings.Fields(string(l))
		if len(f) > 3 && f[2] == want && f[3] == "01" {
			_, hexPort, _ := strings.Cut(f[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				return nil, fmt.Errorf("/proc/net/tcp: local address %q: %w", f[1], err)
			}
			ports = append(ports, strconv.FormatUint(p, 10))
		}
	}
	return ports, nil
}

// rss samples the summed VmHWM (peak RSS) of pid and its live
// descendants every 50 ms
// until SIGTERM or until pid is gone, then prints the peak in kB.
func rss(pid int) error {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var peak, rss, anon, file int
	for {
		m, alive := treeRSS(pid)
		peak, rss, anon, file = max(peak, m.hwm), max(rss, m.anon+m.file), max(anon, m.anon), max(file, m.file)
		if !alive {
			break
		}
		select {
		case <-term:
			fmt.Println(peak, rss, anon, file)
			return nil
		case <-tick.C:
		}
	}
	fmt.Println(peak, rss, anon, file)
	return nil
}

// treeMem is memory summed over a process tree, in kB: the peaks (VmHWM)
// and what is resident now, anonymous (heap, stacks) and file-backed (the
// executable's and libraries' pages).
type treeMem struct{ hwm, anon, file int }

// treeRSS sums memory over pid and its descendants.
func treeRSS(pid int) (treeMem, bool) {
	procs, err := procfs.AllProcs()
	if err != nil {
		return treeMem{}, false
	}
	parent := map[int]int{}
	for _, p := range procs {
		if st, err := p.Stat(); err == nil {
			parent[p.PID] = st.PPID
		}
	}
	if _, ok := parent[pid]; !ok {
		return treeMem{}, false
	}
	in := func(p int) bool {
		for range 64 {
			if p == pid {
				return true
			}
			if p <= 1 {
				return false
			}
			p = parent[p]
		}
		return false
	}
	var m treeMem
	for _, p := range procs {
		if in(p.PID) {
			if st, err := p.NewStatus(); err == nil {
				m.hwm += int(st.VmHWM >> 10)
				m.anon += int(st.RssAnon >> 10)
				m.file += int(st.RssFile >> 10)
			}
		}
	}
	return m, true
}
