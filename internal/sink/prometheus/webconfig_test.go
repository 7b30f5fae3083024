package promsink

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/testkit/promtest"
)

// serveWebConfig serves m with web config w on a loopback port until the
// end of the test and returns its address.
func serveWebConfig(t *testing.T, m *Metrics, path string) string {
	t.Helper()
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.ServeListener(ctx, ln, ServeOptions{WebConfigFile: path}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("metrics server: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("metrics server did not stop")
		}
	})
	return ln.Addr().String()
}

// TestServeWebConfigTLSAndBasicAuth: with node_exporter's web config,
// a scrape needs TLS and the right password.
func TestServeWebConfigTLSAndBasicAuth(t *testing.T) {
	w := promtest.NewWebConfig(t, t.TempDir(), "prometheus", "correct horse")
	m, _ := newTest(t, false)
	m.ObserveScan("sshd", time.Millisecond, snapshotTTY(2), nil)
	addr := serveWebConfig(t, m, w.Path)

	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: w.Pool}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	scrape := func(scheme, user, password string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, scheme+"://"+addr+"/metrics", nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("scrape %s as %q: %v", scheme, user, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := scrape("https", "", ""); code != http.StatusUnauthorized {
		t.Errorf("without credentials: %d, want 401", code)
	}
	if code, _ := scrape("https", "prometheus", "wrong"); code != http.StatusUnauthorized {
		t.Errorf("with a wrong password: %d, want 401", code)
	}
	if code, _ := scrape("https", "someone", "correct horse"); code != http.StatusUnauthorized {
		t.Errorf("as an unknown user: %d, want 401", code)
	}
	code, body := scrape("https", "prometheus", "correct horse")
	if code != http.StatusOK || !strings.Contains(body, `connwatch_sessions{kind="ssh",mode="tty"} 2`) {
		t.Errorf("with credentials: %d, want 200 and the metrics:\n%s", code, body)
	}
	if code, _ := scrape("http", "prometheus", "correct horse"); code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS endpoint: %d, want 400", code)
	}
	// A client that does not trust the certificate gets nowhere.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get("https://" + addr + "/metrics"); err == nil {
		t.Error("a client without the CA connected")
	}
}

// TestPrometheusScrapesThroughWebConfig: a real Prometheus, configured
// as the README says (scheme https, tls_config.ca_file, basic_auth with
// password_file), scrapes the endpoint.
func TestPrometheusScrapesThroughWebConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server (a few seconds); skipped with -short")
	}
	bin := requireBinary(t, "prometheus")
	w := promtest.NewWebConfig(t, t.TempDir(), "prometheus", "correct horse")
	m, _ := newTest(t, false)
	m.ObserveScan("sshd", time.Millisecond, snapshotTTY(3), nil)
	addr := serveWebConfig(t, m, w.Path)

	p := promtest.StartScrape(t, bin, addr, promtest.Scrape{CAFile: w.CAFile, Username: w.User, PasswordFile: w.PasswordFile})
	if err := eventually(promReadyTimeout, func() error { return p.Ready() }); err != nil {
		t.Fatalf("prometheus not ready after %v: %v\n%s", promReadyTimeout, err, p.Log())
	}
	if err := eventually(promFirstTimeout, func() error { return p.QueryValue(`connwatch_sessions{mode="tty"}`, "3") }); err != nil {
		targets, _ := p.Get("/api/v1/targets")
		t.Fatalf("no scrape through TLS and basic auth: %v\ntargets: %s\nprometheus log:\n%s", err, targets, p.Log())
	}
	if err := p.Stop(); err != nil {
		t.Errorf("stop prometheus: %v\n%s", err, p.Log())
	}
}

func TestValidateWebConfig(t *testing.T) {
	dir := t.TempDir()
	w := promtest.NewWebConfig(t, dir, "prometheus", "pw")
	if err := ValidateWebConfig(w.Path); err != nil {
		t.Errorf("a good web config: %v", err)
	}
	if err := ValidateWebConfig(""); err != nil {
		t.Errorf("none: %v", err)
	}
	write := func(name, text string, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), perm); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, perm)
		return p
	}
	for _, tt := range []struct {
		name, text string
		perm       os.FileMode
		want       string
	}{
		{"typo.yml", "basic_auth_user:\n  prometheus: x\n", 0o600, "basic_auth_user"},
		{"hash.yml", "basic_auth_users:\n  prometheus: not-a-bcrypt-hash\n", 0o600, "bcrypt"},
		{"nocert.yml", "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n", 0o600, "missing.crt"},
		{"nokey.yml", "tls_server_config:\n  cert_file: metrics.crt\n", 0o600, "key"},
		{"writable.yml", "{}\n", 0o666, "lets others change it"},
	} {
		p := write(tt.name, tt.text, tt.perm)
		err := ValidateWebConfig(p)
		if !errors.Is(err, ErrWebConfig) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrWebConfig naming the file and %q", tt.name, err, tt.want)
		}
	}
	missing := filepath.Join(dir, "missing.yml")
	if err := ValidateWebConfig(missing); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing file: %v", err)
	}
}
