package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/netnstest"
	"github.com/connwatch/connwatch/internal/testkit/openvpntest"
	"github.com/connwatch/connwatch/internal/testkit/wgtest"
)

// TestAgentVPNBench measures the agent end to end with its default poll
// intervals (5 s for WireGuard and OpenVPN): N connections per kind, each
// held a little longer than one poll, against real peers. It reports
// misses and the delay from the connection being up to its session_start
// line in the events file, and from its end to session_end. Opt-in:
// scripts/bench-vpn.sh sets CONNWATCH_BENCH_VPN=N.
func TestAgentVPNBench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CONNWATCH_BENCH_VPN"))
	if n <= 0 {
		t.Skip("set CONNWATCH_BENCH_VPN (scripts/bench-vpn.sh)")
	}
	const hold = 6 * time.Second // one default poll and a second
	t.Run("openvpn", func(t *testing.T) {
		srv := openvpntest.Start(t, openvpntest.Options{Proto: "tcp", Management: openvpntest.ManagementUnix})
		a := startVPNAgent(t, "--openvpn-management", "unix:"+srv.ManagementSocket)
		var starts, ends []time.Duration
		for i := range n {
			time.Sleep(rand.N(5 * time.Second)) // a random phase against the poll
			cl := srv.Connect(t, fmt.Sprintf("bench-%d", i), openvpntest.ClientOptions{})
			up := cl.ReadyAt
			st := a.waitSession(t, session.KindOpenVPN, event.SessionStart, 2*i+1, 2*hold)
			starts = append(starts, st.Sub(up))
			time.Sleep(max(0, hold-time.Since(up)))
			cl.Stop()
			en := a.waitSession(t, session.KindOpenVPN, event.SessionEnd, 2*i+2, 2*hold)
			ends = append(ends, en.Sub(cl.StoppedAt))
		}
		benchReport(t, "openvpn (tcp, management, 5 s poll)", n, a.sessionEvents(t, session.KindOpenVPN), starts, ends)
	})
	t.Run("wireguard", func(t *testing.T) {
		wgtest.Require(t)
		nsA, nsB := netnstest.New(t), netnstest.New(t)
		aAddr, _ := nsA.Link(t, nsB)
		srv := wgtest.Server(t, nsA)
		cfg := filepath.Join(t.TempDir(), "connwatch.toml")
		// A short handshake timeout so that each connection also ends
		// within the run; WireGuard's own is 3 minutes.
		text := fmt.Sprintf("[wireguard]\nenabled = true\ninterfaces = [%q]\nhandshake_timeout = \"5s\"\n", srv.Iface)
		if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		a := startVPNAgent(t, "--config", cfg)
		var starts, ends []time.Duration
		for i := range n {
			time.Sleep(rand.N(5 * time.Second))
			cl := wgtest.Client(t, nsB, srv, aAddr, 52000+i, wgtest.TunnelNet+strconv.Itoa(10+i))
			up := wgtest.Ping(t, nsB, wgtest.ServerIP)
			st := a.waitSession(t, session.KindWireGuard, event.SessionStart, 2*i+1, 2*hold)
			starts = append(starts, st.Sub(up))
			time.Sleep(max(0, hold-time.Since(up)))
			cl.Stop(t, os.Interrupt)
			// It ends handshake_timeout after its handshake.
			en := a.waitSession(t, session.KindWireGuard, event.SessionEnd, 2*i+2, 3*hold)
			ends = append(ends, en.Sub(up.Add(5*time.Second)))
		}
		benchReport(t, "wireguard (5 s poll, 5 s handshake timeout; end delay counted from the timeout)", n, a.sessionEvents(t, session.KindWireGuard), starts, ends)
	})
}

// waitSession waits until the events file holds the k-th session event
// of kind and checks it is of type typ; it returns when it was seen.
func (a *vpnAgent) waitSession(t *testing.T, kind session.Kind, typ event.Type, k int, within time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		evs := a.sessionEvents(t, kind)
		if len(evs) >= k {
			seen := time.Now()
			if evs[k-1].Type != typ {
				t.Fatalf("event %d is %s, want %s", k, evs[k-1].Type, typ)
			}
			return seen
		}
		if time.Now().After(deadline) {
			t.Fatalf("event %d (%s) not seen within %v; events:\n%s", k, typ, within, readFile(a.events))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func benchReport(t *testing.T, what string, n int, evs []event.Event, starts, ends []time.Duration) {
	t.Helper()
	ids := map[string]int{}
	for _, e := range evs {
		ids[e.Session.ID]++
	}
	missed := n - len(ids)
	for id, c := range ids {
		if c != 2 {
			t.Errorf("session %s has %d events, want a start and an end", id, c)
		}
	}
	t.Logf("%s: %d connections, %d missed; connect to session_start %s; end to session_end %s", what, n, missed, stats(starts), stats(ends))
}

func stats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("min %v median %v mean %v max %v", r(s[0]), r(s[len(s)/2]), r(sum/time.Duration(len(s))), r(s[len(s)-1]))
}
