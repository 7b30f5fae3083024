package main

import (
	"context"

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
		return pump(ctx, 256, l.Run, func(e procevents.Event) bool {
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
			return true
		})
	}, nil
}
