package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/promtest"
	"github.com/connwatch/connwatch/internal/testkit/sshdtest"
)

// tailEvents follows an events file and records when each line arrived.
type tailEvents struct {
	mu      sync.Mutex
	arrived []arrival
	stop    chan struct{}
	done    chan struct{}
}

type arrival struct {
	at   time.Time
	line eventLine
}

type eventLine struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"`
	Reason  string    `json:"reason"`
	Session *struct {
		User       string    `json:"user"`
		RemotePort int       `json:"remote_port"`
		StartedAt  time.Time `json:"started_at"`
		Mode       string    `json:"mode"`
	} `json:"session"`
}

func followEvents(t *testing.T, path string) *tailEvents {
	te := &tailEvents{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(te.done)
		var off int64
		var partial string
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-te.stop:
				return
			case <-tick.C:
			}
			f, err := os.Open(path)
			if err != nil {
				continue
			}
			f.Seek(off, 0)
			buf := make([]byte, 1<<20)
			n, _ := f.Read(buf)
			f.Close()
			if n == 0 {
				continue
			}
			now := time.Now()
			off += int64(n)
			text := partial + string(buf[:n])
			lines := strings.Split(text, "\n")
			partial = lines[len(lines)-1]
			for _, l := range lines[:len(lines)-1] {
				var e eventLine
				if err := jsonUnmarshal([]byte(l), &e); err != nil {
					t.Errorf("bad event line %q: %v", l, err)
					continue
				}
				te.mu.Lock()
				te.arrived = append(te.arrived, arrival{now, e})
				te.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { te.close() })
	return te
}

func (te *tailEvents) close() {
	select {
	case <-te.stop:
	default:
		close(te.stop)
	}
	<-te.done
}

func (te *tailEvents) all() []arrival {
	te.mu.Lock()
	defer te.mu.Unlock()
	return append([]arrival(nil), te.arrived...)
}

// waitFor polls until f is true of the events so far.
func (te *tailEvents) waitFor(t *testing.T, what string, timeout time.Duration, f func([]arrival) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !f(te.all()) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; events: %s", what, summarize(te.all()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func summarize(as []arrival) string {
	var b strings.Builder
	for _, a := range as {
		b.WriteString(a.line.Type)
		if a.line.Session != nil {
			fmt.Fprintf(&b, "(%s:%d)", a.line.Session.User, a.line.Session.RemotePort)
		}
		b.WriteByte(' ')
	}
	return b.String()
}

func count(as []arrival, typ string) int {
	n := 0
	for _, a := range as {
		if a.line.Type == typ {
			n++
		}
	}
	return n
}

type agentProc struct {
	cmd    *exec.Cmd
	events *tailEvents
	dir    string
	stderr *strings.Builder
}

// startAgent runs the real connwatch agent (this test binary re-executed)
// against the real /proc and srv's log.
func startAgent(t *testing.T, srv *sshdtest.Server, extra ...string) *agentProc {
	t.Helper()
	dir := t.TempDir()
	events := filepath.Join(dir, "events.jsonl")
	args := append([]string{"agent", "--state-dir", filepath.Join(dir, "state"), "--events", events,
		"--sshd-log", srv.LogFile, "--ssh-port", strconv.Itoa(srv.Port), "--wall=false", "--metrics-addr", "", "--boot-grace", "0", "--log-level", "debug"}, extra...)
	cmd := connwatchCmd(t, args...)
	if bin := os.Getenv("CONNWATCH_BIN"); bin != "" {
		// The benchmark measures the real binary, not this test binary.
		cmd = exec.Command(bin, args...)
	}
	var stderr strings.Builder
	cmd.Stderr = &lockedWriter{w: &stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ap := &agentProc{cmd: cmd, dir: dir, stderr: &stderr}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", stderr.String())
		}
	})
	ap.events = followEvents(t, events)
	return ap
}

type lockedWriter struct {
	mu sync.Mutex
	w  *strings.Builder
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var acceptedRE = regexp.MustCompile(`Accepted publickey for (\S+) from \S+ port (\d+)`)

// acceptedPorts lists the client ports of the logins in sshd's log, in order.
func acceptedPorts(srv *sshdtest.Server) []int {
	var ports []int
	for _, m := range acceptedRE.FindAllStringSubmatch(srv.Log(), -1) {
		p, _ := strconv.Atoi(m[2])
		ports = append(ports, p)
	}
	return ports
}

// shortSessions runs n sessions of `ssh host sleep 0.1` one after the
// other and returns when each client exited.
func shortSessions(t *testing.T, srv *sshdtest.Server, n int) []time.Time {
	t.Helper()
	var exits []time.Time
	for i := 0; i < n; i++ {
		cmd := exec.Command("ssh", srv.SSHArgs()...)
		cmd.Args = append(cmd.Args, "sleep", "0.1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ssh %d: %v: %s", i, err, out)
		}
		exits = append(exits, time.Now())
	}
	return exits
}

// TestAgentRealSSHD runs the agent against a real sshd: short sessions
// are all seen, a connection during the countdown cancels it, an inhibit
// lock holds the machine, and the stop comes once.
func TestAgentRealSSHD(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	sshdtest.RequireBinary(t, "ssh")
	srv := sshdtest.Start(t, sshdtest.Options{})
	marker := filepath.Join(t.TempDir(), "stops")
	ag := startAgent(t, srv, "--period", "1s", "--idle-after", "4s", "--warn-before", "1s",
		"--action", "command", "--action-command", "date +%s.%N >> "+marker)
	ag.events.waitFor(t, "idle_start", 10*time.Second, func(as []arrival) bool { return count(as, "idle_start") == 1 })

	// Ten sessions of about 100 ms: every one has a start and an end.
	shortSessions(t, srv, 10)
	ports := acceptedPorts(srv)
	if len(ports) != 10 {
		t.Fatalf("sshd logged %d logins, want 10", len(ports))
	}
	ag.events.waitFor(t, "10 short sessions", 5*time.Second, func(as []arrival) bool {
		started, ended := map[int]bool{}, map[int]bool{}
		for _, a := range as {
			if a.line.Session == nil {
				continue
			}
			switch a.line.Type {
			case "session_start":
				started[a.line.Session.RemotePort] = true
			case "session_end":
				ended[a.line.Session.RemotePort] = true
			}
		}
		for _, p := range ports {
			if !started[p] || !ended[p] {
				return false
			}
		}
		return true
	})

	// A held connection cancels the countdown; its end starts another.
	held := srv.SSH(t, []string{"-N"})
	ag.events.waitFor(t, "idle_cancel", 5*time.Second, func(as []arrival) bool { return count(as, "idle_cancel") >= 1 })
	time.Sleep(1500 * time.Millisecond)
	if b, _ := os.ReadFile(marker); len(b) > 0 {
		t.Fatalf("stopped while a session was open")
	}
	// An inhibit lock holds the machine past the window.
	inhibit := connwatchCmd(t, "inhibit", "--state-dir", filepath.Join(ag.dir, "state"), "--reason", "test", "--", "sleep", "6")
	if err := inhibit.Start(); err != nil {
		t.Fatal(err)
	}
	defer inhibit.Process.Kill()
	time.Sleep(500 * time.Millisecond)
	held.Stop()
	inhibitEnd := time.Now().Add(5500 * time.Millisecond)
	ag.events.waitFor(t, "session_end of the held one", 5*time.Second, func(as []arrival) bool { return count(as, "session_end") >= 11 })
	if err := inhibit.Wait(); err != nil {
		t.Fatalf("inhibit: %v", err)
	}
	ag.events.waitFor(t, "stop", 10*time.Second, func(as []arrival) bool { return count(as, "stop") == 1 })
	b, _ := os.ReadFile(marker)
	lines := strings.Fields(string(b))
	if len(lines) != 1 {
		t.Fatalf("action ran %d times", len(lines))
	}
	sec, _ := strconv.ParseFloat(lines[0], 64)
	stopped := time.Unix(0, int64(sec*1e9))
	if stopped.Before(inhibitEnd.Add(4 * time.Second)) {
		t.Errorf("stopped at %v, less than the window after the inhibit lock ended (%v)", stopped, inhibitEnd)
	}
	as := ag.events.all()
	if count(as, "stop_warning") < 1 {
		t.Errorf("no warning before the stop: %s", summarize(as))
	}
}

// TestAgentBench measures what the closing note of the agent quotes:
// event latency and misses over many 100 ms sessions, and the agent's
// RSS and CPU at rest. Run it with scripts/bench-agent.sh.
func TestAgentBench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CONNWATCH_BENCH_SESSIONS"))
	if n == 0 {
		t.Skip("set CONNWATCH_BENCH_SESSIONS (scripts/bench-agent.sh)")
	}
	sshdtest.RequireRoot(t)
	srv := sshdtest.Start(t, sshdtest.Options{})
	// As deployed: default log level, no metrics endpoint.
	ag := startAgent(t, srv, "--log-level", "info")
	ag.events.waitFor(t, "idle_start", 10*time.Second, func(as []arrival) bool { return count(as, "idle_start") == 1 })
	exits := shortSessions(t, srv, n)
	ports := acceptedPorts(srv)
	if len(ports) != n {
		t.Fatalf("sshd logged %d logins, want %d", len(ports), n)
	}
	time.Sleep(2 * time.Second)
	startArr, endArr := map[int]arrival{}, map[int]arrival{}
	for _, a := range ag.events.all() {
		if a.line.Session == nil {
			continue
		}
		switch a.line.Type {
		case "session_start":
			startArr[a.line.Session.RemotePort] = a
		case "session_end":
			endArr[a.line.Session.RemotePort] = a
		}
	}
	var startLat, endLat []time.Duration
	missed, fromLog := 0, 0
	for i, p := range ports {
		s, okS := startArr[p]
		e, okE := endArr[p]
		if !okS || !okE {
			missed++
			continue
		}
		if strings.Contains(s.line.Reason, "log") {
			fromLog++
		}
		startLat = append(startLat, s.at.Sub(s.line.Session.StartedAt))
		endLat = append(endLat, e.at.Sub(exits[i]))
		if d := e.at.Sub(exits[i]); d > time.Second {
			fmt.Printf("slow end: session %d port %d: client exit %v, end event %v (event time %v, reason %q)\n",
				i, p, exits[i].Format(time.StampMicro), e.at.Format(time.StampMicro), e.line.Time.Format(time.StampMicro), e.line.Reason)
		}
	}
	pct := func(ds []time.Duration, p float64) time.Duration {
		if len(ds) == 0 {
			return 0
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return ds[int(float64(len(ds)-1)*p)]
	}
	fmt.Printf("sessions: %d of %d ms each; missed: %d; seen only in sshd's log: %d\n", n, 100, missed, fromLog)
	fmt.Printf("connect latency (user child start -> event): p50 %v p99 %v max %v\n", pct(startLat, .5), pct(startLat, .99), pct(startLat, 1))
	fmt.Printf("disconnect latency (client exit -> event): p50 %v p99 %v max %v\n", pct(endLat, .5), pct(endLat, .99), pct(endLat, 1))

	// At rest: RSS and CPU over a quiet interval.
	pid := ag.cmd.Process.Pid
	cpu0 := cpuTicks(t, pid)
	rest := 20 * time.Second
	time.Sleep(rest)
	cpu1 := cpuTicks(t, pid)
	fmt.Printf("at rest: RSS %s, CPU %.3f%% of one core over %v\n", rssOf(t, pid), float64(cpu1-cpu0)/100/rest.Seconds()*100, rest)
	if missed > 0 {
		t.Errorf("%d sessions missed", missed)
	}
}

func cpuTicks(t *testing.T, pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}

func rssOf(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "?"
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestPrometheusScrapesAgent has a real Prometheus scrape the real agent
// while a real SSH session is open, and reads the session count back
// through Prometheus's query API.
func TestPrometheusScrapesAgent(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	prom := sshdtest.RequireBinary(t, "prometheus")
	srv := sshdtest.Start(t, sshdtest.Options{})
	addr := promtest.FreeAddr(t)
	ag := startAgent(t, srv, "--metrics-addr", addr)
	ag.events.waitFor(t, "idle_start", 10*time.Second, func(as []arrival) bool { return count(as, "idle_start") == 1 })
	held := srv.SSH(t, []string{"-N"})
	held.WaitLocalPort(t, 10*time.Second)

	p := promtest.Start(t, prom, addr)
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = p.QueryValue(`connwatch_sessions{mode="forward"}`, "1"); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("prometheus never saw the session: %v\n%s", err, p.Log())
	}
	held.Stop()
	deadline = time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err = p.QueryValue(`connwatch_sessions{mode="forward"}`, "0"); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("prometheus never saw the session end: %v", err)
	}
	if err := p.QueryValue(`connwatch_session_starts_total`, "1"); err != nil {
		t.Errorf("starts: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Errorf("stop prometheus: %v", err)
	}
}

// TestAgentKeepsDeclaredTunnel declares a tunnel in the agent's config:
// its LocalForward through a real sshd carries data and its state shows
// on the agent's Prometheus endpoint.
func TestAgentKeepsDeclaredTunnel(t *testing.T) {
	sshdtest.RequireRoot(t)
	sshdtest.RequireBinary(t, "sshd")
	sshdtest.RequireBinary(t, "ssh")
	srv := sshdtest.Start(t, sshdtest.Options{})
	dir := t.TempDir()

	// An echo server for the forward's destination.
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	local := promtest.FreeAddr(t)
	cfg := brokerTunnel(t, srv, dir, fmt.Sprintf("LocalForward %s %s", local, echo.Addr()))
	metrics := promtest.FreeAddr(t)
	startAgent(t, srv, "--config", cfg, "--metrics-addr", metrics)

	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", local, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(2 * time.Second))
			_, werr := c.Write([]byte("ping\n"))
			buf := make([]byte, 5)
			_, rerr := io.ReadFull(c, buf)
			c.Close()
			if werr == nil && rerr == nil && string(buf) == "ping\n" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the declared tunnel never carried data to %s", local)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`connwatch_tunnel_up{host="broker"} 1`, `connwatch_tunnel_handovers_total{host="broker"} 0`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(string(body), "connwatch_tunnel"))
		}
	}
}

// brokerTunnel writes an agent configuration that declares one tunnel,
// Host broker: srv as its test user with its client key, srv's host key
// pinned, keepalives every second, and the ssh_config lines extra (its
// forwards). It returns the configuration file's path.
func brokerTunnel(t *testing.T, srv *sshdtest.Server, dir string, extra ...string) string {
	t.Helper()
	pub, err := os.ReadFile(filepath.Join(srv.Dir, "host_ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(fmt.Sprintf("[%s]:%d %s", srv.Addr, srv.Port, pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	host := fmt.Sprintf(`Host broker
  HostName %s
  Port %d
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  UserKnownHostsFile %s
  StrictHostKeyChecking yes
  ServerAliveInterval 1
`, srv.Addr, srv.Port, srv.User, srv.ClientKey, kh)
	for _, l := range extra {
		host += "  " + l + "\n"
	}
	sshConfig := filepath.Join(dir, "ssh_config")
	if err := os.WriteFile(sshConfig, []byte(host), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "connwatch.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[tunnels]\nhosts = [\"broker\"]\nssh_config = %q\n", sshConfig)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
