package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
)

// DefaultDebounce is how long NetWatch waits for the network to settle
// after the last change before it retries.
const DefaultDebounce = 200 * time.Millisecond

// NetWatch makes tunnels retry at once when the network changes (a link
// comes up, a default route or an address appears), instead of waiting
// for their next attempt: Retry is called once the changes have been
// quiet for Debounce.
type NetWatch struct {
	Retry    func()        // called after a change; required
	Debounce time.Duration // default DefaultDebounce
	Clock    clock.Clock   // default clock.Real
	Logger   *slog.Logger  // default slog.Default
}

func (w *NetWatch) defaults() {
	if w.Debounce <= 0 {
		w.Debounce = DefaultDebounce
	}
	if w.Clock == nil {
		w.Clock = clock.Real{}
	}
	if w.Logger == nil {
		w.Logger = slog.Default()
	}
}

// Run watches netlink link, route and address updates until ctx ends. Without
// netlink (no permission, not Linux) it logs that once and returns nil:
// SIGUSR1 still works.
func (w *NetWatch) Run(ctx context.Context) error {
	w.defaults()
	events, err := netlinkChanges(ctx)
	if err != nil {
		w.Logger.Warn("not watching network changes; tunnels retry on their backoff or SIGUSR1 only", keyErr, err)
		return nil
	}
	return w.Watch(ctx, events)
}

// Watch debounces events (each a description of one change) and calls
// Retry after each burst, until ctx ends or events is closed.
func (w *NetWatch) Watch(ctx context.Context, events <-chan string) error {
	w.defaults()
	var (
		tm   clock.Timer
		fire <-chan time.Time
		last string
		n    int
	)
	defer func() {
		if tm != nil {
			tm.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case why, ok := <-events:
			if !ok {
				w.Logger.Warn("network change events ended; no longer watching")
				return nil
			}
			last, n = why, n+1
			if tm == nil {
				tm = w.Clock.NewTimer(w.Debounce)
			} else {
				tm.Reset(w.Debounce)
			}
			fire = tm.C()
		case <-fire:
			fire = nil
			w.Logger.Info("network changed: retrying every tunnel now", "change", last, "changes", n)
			n = 0
			w.Retry()
		}
	}
}

// netlinkChanges subscribes to link, route and address updates and
// sends a description of each one that may bring a link back: a link
// whose carrier came up, a default route or a non-loopback address added
// or changed.
func netlinkChanges(ctx context.Context) (<-chan string, error) {
	done := make(chan struct{})
	routes := make(chan netlink.RouteUpdate, 16)
	addrs := make(chan netlink.AddrUpdate, 16)
	links := make(chan netlink.LinkUpdate, 16)
	if err := netlink.RouteSubscribe(routes, done); err != nil {
		close(done)
		return nil, fmt.Errorf("subscribe to route updates: %w", err)
	}
	if err := netlink.AddrSubscribe(addrs, done); err != nil {
		close(done)
		go drain(routes)
		return nil, fmt.Errorf("subscribe to address updates: %w", err)
	}
	if err := netlink.LinkSubscribe(links, done); err != nil {
		close(done)
		go drain(routes)
		go drain(addrs)
		return nil, fmt.Errorf("subscribe to link updates: %w", err)
	}
	out := make(chan string)
	go func() {
		defer close(out)
		defer func() {
			close(done)
			// The subscriptions' goroutines may be blocked sending.
			go drain(routes)
			go drain(addrs)
			go drain(links)
		}()
		rc, ac, lc := (<-chan netlink.RouteUpdate)(routes), (<-chan netlink.AddrUpdate)(addrs), (<-chan netlink.LinkUpdate)(links)
		running := map[int32]bool{} // carrier by link index, as last seen
		for rc != nil || ac != nil || lc != nil {
			var why string
			select {
			case <-ctx.Done():
				return
			case u, ok := <-rc:
				if !ok {
					rc = nil
					continue
				}
				why = routeChange(u)
			case u, ok := <-ac:
				if !ok {
					ac = nil
					continue
				}
				why = addrChange(u)
			case u, ok := <-lc:
				if !ok {
					lc = nil
					continue
				}
				why = linkChange(u, running)
			}
			if why == "" {
				continue
			}
			select {
			case out <- why:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}

// routeChange describes a default route added or changed, else "".
func routeChange(u netlink.RouteUpdate) string {
	if u.Type != unix.RTM_NEWROUTE {
		return ""
	}
	if u.Dst != nil {
		if ones, _ := u.Dst.Mask.Size(); ones != 0 {
			return ""
		}
	}
	if u.Gw != nil {
		return "default route via " + u.Gw.String()
	}
	return fmt.Sprintf("default route on link %d", u.LinkIndex)
}

// addrChange describes a non-loopback address added or changed, else "".
func addrChange(u netlink.AddrUpdate) string {
	if !u.NewAddr || u.LinkAddress.IP == nil || u.LinkAddress.IP.IsLoopback() {
		return ""
	}
	return "address " + (&net.IPNet{IP: u.LinkAddress.IP, Mask: u.LinkAddress.Mask}).String()
}

// linkChange describes a link whose carrier came up (IFF_RUNNING and
// IFF_LOWER_UP set where they were not, by running, which it updates),
// else "". Links are new to it at first sight: the first update of a
// link that is already running counts.
func linkChange(u netlink.LinkUpdate, running map[int32]bool) string {
	i := u.Index
	if u.Header.Type == unix.RTM_DELLINK {
		delete(running, i)
		return ""
	}
	on := u.Flags&unix.IFF_RUNNING != 0 && u.Flags&unix.IFF_LOWER_UP != 0 && u.Flags&unix.IFF_LOOPBACK == 0
	was := running[i]
	running[i] = on
	if !on || was {
		return ""
	}
	name := strconv.Itoa(int(i))
	if u.Link != nil && u.Link.Attrs() != nil && u.Link.Attrs().Name != "" {
		name = u.Link.Attrs().Name
	}
	return "link " + name + " up"
}
