package promsink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
)

// Bounds of the waits in TestPrometheusScrapes: together well under a
// minute even when every one runs out; a normal run takes 2-4 s.
const (
	promReadyTimeout = 10 * time.Second
	promFirstTimeout = 15 * time.Second // includes the first scrape
	promNextTimeout  = 10 * time.Second
	promStopTimeout  = 10 * time.Second
)

// TestPrometheusScrapes runs a real Prometheus (Debian's package) that
// scrapes a Metrics server every second, and reads the values back
// through its query API.
//
// Prometheus only talks to loopback: it listens on 127.0.0.1, scrapes a
// static 127.0.0.1 target, and has no remote write, remote read, service
// discovery, alertmanagers or rules; it runs with an empty environment
// (no proxies) and keeps its data in a temporary directory.
func TestPrometheusScrapes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server (a few seconds); skipped with -short")
	}
	bin := requireBinary(t, "prometheus")

	m, _ := newTest(t, false)
	m.ObserveScan("sshd", time.Millisecond, snapshotTTY(2), nil)
	target := serveForTest(t, m)

	p := startPrometheus(t, bin, target)
	if err := eventually(promReadyTimeout, func() error { return p.ready() }); err != nil {
		t.Fatalf("prometheus not ready after %v: %v\n%s", promReadyTimeout, err, p.log())
	}

	const query = `connwatch_sessions{mode="tty"}`
	waitValue := func(want string, d time.Duration) {
		t.Helper()
		start := time.Now()
		err := eventually(d, func() error { return p.queryValue(query, want) })
		if err != nil {
			targets, _ := p.get("/api/v1/targets")
			t.Fatalf("%s never became %s within %v: %v\ntargets: %s\nprometheus log:\n%s", query, want, d, err, targets, p.log())
		}
		t.Logf("%s = %s after %v", query, want, time.Since(start).Round(time.Millisecond))
	}
	waitValue("2", promFirstTimeout)

	m.ObserveScan("sshd", time.Millisecond, snapshotTTY(3), nil)
	waitValue("3", promNextTimeout)

	if err := p.stop(); err != nil {
		t.Errorf("stop prometheus: %v\n%s", err, p.log())
	}
}

func snapshotTTY(n int) session.Snapshot {
	var snap session.Snapshot
	for i := range n {
		snap.Sessions = append(snap.Sessions, sess(fmt.Sprint("s", i), "alice", session.ModeTTY))
	}
	snap.Sessions = append(snap.Sessions, sess("fwd", "bob", session.ModeForward))
	return snap
}

// serveForTest serves m on a loopback port until the end of the test and
// returns its address.
func serveForTest(t *testing.T, m *Metrics) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("metrics server: %v", err)
		}
	})
	return ln.Addr().String()
}

type promServer struct {
	t       *testing.T
	url     string
	cmd     *exec.Cmd
	waited  chan struct{}
	err     error // of Wait, once waited is closed
	logPath string
	client  *http.Client
}

// startPrometheus starts Prometheus on a free loopback port, scraping
// target every second; it is killed at the end of the test unless
// stopped before.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: connwatch
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := &promServer{
		t: t, url: "http://" + addr, waited: make(chan struct{}), logPath: filepath.Join(dir, "prometheus.log"),
		client: &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}},
	}
	p.cmd = exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--storage.tsdb.retention.time=1h",
		"--web.listen-address="+addr,
		"--web.external-url="+p.url+"/",
		"--web.console.templates="+dir,
		"--web.console.libraries="+dir,
		"--log.level=info",
	)
	// No proxies or anything else from the caller's environment.
	p.cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir, "TMPDIR=" + dir}
	p.cmd.Dir = dir
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child has its own copy
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.waited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.waited:
		default:
			_ = p.cmd.Process.Kill()
			<-p.waited
		}
	})
	return p
}

// log is what Prometheus has written so far.
func (p *promServer) log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

func (p *promServer) get(path string) ([]byte, error) {
	select {
	case <-p.waited:
		return nil, fmt.Errorf("prometheus exited: %v", p.err)
	default:
	}
	resp, err := p.client.Get(p.url + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b.Bytes(), fmt.Errorf("get %s: %s: %s", path, resp.Status, bytes.TrimSpace(b.Bytes()))
	}
	return b.Bytes(), nil
}

func (p *promServer) ready() error {
	_, err := p.get("/-/ready")
	return err
}

// queryValue runs an instant query and checks that it returns exactly
// one series with the value want.
func (p *promServer) queryValue(query, want string) error {
	b, err := p.get("/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return err
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("decode query response %s: %w", b, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return fmt.Errorf("query response: %s", b)
	}
	if len(r.Data.Result) != 1 {
		return fmt.Errorf("%d series, want 1: %s", len(r.Data.Result), b)
	}
	res := r.Data.Result[0]
	if res.Metric["kind"] != "ssh" || res.Metric["job"] != "connwatch" {
		return fmt.Errorf("unexpected series %v", res.Metric)
	}
	if got, _ := res.Value[1].(string); got != want {
		return fmt.Errorf("value %q, want %q", got, want)
	}
	return nil
}

// stop asks Prometheus to shut down (SIGTERM) and waits for a clean exit.
func (p *promServer) stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal prometheus: %w", err)
	}
	timer := time.NewTimer(promStopTimeout)
	defer timer.Stop()
	select {
	case <-p.waited:
		if p.err != nil {
			return fmt.Errorf("prometheus exit: %w", p.err)
		}
		return nil
	case <-timer.C:
		return errors.New("prometheus did not exit within " + promStopTimeout.String() + " of SIGTERM")
	}
}
