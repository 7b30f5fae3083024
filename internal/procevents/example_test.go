//go:build linux

package procevents_test

import (
	"context"
	"errors"
	"log"
	"os/signal"
	"syscall"

	"github.com/connwatch/connwatch/internal/procevents"
)

// A consumer looks at a process in /proc when it starts a new program, and
// rescans everything when events were lost.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	l, err := procevents.Listen()
	if errors.Is(err, procevents.ErrPermission) || errors.Is(err, procevents.ErrUnavailable) {
		log.Printf("no process events, periodic scans only: %v", err)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()

	events := make(chan procevents.Event, 4096)
	go func() {
		if err := l.Run(ctx, events); err != nil && !errors.Is(err, context.Canceled) {
			log.Print(err)
		}
	}()
	for {
		select {
		case ev := <-events:
			switch ev.Kind {
			case procevents.Exec:
				log.Printf("look at /proc/%d", ev.PID)
			case procevents.Overrun:
				log.Printf("lost events (%d times so far): rescan /proc", l.Lost())
			}
		case <-ctx.Done():
			return
		}
	}
}
