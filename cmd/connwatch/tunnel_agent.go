package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/sshconfig"
	"github.com/connwatch/connwatch/internal/tunnel"
)

// agentTunnels resolves the tunnels declared in the agent's config and
// returns them with a function that keeps them up until ctx ends (status
// files for `connwatch tunnel status`, retries on network changes).
func agentTunnels(ctx context.Context, cfg config.Agent, log *slog.Logger) ([]*tunnel.Tunnel, func(context.Context) error, error) {
	if len(cfg.Tunnels.Hosts) == 0 {
		return nil, nil, nil
	}
	runner := sshOptions{r: sshconfig.Exec{}, options: cfg.Tunnels.Options}
	sw := tunnel.NewStatusWriter(filepath.Join(cfg.StateDir, tunnel.StatusDir), log.With("source", "tunnel-status"))
	resolve := specResolver(runner, cfg.Tunnels.SSHConfig)
	var tunnels []*tunnel.Tunnel
	for _, h := range cfg.Tunnels.Hosts {
		spec, err := resolve(ctx, h)
		if err != nil {
			return nil, nil, fmt.Errorf("tunnel: %w", err)
		}
		tunnels = append(tunnels, tunnel.New(spec, tunnel.Options{Logger: log.With("source", "tunnel", "host", h), OnChange: sw.Changed, ResolveJump: resolve, ProbeInterval: cfg.Tunnels.ProbeInterval.Duration}))
	}
	run := func(ctx context.Context) error {
		done := make(chan error, len(tunnels)+2)
		go func() { done <- sw.Run(ctx, tunnels) }()
		nw := &tunnel.NetWatch{Logger: log.With("source", "netwatch"), Retry: func() {
			for _, t := range tunnels {
				t.Retry()
			}
		}}
		go func() { done <- nw.Run(ctx) }()
		for _, t := range tunnels {
			go func() { done <- t.Run(ctx) }()
		}
		// A tunnel that gives up (ExitOnForwardFailure) is logged; the
		// agent's own work goes on.
		for range len(tunnels) + 2 {
			if err := <-done; err != nil && ctx.Err() == nil {
				log.Error("tunnel stopped", "err", err)
			}
		}
		return nil
	}
	return tunnels, run, nil
}

// specResolver resolves a Host as OpenSSH does (ssh -G with -F and -o)
// into a tunnel Spec; tunnels also use it for their ProxyJump hosts. When
// ssh is not installed it parses ssh_config instead (and logs that).
func specResolver(runner sshconfig.Runner, configFile string) tunnel.Resolver {
	var options []string
	if so, ok := runner.(sshOptions); ok {
		runner, options = so.r, so.options
	}
	return func(ctx context.Context, h string) (tunnel.Spec, error) {
		res, err := sshconfig.ClientSettingsOrParse(ctx, runner, sshconfig.ClientOptions{Host: h, ConfigFile: configFile, Options: options})
		if err != nil {
			return tunnel.Spec{}, fmt.Errorf("resolve %s: %w", h, err)
		}
		if res.Parsed {
			slog.Warn("ssh is not installed: host settings parsed from ssh_config", "host", h, "notes", res.Notes)
		}
		s := res.Settings
		spec, err := tunnel.SpecFromSettings(h, s)
		if err != nil {
			return tunnel.Spec{}, fmt.Errorf("resolve %s: %w", h, err)
		}
		return spec, nil
	}
}

// tunnelCollector exports the tunnels' state to Prometheus.
type tunnelCollector struct {
	tunnels                        []*tunnel.Tunnel
	up, reconnects, rtt, forwardUp *prometheus.Desc
}

func newTunnelCollector(tunnels []*tunnel.Tunnel) *tunnelCollector {
	return &tunnelCollector{
		tunnels:    tunnels,
		up:         prometheus.NewDesc("connwatch_tunnel_up", "1 while the tunnel's SSH connection is up.", []string{"host"}, nil),
		reconnects: prometheus.NewDesc("connwatch_tunnel_reconnects_total", "Times the tunnel's connection came back after being lost.", []string{"host"}, nil),
		rtt:        prometheus.NewDesc("connwatch_tunnel_keepalive_rtt_seconds", "Round trip of the last answered keepalive.", []string{"host"}, nil),
		forwardUp:  prometheus.NewDesc("connwatch_tunnel_forward_up", "1 while the forward is listening or carrying connections.", []string{"host", "forward"}, nil),
	}
}

func (c *tunnelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.reconnects
	ch <- c.rtt
	ch <- c.forwardUp
}

func (c *tunnelCollector) Collect(ch chan<- prometheus.Metric) {
	for _, t := range c.tunnels {
		st := t.Status()
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, boolValue(st.State == tunnel.StateUp), st.Host)
		ch <- prometheus.MustNewConstMetric(c.reconnects, prometheus.CounterValue, float64(st.Reconnects), st.Host)
		ch <- prometheus.MustNewConstMetric(c.rtt, prometheus.GaugeValue, st.KeepaliveRTT.Seconds(), st.Host)
		for _, f := range st.Forwards {
			ok := f.State == tunnel.StateUp || f.State == tunnel.StateListening
			ch <- prometheus.MustNewConstMetric(c.forwardUp, prometheus.GaugeValue, boolValue(ok), st.Host, f.Forward.String())
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
