package tunnel

import (
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/connwatch/connwatch/internal/clock"
)

// TestNetWatchDebounce feeds changes by hand and moves a fake clock: a
// burst ends in one Retry, DefaultDebounce after its last change.
func TestNetWatchDebounce(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	var retries atomic.Int32
	w := &NetWatch{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Retry: func() { retries.Add(1) }}
	events := make(chan string)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Watch(ctx, events) }()

	armedAt := func(at time.Time) {
		t.Helper()
		within(t, 2*time.Second, "timer armed at "+at.Sub(start).String(), func() bool {
			d, ok := clk.NextDeadline()
			return ok && d.Equal(at)
		})
	}
	events <- "address 192.0.2.1/24"
	armedAt(start.Add(200 * time.Millisecond))
	clk.Advance(150 * time.Millisecond)
	events <- "default route via 192.0.2.254"
	armedAt(start.Add(350 * time.Millisecond))
	clk.Advance(199 * time.Millisecond)
	time.Sleep(10 * time.Millisecond)
	if n := retries.Load(); n != 0 {
		t.Fatalf("retried %d times inside the debounce window", n)
	}
	clk.Advance(time.Millisecond)
	within(t, 2*time.Second, "one retry after the burst", func() bool { return retries.Load() == 1 })

	clk.Advance(time.Minute) // quiet: nothing more
	events <- "address 198.51.100.7/24"
	armedAt(clk.Now().Add(200 * time.Millisecond))
	clk.Advance(200 * time.Millisecond)
	within(t, 2*time.Second, "a second retry for a second burst", func() bool { return retries.Load() == 2 })
	time.Sleep(10 * time.Millisecond)
	if n := retries.Load(); n != 2 {
		t.Errorf("retries = %d, want 2", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Watch after cancel: %v", err)
	}

	// A closed event channel ends Watch too.
	closed := make(chan string)
	close(closed)
	if err := w.Watch(context.Background(), closed); err != nil {
		t.Errorf("Watch on closed events: %v", err)
	}
}

func TestNetlinkFilters(t *testing.T) {
	_, def4, _ := net.ParseCIDR("0.0.0.0/0")
	_, lan, _ := net.ParseCIDR("192.0.2.0/24")
	gw := net.ParseIP("192.0.2.254")
	routes := []struct {
		u    netlink.RouteUpdate
		want bool
	}{
		{netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Gw: gw}}, true},
		{netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Dst: def4, Gw: gw}}, true},
		{netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Dst: def4, LinkIndex: 3}}, true},
		{netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Dst: lan}}, false},
		{netlink.RouteUpdate{Type: unix.RTM_DELROUTE, Route: netlink.Route{Gw: gw}}, false},
	}
	for i, c := range routes {
		if got := routeChange(c.u) != ""; got != c.want {
			t.Errorf("route %d (%+v): %v, want %v", i, c.u, got, c.want)
		}
	}
	addr := net.IPNet{IP: net.ParseIP("192.0.2.1"), Mask: lan.Mask}
	lo := net.IPNet{IP: net.ParseIP("127.0.0.1"), Mask: net.CIDRMask(8, 32)}
	addrs := []struct {
		u    netlink.AddrUpdate
		want bool
	}{
		{netlink.AddrUpdate{LinkAddress: addr, NewAddr: true}, true},
		{netlink.AddrUpdate{LinkAddress: addr, NewAddr: false}, false},
		{netlink.AddrUpdate{LinkAddress: lo, NewAddr: true}, false},
	}
	for i, c := range addrs {
		if got := addrChange(c.u) != ""; got != c.want {
			t.Errorf("addr %d (%+v): %v, want %v", i, c.u, got, c.want)
		}
	}
	const carrier = unix.IFF_UP | unix.IFF_RUNNING | unix.IFF_LOWER_UP
	link := func(typ uint16, index int32, flags uint32) netlink.LinkUpdate {
		u := netlink.LinkUpdate{Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}}}
		u.Header.Type, u.Index, u.Flags = typ, index, flags
		return u
	}
	running := map[int32]bool{}
	links := []struct {
		u    netlink.LinkUpdate
		want string
	}{
		{link(unix.RTM_NEWLINK, 2, unix.IFF_UP), ""},               // no carrier
		{link(unix.RTM_NEWLINK, 2, carrier), "link eth0 up"},       // carrier came
		{link(unix.RTM_NEWLINK, 2, carrier), ""},                   // still up: statistics, say
		{link(unix.RTM_NEWLINK, 2, unix.IFF_UP), ""},               // carrier lost
		{link(unix.RTM_NEWLINK, 2, carrier), "link eth0 up"},       // and back
		{link(unix.RTM_NEWLINK, 1, carrier|unix.IFF_LOOPBACK), ""}, // loopback
		{link(unix.RTM_DELLINK, 2, 0), ""},                         // gone
		{link(unix.RTM_NEWLINK, 2, carrier), "link eth0 up"},       // a new link
	}
	for i, c := range links {
		if got := linkChange(c.u, running); got != c.want {
			t.Errorf("link %d: %q, want %q", i, got, c.want)
		}
	}
}
