package promsink

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/promtest"
)

// require skips the test with the reason, or fails it when CI=true, so
// that CI cannot go green by skipping.
func require(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("promsink: %s (CI=true, so this is a failure, not a skip)", reason)
	}
	t.Skipf("promsink: %s", reason)
}

// lookBinary finds a program in PATH or, failing that, in /usr/bin (where
// Debian's prometheus package puts it).
func lookBinary(name string) (string, bool) {
	if p, err := exec.LookPath(name); err == nil {
		return p, true
	}
	p := "/usr/bin/" + name
	if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return p, true
	}
	return "", false
}

func requireBinary(t testing.TB, name string) string {
	t.Helper()
	p, ok := lookBinary(name)
	if !ok {
		why := "run scripts/install-test-deps.sh as root"
		if os.Geteuid() != 0 {
			why = "not root, so scripts/install-test-deps.sh cannot install it"
		}
		require(t, name+" not installed (Debian package prometheus): "+why)
	}
	return p
}

// get fetches url and returns the body; any status but 200 fails the test.
func get(t testing.TB, c *http.Client, url string) (string, http.Header) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("get %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("get %s: %s: %s", url, resp.Status, b)
	}
	return string(b), resp.Header
}

func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := requireBinary(t, "promtool")
	for _, perUser := range []bool{false, true} {
		m, _ := newTest(t, perUser)
		observeAll(m)
		m.ObserveScan("sshd", time.Millisecond, session.Snapshot{}, errors.New("scan failed"))
		srv := httptest.NewServer(m.Handler())
		text, _ := get(t, srv.Client(), srv.URL)
		srv.Close()
		for _, name := range []string{"connwatch_sessions", "connwatch_source_errors_total", "connwatch_sink_pending", "go_goroutines", "process_start_time_seconds"} {
			if !strings.Contains(text, "\n"+name) {
				t.Errorf("per-user %v: scrape has no %s", perUser, name)
			}
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("per-user %v: promtool check metrics: %v\n%s", perUser, err, out.String())
		}
	}
}

func TestIndexAndMetrics(t *testing.T) {
	m, _ := newTest(t, false)
	srv := httptest.NewServer(m.mux())
	defer srv.Close()
	c := srv.Client()

	body, hdr := get(t, c, srv.URL+"/")
	if !strings.Contains(body, "/metrics") || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Errorf("index: %q (%s)", body, hdr.Get("Content-Type"))
	}
	body, _ = get(t, c, srv.URL+"/metrics")
	if !strings.Contains(body, `connwatch_sessions{kind="ssh",mode="tty"} 0`) {
		t.Errorf("/metrics has no zero tty series:\n%s", body)
	}
	resp, err := c.Get(srv.URL + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("/nothing: %s, want 404", resp.Status)
	}
}

// eventually polls f every 50 ms until it returns nil or d has passed,
// and returns f's last error.
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}

func TestServe(t *testing.T) {
	if DefaultAddr != "127.0.0.1:9810" {
		t.Errorf("DefaultAddr = %q: the default must stay on loopback", DefaultAddr)
	}
	before := runtime.NumGoroutine()
	m, _ := newTest(t, false)
	addr := promtest.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Serve(ctx, addr, ServeOptions{}) }()

	tr := &http.Transport{}
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	err := eventually(5*time.Second, func() error {
		resp, err := c.Get("http://" + addr + "/metrics")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("metrics server never answered: %v", err)
	}
	tr.CloseIdleConnections()

	// The address is taken: a second server fails to listen.
	if err := New(Options{}).Serve(context.Background(), addr, ServeOptions{}); err == nil {
		t.Error("Serve on a taken address: nil error")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if err := eventually(5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return errors.New("goroutines leaked")
		}
		return nil
	}); err != nil {
		buf := make([]byte, 1<<20)
		t.Errorf("%v: %d before, %d after\n%s", err, before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
	}
}

// TestListenTakenAddress: the error names the address and says what to
// do.
func TestListenTakenAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	_, err = Listen(context.Background(), addr)
	if err == nil || !strings.Contains(err.Error(), "listen for metrics on "+addr) || !strings.Contains(err.Error(), "another process holds this address") {
		t.Errorf("Listen on a taken address: %v", err)
	}
}
