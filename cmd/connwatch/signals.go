package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/source/authlog"
	"github.com/connwatch/connwatch/internal/source/sshd"
	"github.com/connwatch/connwatch/internal/tracker"
)

// fastSignal watches for something that means connections may have
// changed, calling kick each time, until ctx ends.
type fastSignal func(ctx context.Context, kick func()) error

// signals returns the fast signals available here: sshd's log (logins go
// to logins) and, as root, the kernel's process events.
func signals(ctx context.Context, cfg config.Agent, src *sshd.Source, logins chan<- tracker.Login, log *slog.Logger) []fastSignal {
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
// file of a verified sshd listener (root's sshd, see sshd.Source), else
// journald, else /var/log/auth.log. Journald comes before auth.log
// because it says who sent a line (_UID, _EXE); rsyslog writes what any
// process claims. A file is followed only when root alone can write it
// (authlog.ErrUntrustedLog).
func sshdLogSignal(ctx context.Context, cfg config.Agent, src *sshd.Source, logins chan<- tracker.Login, log *slog.Logger) (fastSignal, string, error) {
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
			f, ok := authlog.LogFileFromListener(title)
			if !ok {
				continue
			}
			if !filepath.IsAbs(f) {
				log.Warn("not following sshd's -E file: a relative path", "file", f)
				continue
			}
			if err := authlog.CheckFile(f); err != nil {
				log.Warn("not following sshd's -E file", "err", err)
				continue
			}
			what = f
			break
		}
		if what == "auto" {
			j := authlog.NewJournal(authlog.JournalOptions{StateDir: cfg.StateDir, Logger: log})
			if err := j.Check(); err == nil {
				run, what = j.Run, "journald"
			} else if _, serr := os.Stat("/var/log/auth.log"); serr == nil {
				what = "/var/log/auth.log"
			} else {
				return nil, "", fmt.Errorf("no -E file on a verified sshd's command line, no journal, no /var/log/auth.log: %w", err)
			}
		}
	}
	if run == nil {
		if _, err := os.Stat(what); err != nil {
			return nil, "", fmt.Errorf("sshd log: %w", err)
		}
		if err := authlog.CheckFile(what); err != nil {
			return nil, "", err
		}
		run = authlog.NewFileTailer(what, authlog.FileOptions{Logger: log}).Run
	}
	warned := false
	return func(ctx context.Context, kick func()) error {
		return pump(ctx, 64, run, func(e authlog.Event) bool {
			var l tracker.Login
			switch {
			case e.Kind == authlog.Accepted:
				if !loginFromSSHD(e, src.WasSSHD) {
					if !warned {
						log.Warn("ignoring logins in sshd's log from processes that are not sshd's (forged with logger -t sshd?); more at debug level", "line", e.Raw)
						warned = true
					} else {
						log.Debug("ignoring a login from a process that is not sshd's", "line", e.Raw)
					}
					return true
				}
				l = tracker.Login{Time: e.Time, User: e.User, Addr: e.Addr, Port: e.Port}
				// Its sshd may be in no tree the source rescans (an
				// inetd or socket-activated "sshd -i"): walk /proc.
				src.WalkNext()
			case e.Kind.Ends():
				l = tracker.Login{Time: e.Time, User: e.User, Addr: e.Addr, Port: e.Port, End: true}
			default:
				return true // pre-auth noise never makes a session
			}
			select {
			case logins <- l:
				return true
			case <-ctx.Done():
				return false
			}
		}, nil, nil)
	}, what, nil
}

// loginFromSSHD tells whether an Accepted line can be believed. Lines of
// sshd's -E file and of journald have been vouched for by authlog; a
// syslog line (auth.log) names its pid itself, so it counts only when
// that pid is, or lately was, a verified sshd process or a child forked
// by one (wasSSHD). A local user who names a live sshd's pid (logger
// --id) still gets through; the login can then only keep the machine up
// (the safe side) and make a notification.
func loginFromSSHD(e authlog.Event, wasSSHD func(pid int) bool) bool {
	if e.Origin != authlog.OriginSyslog {
		return true
	}
	return e.PID > 0 && wasSSHD(e.PID)
}

// pump runs a producer that sends on a channel until ctx ends, handing
// each value to handle (which returns false to stop). Cancellation is a
// clean end. Whenever changed delivers (nil: never), onChange runs on the
// same goroutine as handle.
func pump[T any](ctx context.Context, buffer int, run func(context.Context, chan<- T) error, handle func(T) bool,
	changed <-chan struct{}, onChange func()) error {
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
		case <-changed:
			onChange()
		case v := <-vals:
			if !handle(v) {
				cancel()
				<-errc
				return nil
			}
		}
	}
}
