package promsink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// DefaultAddr is where Serve listens when given no address: loopback
// only. The metrics say who is connected and when the machine stops (and,
// with PerUserLabels, user names); listen on another address only behind
// a firewall or on a private network, e.g. "10.0.0.5:9810" or ":9810".
const DefaultAddr = "127.0.0.1:9810"

// Timeouts of the HTTP server.
const (
	readHeaderTimeout = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	// shutdownTimeout bounds how long Serve waits for scrapes in flight
	// once its context is cancelled.
	shutdownTimeout = 5 * time.Second
)

const indexText = `connwatch agent

Prometheus metrics: /metrics
Health:             /healthz (200 while the main loop runs, 503 with the reason)
`

// Handler serves the registry in the Prometheus exposition formats. It
// also counts its own requests (promhttp_metric_handler_requests_total).
func (m *Metrics) Handler() http.Handler {
	return promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry: m.reg,
		// One failing collector should not hide all the others.
		ErrorHandling:     promhttp.ContinueOnError,
		EnableOpenMetrics: true,
		Timeout:           writeTimeout - time.Second,
	}))
}

// mux serves /metrics, /healthz and a short text at /.
func (m *Metrics) mux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", m.healthz)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(indexText))
	})
	return mux
}

// ServeOptions configure how the endpoint is served.
type ServeOptions struct {
	// WebConfigFile is a Prometheus web configuration file, as
	// node_exporter's --web.config.file: TLS (tls_server_config) and
	// basic authentication (basic_auth_users, bcrypt hashes). It is read
	// again for every request and TLS handshake, so certificates and
	// users can change without a restart. Empty: plain HTTP, no
	// authentication.
	WebConfigFile string
	// Logger gets exporter-toolkit's messages; nil discards them.
	Logger *slog.Logger
}

// Listen opens addr (DefaultAddr when empty) for the endpoint. The agent
// calls it before anything else starts: an address another process holds
// (which could then serve made-up metrics in connwatch's name) is an
// error, not a warning.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	if addr == "" {
		addr = DefaultAddr
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listen for metrics on %s: %w (another process holds this address: stop it, or choose another metrics address, or \"\" for none)", addr, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	return ln, nil
}

// ValidateWebConfig checks a web configuration file as exporter-toolkit
// reads it (YAML, strictly; bcrypt hashes; certificate and key files),
// and refuses one that its group or others can write: whoever can change
// it chooses who may scrape and which key is served. Empty is valid.
func ValidateWebConfig(path string) error {
	if path == "" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("check web config: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("check web config %s: mode %04o lets others change it (chmod go-w): %w", path, perm, ErrWebConfig)
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("check web config %s: %w: %w", path, ErrWebConfig, err)
	}
	return nil
}

// ErrWebConfig is wrapped by ValidateWebConfig's errors about the file's
// content or mode.
var ErrWebConfig = errors.New("invalid web config")

// Serve listens on addr (DefaultAddr when empty) and serves /metrics and
// an index at / until ctx is cancelled; then it lets scrapes in flight
// finish (for a few seconds at most) and returns nil. It returns an
// error when it cannot listen or the server fails.
func (m *Metrics) Serve(ctx context.Context, addr string, o ServeOptions) error {
	ln, err := Listen(ctx, addr)
	if err != nil {
		return err
	}
	return m.ServeListener(ctx, ln, o)
}

// ServeListener is Serve on a listener the caller opened (Listen; tests
// use 127.0.0.1:0). It closes ln.
func (m *Metrics) ServeListener(ctx context.Context, ln net.Listener, o ServeOptions) error {
	defer ln.Close() // also when the web config is refused before serving
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	srv := &http.Server{
		Handler:           m.mux(),
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		// TLS handshake errors (scanners, clients without the CA) are
		// noise at the default level.
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() {
		if o.WebConfigFile == "" {
			errc <- srv.Serve(ln)
			return
		}
		// TLS and basic auth as node_exporter does them.
		errc <- web.Serve(ln, srv, &web.FlagConfig{WebConfigFile: &o.WebConfigFile}, logger)
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve metrics on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		// A scrape hung past the grace period: cut it off. Stopping is
		// still a clean exit.
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics on %s: %w", ln.Addr(), err)
	}
	return nil
}
