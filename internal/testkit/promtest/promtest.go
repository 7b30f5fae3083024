// Package promtest runs a real Prometheus server (Debian's package) for
// tests: it listens on loopback, scrapes one static loopback target every
// second, evaluates the rule files it is given every second, keeps its
// data in a temporary directory, and has no remote write, service
// discovery or Alertmanager.
package promtest

import (
	"bytes"
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
)

// StopTimeout bounds Stop.
const StopTimeout = 10 * time.Second

type Server struct {
	t       *testing.T
	url     string
	cmd     *exec.Cmd
	waited  chan struct{}
	err     error // of Wait, once waited is closed
	logPath string
	client  *http.Client
}

// Start starts Prometheus on a free loopback port, scraping
// target every second; it is killed at the end of the test unless
// stopped before.
func Start(t *testing.T, bin, target string) *Server {
	t.Helper()
	return StartScrape(t, bin, target, Scrape{})
}

// Scrape is how Prometheus reaches a target protected by a web
// configuration (see WebConfig): over TLS trusting CAFile, with basic
// auth when Username is set; and the rule files it loads.
type Scrape struct {
	CAFile, Username, PasswordFile string
	// RuleFiles are loaded as rule_files (absolute paths); their alerts
	// go nowhere, and show in Rules and the ALERTS series.
	RuleFiles []string
}

// StartScrape is Start with TLS and basic auth as s says, written as the
// README tells operators to write them, and s's rule files.
func StartScrape(t *testing.T, bin, target string, s Scrape) *Server {
	t.Helper()
	dir := t.TempDir()
	var job string
	if s.CAFile != "" {
		job += fmt.Sprintf("    scheme: https\n    tls_config:\n      ca_file: %q\n", s.CAFile)
	}
	if s.Username != "" {
		job += fmt.Sprintf("    basic_auth:\n      username: %q\n      password_file: %q\n", s.Username, s.PasswordFile)
	}
	var rules string
	if len(s.RuleFiles) > 0 {
		rules = "rule_files:\n"
		for _, f := range s.RuleFiles {
			rules += fmt.Sprintf("  - %q\n", f)
		}
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
%sscrape_configs:
  - job_name: connwatch
%s    static_configs:
      - targets: [%q]
`, rules, job, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
	p := &Server{
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

// Log is what Prometheus has written so far.
func (p *Server) Log() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// Get fetches path from the Prometheus server.
func (p *Server) Get(path string) ([]byte, error) {
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

func (p *Server) Ready() error {
	_, err := p.Get("/-/ready")
	return err
}

// Sample is one series of an instant query's result.
type Sample struct {
	Metric map[string]string
	// Value as Prometheus writes it: "1", "0.25", "NaN".
	Value string
}

// Query runs an instant query and returns its result, which must be a
// vector (possibly empty). A query Prometheus cannot parse is an error
// that carries Prometheus's message.
func (p *Server) Query(query string) ([]Sample, error) {
	b, err := p.Get("/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil, err
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
		return nil, fmt.Errorf("decode query response %s: %w", b, err)
	}
	if r.Status != "success" || r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("query response: %s", b)
	}
	out := make([]Sample, 0, len(r.Data.Result))
	for _, res := range r.Data.Result {
		v, _ := res.Value[1].(string)
		out = append(out, Sample{Metric: res.Metric, Value: v})
	}
	return out, nil
}

// QueryValue runs an instant query and checks that it returns exactly
// one series of kind ssh from the job connwatch, with the value want.
func (p *Server) QueryValue(query, want string) error {
	res, err := p.Query(query)
	if err != nil {
		return err
	}
	if len(res) != 1 {
		return fmt.Errorf("%d series, want 1: %v", len(res), res)
	}
	if m := res[0].Metric; m["kind"] != "ssh" || m["job"] != "connwatch" {
		return fmt.Errorf("unexpected series %v", m)
	}
	if got := res[0].Value; got != want {
		return fmt.Errorf("value %q, want %q", got, want)
	}
	return nil
}

// LabelValues returns the values of label in the series that match
// selector, as Grafana's label_values(selector, label) asks for them.
func (p *Server) LabelValues(label, selector string) ([]string, error) {
	b, err := p.Get("/api/v1/label/" + url.PathEscape(label) + "/values?match[]=" + url.QueryEscape(selector))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string   `json:"status"`
		Data   []string `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" {
		return nil, fmt.Errorf("label values response %s: %v", b, err)
	}
	return r.Data, nil
}

// Rule is an alerting or recording rule as Prometheus reports it.
type Rule struct {
	Group string `json:"-"`
	Name  string `json:"name"`
	Type  string `json:"type"` // "alerting" or "recording"
	// State of an alerting rule: "inactive", "pending" or "firing".
	State string `json:"state"`
	// Health is "unknown" until the first evaluation, then "ok" or "err".
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

// Rules lists the rules Prometheus loaded, group by group.
func (p *Server) Rules() ([]Rule, error) {
	b, err := p.Get("/api/v1/rules")
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []Rule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.Status != "success" {
		return nil, fmt.Errorf("rules response %s: %v", b, err)
	}
	var out []Rule
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			rule.Group = g.Name
			out = append(out, rule)
		}
	}
	return out, nil
}

// Stop asks Prometheus to shut down (SIGTERM) and waits for a clean exit.
func (p *Server) Stop() error {
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal prometheus: %w", err)
	}
	timer := time.NewTimer(StopTimeout)
	defer timer.Stop()
	select {
	case <-p.waited:
		if p.err != nil {
			return fmt.Errorf("prometheus exit: %w", p.err)
		}
		return nil
	case <-timer.C:
		return errors.New("prometheus did not exit within " + StopTimeout.String() + " of SIGTERM")
	}
}

// FreeAddr returns a loopback address that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
