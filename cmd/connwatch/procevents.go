package main

import (
	"context"
	"errors"

	"github.com/connwatch/connwatch/internal/procevents"
	"github.com/connwatch/connwatch/internal/source/sshd"
)

// procEventSignal kicks a burst of scans whenever an sshd process forks,
// execs or exits (a connection arrives, authenticates, opens a channel or
// ends), and when events were lost.
func procEventSignal(src *sshd.Source) (fastSignal, error) {
	l, err := procevents.Listen()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, kick func()) error {
		defer l.Close()
		evs := make(chan procevents.Event, 256)
		errc := make(chan error, 1)
		go func() { errc <- l.Run(ctx, evs) }()
		for {
			select {
			case err := <-errc:
				if errors.Is(err, context.Canceled) {
					return nil
				}
				return err
			case e := <-evs:
				switch e.Kind {
				case procevents.Fork:
					if src.Watches(e.ParentPID) {
						kick()
					}
				case procevents.Exec, procevents.Exit:
					if src.Watches(e.PID) {
						kick()
					}
				case procevents.Overrun:
					kick()
				}
			}
		}
	}, nil
}
