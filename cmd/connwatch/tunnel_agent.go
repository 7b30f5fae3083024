package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/gcpace"
	"github.com/connwatch/connwatch/internal/sshconfig"
	"github.com/connwatch/connwatch/internal/tunnel"
)

// tunnelSet is tunnels kept up together, as `connwatch tunnel` and the
// agent's [tunnels] do: status files for `connwatch tunnel status`, and a
// retry of all on network changes.
type tunnelSet struct {
	tunnels []*tunnel.Tunnel
	status  *tunnel.StatusWriter
	pacer   *gcpace.Pacer // nil when GOGC or GOMEMLIMIT is set
	log     *slog.Logger
}

// newTunnelSet resolves hosts (ssh -G with -F configFile and -o options)
// and builds their tunnels. firstUp, if not nil, is called once, when a
// tunnel is first up. A process has at most one tunnelSet: its pacer
// sets the process's garbage collector.
func newTunnelSet(ctx context.Context, hosts []string, configFile string, options []string, stateDir string, tuning tunnelTuning, log *slog.Logger, firstUp func()) (*tunnelSet, error) {
	if firstUp != nil {
		firstUp = sync.OnceFunc(firstUp)
	}
	resolve := specResolver(sshOptions{r: sshconfig.Exec{}, options: options}, configFile)
	set := &tunnelSet{
		status: tunnel.NewStatusWriter(filepath.Join(stateDir, tunnel.StatusDir), log.With("source", "tunnel-status")),
		pacer:  gcpace.New(clock.Real{}),
		log:    log,
	}
	for _, h := range hosts {
		spec, err := resolve(ctx, h)
		if err != nil {
			return nil, err
		}
		if len(spec.Forwards) == 0 {
			log.Warn("host has no forwards; keeping the connection up anyway", "host", h)
		}
		var t *tunnel.Tunnel
		t = tunnel.New(spec, tunnel.Options{
			Logger: log.With("source", "tunnel"), ResolveJump: resolve,
			ProbeInterval: tuning.probe, StandbyAfter: tuning.standbyAfter(),
			Streams: set.pacer, // a nil Pacer does nothing
			OnChange: func(urgent bool) {
				set.status.Changed(urgent)
				// State changes are urgent; counters are not.
				if urgent && firstUp != nil && t.Status().State == tunnel.StateUp {
					firstUp()
				}
			},
		})
		set.tunnels = append(set.tunnels, t)
	}
	return set, nil
}

// tunnelTuning is what the flags and config set of every tunnel.
type tunnelTuning struct {
	probe   time.Duration // LocalForward probes (0: off)
	standby time.Duration // StandbyAfter (0: off)
}

// standbyAfter is Options.StandbyAfter: negative for off.
func (tt tunnelTuning) standbyAfter() time.Duration {
	if tt.standby <= 0 {
		return -1
	}
	return tt.standby
}

// retry retries every tunnel now.
func (s *tunnelSet) retry() {
	for _, t := range s.tunnels {
		t.Retry()
	}
}

// run keeps the tunnels up until ctx ends; a tunnel that gives up
// (ExitOnForwardFailure) ends them all with its error.
func (s *tunnelSet) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.status.Run(ctx, s.tunnels) })
	nw := &tunnel.NetWatch{Logger: s.log.With("source", "netwatch"), Retry: s.retry}
	g.Go(func() error { return nw.Run(ctx) })
	g.Go(func() error { return s.pacer.Run(ctx) })
	for _, t := range s.tunnels {
		g.Go(func() error { return t.Run(ctx) })
	}
	return g.Wait()
}

// agentTunnels builds the tunnels declared in the agent's config (nil
// when there are none). The agent logs a tunnel that gives up and goes on.
func agentTunnels(ctx context.Context, cfg config.Agent, log *slog.Logger) (*tunnelSet, error) {
	if len(cfg.Tunnels.Hosts) == 0 {
		return nil, nil
	}
	tuning := tunnelTuning{probe: cfg.Tunnels.ProbeInterval.Duration, standby: cfg.Tunnels.StandbyAfter.Duration}
	set, err := newTunnelSet(ctx, cfg.Tunnels.Hosts, cfg.Tunnels.SSHConfig, cfg.Tunnels.Options, cfg.StateDir, tuning, log, nil)
	if err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	return set, nil
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
