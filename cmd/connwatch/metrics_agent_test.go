package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/promtest"
	"github.com/connwatch/connwatch/internal/testkit/testproc"
)

// fakeExporter is what a local user runs to answer scrapes in the
// agent's name: perl (always on Debian, in perl-base) listening on addr
// and serving made-up metrics.
const fakeExporter = `use IO::Socket::INET;
my $s = IO::Socket::INET->new(LocalAddr => $ARGV[0], Listen => 5, ReuseAddr => 1) or die "listen: $!";
$| = 1; print "listening\n";
while (my $c = $s->accept) {
	print $c "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nconnwatch_sessions{kind=\"ssh\",mode=\"tty\"} 0\n";
	close $c;
}`

// TestAgentRefusesTakenMetricsAddress: a real unprivileged user binds
// the metrics address first. The agent does not start (it used to log
// "continuing without it" while the user's process answered the
// scrapes), and says which address and why.
func TestAgentRefusesTakenMetricsAddress(t *testing.T) {
	u := testproc.HostileUser(t)
	perl := testproc.RequireBinary(t, "connwatch", "perl")
	addr := promtest.FreeAddr(t)
	squatter := u.Command(perl, "-e", fakeExporter, addr)
	squatter.SysProcAttr.Setpgid = true
	out, err := squatter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errOut testproc.Buffer
	squatter.Stderr = &errOut
	if err := squatter.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-squatter.Process.Pid, syscall.SIGKILL); squatter.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "listening\n" {
		t.Fatalf("%s's listener on %s: %q %v %s", u.Name, addr, line, err, errOut.String())
	}

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	began := time.Now()
	code, _, stderr := runCLIContext(ctx, []string{"agent", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "state"),
		"--events", filepath.Join(dir, "events.jsonl"), "--metrics-addr", addr, "--sshd-log", "", "--wall=false"})
	if ctx.Err() != nil {
		t.Fatalf("the agent ran on for %v with its metrics address taken; log:\n%s", time.Since(began).Round(time.Second), stderr)
	}
	if code != exitFailure || !strings.Contains(stderr, "listen for metrics on "+addr) || !strings.Contains(stderr, "address already in use") {
		t.Errorf("exit %d, stderr:\n%s\nwant exit %d naming %s and why", code, stderr, exitFailure, addr)
	}
}

// TestAgentMetricsWebConfig runs the agent with --web.config.file (TLS
// and basic auth, as node_exporter's): a scrape without credentials gets
// 401, with them 200 and the metrics.
func TestAgentMetricsWebConfig(t *testing.T) {
	dir := t.TempDir()
	w := promtest.NewWebConfig(t, dir, "prometheus", "correct horse")
	addr := promtest.FreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan string, 1)
	go func() {
		_, _, stderr := runCLIContext(ctx, []string{"agent", "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "state"),
			"--events", filepath.Join(dir, "events.jsonl"), "--metrics-addr", addr, "--web.config.file", w.Path, "--sshd-log", "", "--wall=false"})
		done <- stderr
	}()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.Pool}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	get := func(path string, auth bool) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
		if auth {
			req.SetBasicAuth(w.User, w.Password)
		}
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	scrape := func(auth bool) (int, string, error) { return get("/metrics", auth) }
	var (
		code int
		body string
		err  error
	)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if code, body, err = scrape(true); (err == nil && strings.Contains(body, "connwatch_sessions")) || time.Now().After(deadline) {
			break
		}
	}
	if code != http.StatusOK || !strings.Contains(body, `connwatch_sessions{kind="ssh",mode="tty"} 0`) {
		t.Errorf("scrape with credentials: %d %v, want 200 and the metrics:\n%s", code, err, body)
	}
	if code, _, err := scrape(false); code != http.StatusUnauthorized {
		t.Errorf("scrape without credentials: %d %v, want 401", code, err)
	}
	if !strings.Contains(body, `connwatch_build_info{goversion="go`) {
		t.Errorf("no connwatch_build_info in the scrape:\n%s", body)
	}
	// Healthy once the first loop iteration is done (the endpoint may
	// answer before it), and behind the same auth.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if code, body, err = get("/healthz", true); (code == http.StatusOK && err == nil) || time.Now().After(deadline) {
			break
		}
	}
	if code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q %v, want 200 ok", code, body, err)
	}
	if code, _, err := get("/healthz", false); code != http.StatusUnauthorized {
		t.Errorf("/healthz without credentials: %d %v, want 401", code, err)
	}
	cancel()
	if stderr := <-done; t.Failed() {
		t.Logf("agent log:\n%s", stderr)
	}
}

// TestConfigCheckWebConfig: config check reads the web config file the
// agent would serve with.
func TestConfigCheckWebConfig(t *testing.T) {
	dir := t.TempDir()
	w := promtest.NewWebConfig(t, dir, "prometheus", "pw")
	cfg := filepath.Join(dir, "connwatch.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("metrics_web_config_file = %q\n", w.Path)), 0o600)
	if code, stdout, stderr := runCLI(t, []string{"config", "check", cfg}); code != exitOK || !strings.Contains(stdout, ": ok") {
		t.Errorf("a good web config: exit %d, %s%s", code, stdout, stderr)
	}
	bad := filepath.Join(dir, "bad-web.yml")
	os.WriteFile(bad, []byte("basic_auth_users:\n  prometheus: plaintext-password\n"), 0o600)
	os.WriteFile(cfg, []byte(fmt.Sprintf("metrics_web_config_file = %q\n", bad)), 0o600)
	if code, _, stderr := runCLI(t, []string{"config", "check", cfg}); code != exitFailure || !strings.Contains(stderr, "metrics_web_config_file") || !strings.Contains(stderr, bad) || !strings.Contains(stderr, "bcrypt") {
		t.Errorf("a web config with a plain password: exit %d, stderr %q", code, stderr)
	}
	// The agent refuses it too, before it listens.
	code, _, stderr := runCLI(t, []string{"agent", "--config", cfg, "--proc", emptyProc(t, dir), "--state-dir", filepath.Join(dir, "state"),
		"--events", filepath.Join(dir, "events.jsonl"), "--metrics-addr", promtest.FreeAddr(t), "--sshd-log", ""})
	if code != exitFailure || !strings.Contains(stderr, bad) {
		t.Errorf("agent with a bad web config: exit %d, stderr %q", code, stderr)
	}
}
