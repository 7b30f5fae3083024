package main

import (
	"context"
	"slices"

	"github.com/connwatch/connwatch/internal/procevents"
	"github.com/connwatch/connwatch/internal/source/sshd"
)

// eventListener is what procEventSignal uses of a procevents.Listener.
type eventListener interface {
	Run(ctx context.Context, out chan<- procevents.Event) error
	Filter(pids []int) error
	Close() error
}

var _ eventListener = (*procevents.Listener)(nil)

// procEventSignal kicks a burst of scans whenever a verified sshd process
// forks, execs or exits, or a child of one exits (a connection arrives,
// authenticates, opens a channel or ends), and when events were lost. The
// kernel is told to deliver only those processes' events, so the rest of
// the machine — a user forking in a loop included — costs nothing. While
// events come, the source's scans read only the sshd process trees and
// walk all of /proc rarely (sshd.EventWalkEvery); when they stop, every
// scan walks again.
func procEventSignal(src *sshd.Source) (fastSignal, error) {
	l, err := procevents.Listen()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, kick func()) error {
		return followProcEvents(ctx, l, src, kick)
	}, nil
}

// followProcEvents runs l until ctx ends, keeping its filter on the
// source's watched processes, and closes it.
func followProcEvents(ctx context.Context, l eventListener, src *sshd.Source, kick func()) error {
	defer l.Close()
	var filtered []int
	refilter := func() {
		pids := src.WatchedPIDs()
		if filtered != nil && slices.Equal(pids, filtered) {
			return
		}
		filtered = pids
		if err := l.Filter(pids); err != nil {
			// Too many to name (or the kernel refused): every event
			// comes, and the source sorts them here.
			filtered = nil
		}
	}
	// From the start: until a scan finds sshd, nothing is watched.
	refilter()
	src.SetEvents(true)
	defer src.SetEvents(false)
	return pump(ctx, 256, l.Run, func(e procevents.Event) bool {
		switch e.Kind {
		case procevents.Fork:
			if src.Forked(e.ParentPID, e.PID) {
				kick()
			}
		case procevents.Exec:
			if src.Execed(e.PID) {
				kick()
			}
		case procevents.Exit:
			if src.Exited(e.PID, e.ParentPID) {
				kick()
			}
		case procevents.Overrun:
			src.WalkNext() // anything may have happened
			kick()
		}
		return true
	}, src.WatchChanged(), refilter)
}
