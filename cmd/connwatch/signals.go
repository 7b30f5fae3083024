package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/source/authlog"
	"github.com/connwatch/connwatch/internal/source/sshd"
)

// fastSignal watches for something that means connections may have
// changed, calling kick each time, until ctx ends.
type fastSignal func(ctx context.Context, kick func()) error

// signals returns the fast signals available here: sshd's log (logins go
// to logins) and, as root, the kernel's process events.
func signals(ctx context.Context, cfg config.Agent, src *sshd.Source, logins chan<- agent.Login, log *slog.Logger) []fastSignal {
	var out []fastSignal
	if sig, what, err := sshdLogSignal(ctx, cfg, src, logins, log); err != nil {
		log.Warn("not following sshd's log; sessions shorter than a scan may be missed without process events", "err", err)
	} else if sig != nil {
		log.Info("following sshd's log", "log", what)
		out = append(out, sig)
	}
	if sig, err := procEventSignal(src); err != nil {
		log.Warn("no process events; scanning every scan interval and on sshd log lines", "err", err)
	} else {
		log.Info("subscribed to process events")
		out = append(out, sig)
	}
	return out
}

// sshdLogSignal follows sshd's log: the file given, or for "auto" the -E
// file of the running listener, /var/log/auth.log, or journald.
func sshdLogSignal(ctx context.Context, cfg config.Agent, src *sshd.Source, logins chan<- agent.Login, log *slog.Logger) (fastSignal, string, error) {
	var run func(ctx context.Context, out chan<- authlog.Event) error
	what := cfg.SSHDLog
	switch cfg.SSHDLog {
	case "":
		return nil, "", nil
	case "auto":
		if _, err := src.Scan(ctx); err != nil {
			return nil, "", fmt.Errorf("find sshd: %w", err)
		}
		for _, title := range src.Listeners() {
			if f, ok := authlog.LogFileFromListener(title); ok {
				what = f
				break
			}
		}
		if what == "auto" {
			if _, err := os.Stat("/var/log/auth.log"); err == nil {
				what = "/var/log/auth.log"
			}
		}
		if what == "auto" {
			j := authlog.NewJournal(authlog.JournalOptions{StateDir: cfg.StateDir, Logger: log})
			if err := j.Check(); err != nil {
				return nil, "", fmt.Errorf("no -E file on sshd's command line, no /var/log/auth.log, no journal: %w", err)
			}
			run, what = j.Run, "journald"
		}
	}
	if run == nil {
		if _, err := os.Stat(what); err != nil {
			return nil, "", fmt.Errorf("sshd log: %w", err)
		}
		run = authlog.NewFileTailer(what, authlog.FileOptions{Logger: log}).Run
	}
	return func(ctx context.Context, kick func()) error {
		return pump(ctx, 64, run, func(e authlog.Event) bool {
			var l agent.Login
			switch {
			case e.Kind == authlog.Accepted:
				l = agent.Login{Time: e.Time, User: e.User, Addr: e.Addr, Port: e.Port}
			case e.Kind.Ends():
				l = agent.Login{Time: e.Time, User: e.User, Addr: e.Addr, Port: e.Port, End: true}
			default:
				return true // pre-auth noise never makes a session
			}
			select {
			case logins <- l:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}, what, nil
}

// pump runs a producer that sends on a channel until ctx ends, handing
// each value to handle (which returns false to stop). Cancellation is a
// clean end.
func pump[T any](ctx context.Context, buffer int, run func(context.Context, chan<- T) error, handle func(T) bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	vals := make(chan T, buffer)
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, vals) }()
	for {
		select {
		case err := <-errc:
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		case v := <-vals:
			if !handle(v) {
				cancel()
				<-errc
				return nil
			}
		}
	}
}
