package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sync/errgroup"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/host"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/safefile"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/sink/cloudwatch"
	promsink "github.com/connwatch/connwatch/internal/sink/prometheus"
	"github.com/connwatch/connwatch/internal/source/sshd"
	"github.com/connwatch/connwatch/internal/tracker"
	"github.com/connwatch/connwatch/internal/tunnel"
)

// runAgent starts the agent's parts in order, each adding to the main
// loop's options and to what runs beside it, then runs them all until
// ctx ends or one fails.
func runAgent(ctx context.Context, cfg config.Agent, reload func() (config.Agent, error), stdout, stderr io.Writer) error {
	r := &agentRun{cfg: cfg, log: newLogger(cfg, stderr), stdout: stdout, reload: reload}
	defer r.close()
	for _, start := range []func(context.Context) error{
		r.startState,         // state directory, events file, boot, saved policy
		r.startMetrics,       // the metrics address is bound before anything else
		r.startPolicy,        // idle policy, stop action, holds
		r.startSessions,      // sshd scans, sshd log and process events, VPN pollers
		r.startNotifications, // webhook, SNS, command: each behind an outbox
		r.startCloudWatch,    // the session count (and one series per VPN kind)
		r.startTunnels,       // the ssh_config Hosts kept up
		r.startReload,        // SIGHUP
	} {
		if err := start(ctx); err != nil {
			return err
		}
	}
	return r.run(ctx)
}

// agentRun is the agent being assembled: the main loop's options and the
// parts that run beside it.
type agentRun struct {
	cfg    config.Agent
	log    *slog.Logger
	stdout io.Writer
	reload func() (config.Agent, error)

	opts agent.Options
	// beside run next to the main loop: the first error stops the agent
	// (a part that may fail alone logs its error and returns nil).
	beside  []func(ctx context.Context) error
	closers []func()

	// Shared between parts.
	events     io.Writer
	boot       time.Time
	bootID     string
	saved      *policy.State
	rejectLock func(name string, err error)
	startHold  *hold.StartHold
	metrics    *promsink.Metrics
	metricsLn  net.Listener
	src        *sshd.Source
	sinks      *sinkSet
	agent      *agent.Agent
}

func (r *agentRun) close() {
	for i := len(r.closers) - 1; i >= 0; i-- {
		r.closers[i]()
	}
}

func (r *agentRun) startState(context.Context) error {
	cfg := r.cfg
	if err := agent.PrepareStateDir(cfg.StateDir); err != nil {
		return err
	}
	r.events = r.stdout
	if cfg.Events != "-" {
		ef, err := safefile.OpenAppend(cfg.Events, 0o640)
		if err != nil {
			return fmt.Errorf("open events file: %w", err)
		}
		r.closers = append(r.closers, func() { ef.Close() })
		r.events = ef
	}
	var err error
	if r.boot, err = host.BootTime(cfg.Proc); err != nil {
		return err
	}
	if r.bootID, err = host.BootID(cfg.Proc); err != nil {
		r.log.Warn("no boot id; the idle countdown will not survive reboots cleanly", "err", err)
	}
	if r.saved, err = agent.LoadPolicyState(cfg.StateDir); err != nil {
		r.log.Warn("saved policy state unreadable; starting afresh", "err", err)
		r.saved = nil
	}
	return nil
}

// startMetrics binds the metrics address: the operator asked for
// metrics, so a web config that does not check, or an address another
// process holds (it would answer scrapes in connwatch's name), stops the
// start. Serving fails the agent too: a port given up could be taken by
// anyone (under systemd, the restart says so loudly).
func (r *agentRun) startMetrics(ctx context.Context) error {
	cfg := r.cfg
	if cfg.MetricsAddr == "" {
		return nil
	}
	if err := promsink.ValidateWebConfig(cfg.MetricsWebConfigFile); err != nil {
		return err
	}
	ln, err := promsink.Listen(ctx, cfg.MetricsAddr)
	if err != nil {
		return err
	}
	r.closers = append(r.closers, func() { ln.Close() })
	r.metricsLn = ln
	r.metrics = promsink.New(promsink.Options{PerUserLabels: cfg.MetricsPerUser, Kinds: cfg.Kinds(), LoopInterval: cfg.ScanInterval.Duration})
	r.opts.Observers = append(r.opts.Observers, metricsObserver{r.metrics})
	r.beside = append(r.beside, func(ctx context.Context) error {
		return r.metrics.ServeListener(ctx, ln, promsink.ServeOptions{WebConfigFile: cfg.MetricsWebConfigFile, Logger: r.log.With("sink", "prometheus")})
	})
	return nil
}

// parts makes the parts of cfg (buildParts) with the start hold, which
// lives across reloads, among the holds and its cap set from cfg.
func (r *agentRun) parts(cfg config.Agent) (parts, error) {
	p, err := buildParts(cfg, r.rejectLock)
	if err != nil {
		return parts{}, err
	}
	p.holds = append(p.holds, r.startHold.Holds)
	r.startHold.SetMax(cfg.StartHoldMax())
	return p, nil
}

// startPolicy makes the idle policy, the stop action and the holds, and
// the warnings before a stop.
func (r *agentRun) startPolicy(context.Context) error {
	cfg := r.cfg
	r.rejectLock = hold.WarnOnce(r.log)
	// The start hold reads the instance's tags beside the main loop,
	// which only asks it what it last read.
	r.startHold = hold.NewStartHold(hold.StartHoldOptions{
		Reader: &hold.IMDSTag{Key: hold.StartHoldTag}, Clock: clock.Real{}, Boot: r.boot,
		Max: cfg.StartHoldMax(), Logger: r.log.With("hold", policy.HoldStart),
	})
	r.beside = append(r.beside, r.startHold.Run)
	pp, err := r.parts(cfg)
	if err != nil {
		return err
	}
	if cfg.StartHold() {
		r.log.Info("start hold: reading the instance tag from instance metadata", "tag", hold.StartHoldTag,
			"every", hold.DefaultStartHoldEvery, "start_hold_max", cfg.Idle.StartHoldMax.Duration)
	}
	pol, err := policy.New(pp.policy, r.boot, r.bootID, r.saved)
	if err != nil {
		return usageError{err}
	}
	r.opts.Policy, r.opts.Actor, r.opts.Holds = pol, pp.actor, pp.holds
	r.opts.ActionTimeout = cfg.Action.Timeout.Duration
	if cfg.Idle.Wall {
		r.opts.Warn = wall
	}
	if cfg.Idle.WarnCommand != "" {
		r.opts.OnWarning = func(ctx context.Context, e event.Event) {
			if err := runHook(ctx, cfg.Idle.WarnCommand, e); err != nil {
				r.log.Warn("warn command failed", "err", err)
			}
		}
	}
	return nil
}

// startSessions sets up what sees sessions: the periodic sshd scan, the
// fast signals that trigger quicker scans (process events, sshd's log,
// whose logins go to the tracker) and the VPN pollers.
func (r *agentRun) startSessions(ctx context.Context) error {
	cfg := r.cfg
	r.src = sshd.New(sshd.Options{ProcRoot: cfg.Proc, Ports: cfg.SSHPorts})
	logins := make(chan tracker.Login, 64)
	kicks := make(chan struct{}, 1)
	kick := func() {
		select {
		case kicks <- struct{}{}:
		default:
		}
	}
	pollers, closePollers, err := vpnPollers(cfg, clock.Real{})
	if err != nil {
		return err
	}
	r.closers = append(r.closers, closePollers)
	for _, p := range pollers {
		r.log.Info("watching VPN clients", "source", p.Poller.Name(), "kind", p.Poller.Kind(), "every", p.Interval)
	}
	r.opts.Source, r.opts.Pollers, r.opts.Listeners = r.src, pollers, r.src.Listeners
	r.opts.Scope = agent.Scope{ProcRoot: cfg.Proc, Ports: cfg.SSHPorts}
	r.opts.Kicks, r.opts.Logins = kicks, logins
	r.opts.ScanInterval = cfg.ScanInterval.Duration
	for _, sig := range signals(ctx, cfg, r.src, logins, r.log) {
		r.beside = append(r.beside, func(ctx context.Context) error {
			if err := sig(ctx, kick); err != nil && ctx.Err() == nil {
				// A fast signal failing is not fatal: the periodic scan goes on.
				r.log.Warn("fast signal stopped; relying on periodic scans", "err", err)
			}
			return nil
		})
	}
	return nil
}

// startNotifications opens the notification sinks, each behind its
// durable outbox.
func (r *agentRun) startNotifications(ctx context.Context) error {
	sinks, err := openSinks(ctx, r.cfg, r.log)
	if err != nil {
		return err
	}
	r.closers = append(r.closers, sinks.close)
	r.sinks = sinks
	r.beside = append(r.beside, sinks.runs(r.metrics)...)
	return nil
}

// startCloudWatch starts the CloudWatch publishers. The main metric is
// what the cloud-side stop alarm watches: it counts every kind that keeps
// the machine up (only SSH unless VPN kinds are watched), so that alarm
// never stops a machine with a VPN user the local policy would keep up.
// Each VPN kind has its own metric series: the SSH one stays a drop-in
// for the classic recipe.
func (r *agentRun) startCloudWatch(context.Context) error {
	cfg := r.cfg
	if !cfg.CloudWatch.Enabled {
		return nil
	}
	cw := cfg.CloudWatch
	publisher := func(spool, metric string, dims map[string]string, log *slog.Logger, kinds []session.Kind) (*cloudwatch.Publisher, error) {
		p, err := cloudwatch.New(cloudwatch.Options{
			SpoolDir: filepath.Join(cfg.StateDir, spool), Namespace: cw.Namespace, MetricName: metric,
			Dimensions: dims, Period: cw.Period.Duration, BatchInterval: cw.Batch.Duration, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		r.closers = append(r.closers, func() { p.Close() })
		r.opts.Observers = append(r.opts.Observers, cloudWatchObserver{p: p, kinds: kinds})
		r.beside = append(r.beside, p.Run)
		return p, nil
	}
	main, err := publisher("cloudwatch", cw.MetricName, cw.Dimensions, r.log.With("sink", "cloudwatch"), cfg.KeepAwakeKinds())
	if err != nil {
		return fmt.Errorf("start CloudWatch publisher: %w", err)
	}
	for _, kind := range cfg.Kinds() {
		if !kind.IsVPN() || cw.VPNMetricName == "" {
			continue
		}
		dims := maps.Clone(cw.Dimensions)
		if dims == nil {
			dims = map[string]string{}
		}
		dims[cloudwatch.KindDimension] = string(kind)
		if _, err := publisher("cloudwatch-"+string(kind), cw.VPNMetricName, dims, r.log.With("sink", "cloudwatch", "kind", kind), []session.Kind{kind}); err != nil {
			return fmt.Errorf("start CloudWatch publisher for %s: %w", kind, err)
		}
	}
	if name := cw.ResetAlarm; name != "" {
		if name == "auto" {
			name = ""
		}
		r.beside = append(r.beside, func(ctx context.Context) error {
			reset, err := main.ResetAlarmIfStuck(ctx, name)
			switch {
			case err != nil && !errors.Is(err, cloudwatch.ErrAlarmNotFound) && ctx.Err() == nil:
				r.log.Warn("could not check the CloudWatch alarm", "err", err)
			case reset:
				r.log.Info("CloudWatch alarm was stuck in ALARM; reset to OK so it can fire again")
			}
			return nil
		})
	}
	return nil
}

// startTunnels keeps the configured ssh_config Hosts up; their failure
// never stops the agent.
func (r *agentRun) startTunnels(ctx context.Context) error {
	tunnels, err := agentTunnels(ctx, r.cfg, r.log)
	if err != nil || tunnels == nil {
		return err
	}
	if r.metrics != nil {
		r.metrics.Registerer().MustRegister(tunnel.NewCollector(tunnels.tunnels))
	}
	r.beside = append(r.beside, func(ctx context.Context) error {
		if err := tunnels.run(ctx); err != nil && ctx.Err() == nil {
			r.log.Error("tunnels stopped; the agent goes on", "err", err)
		}
		return nil
	})
	return nil
}

// startReload applies a new configuration on SIGHUP: the policy, action
// and holds through the main loop, the notification sinks' secrets.
// Settings that need a restart are named; state_dir and proc refuse the
// reload.
func (r *agentRun) startReload(context.Context) error {
	r.beside = append(r.beside, func(ctx context.Context) error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
			}
			if err := r.reloadOnce(); err != nil {
				r.log.Error("reload failed; keeping the old configuration", "err", err)
			}
		}
	})
	return nil
}

func (r *agentRun) reloadOnce() error {
	newCfg, err := r.reload()
	if err != nil {
		return err
	}
	if fixed := restartOnly(r.cfg, newCfg); len(fixed) > 0 {
		if slices.Contains(fixed, "state_dir") || slices.Contains(fixed, "proc") {
			r.log.Error("reload refused: state_dir and proc can only change with a restart", "changed", fixed)
			return nil
		}
		r.log.Warn("reload: these settings take effect only after a restart", "changed", fixed)
	}
	np, err := r.parts(newCfg)
	if err != nil {
		return err
	}
	r.agent.Reconfigure(agent.Reconfig{Policy: np.policy, Actor: np.actor, Holds: np.holds})
	r.sinks.reload(r.log)
	trimStartup(r.log)
	return nil
}

// run makes the main loop and runs it with every part beside it.
func (r *agentRun) run(ctx context.Context) error {
	cfg := r.cfg
	r.opts.Events = eventFanout{event.NewWriter(r.events), r.sinks.publisher}
	r.opts.StateDir, r.opts.Clock, r.opts.Logger = cfg.StateDir, clock.Real{}, r.log
	r.opts.Ready = func() {
		daemon.SdNotify(false, daemon.SdNotifyReady)
		trimStartup(r.log)
	}
	if interval, err := daemon.SdWatchdogEnabled(false); err == nil && interval > 0 {
		var last time.Time
		r.opts.Alive = func() {
			if time.Since(last) >= interval/3 {
				daemon.SdNotify(false, daemon.SdNotifyWatchdog)
				last = time.Now()
			}
		}
	}
	a, err := agent.New(r.opts)
	if err != nil {
		return err
	}
	r.agent = a
	r.log.Info("agent starting", "state_dir", cfg.StateDir, "action", r.opts.Actor.Name(),
		"window", r.opts.Policy.Status(time.Now()).Window,
		"boot_grace", cfg.Idle.BootGrace.Duration, "start_hold_max", cfg.StartHoldMax(), "warn_before", cfg.Idle.WarnBefore.Duration)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.Run(gctx) })
	for _, run := range r.beside {
		g.Go(func() error { return run(gctx) })
	}
	return g.Wait()
}
