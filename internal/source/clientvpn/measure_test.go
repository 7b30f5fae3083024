package clientvpn

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/testkit/awstest"
)

// pollInterval is the agent's default for aws_client_vpn.poll_interval.
const pollInterval = time.Minute

// TestDetectionDelay: a connection is in the snapshot of the first poll
// after it began, so the delay is at most one poll interval. Connections
// begin at random seconds (Client VPN's resolution) within an interval.
func TestDetectionDelay(t *testing.T) {
	e := newEnv(t, epA)
	s := e.source(Config{Endpoints: []string{epA}})
	rng := rand.New(rand.NewPCG(1, 2))
	var worst, total time.Duration
	const n = 30
	for i := range n {
		pollAt := e.clock.Now().Add(pollInterval)
		e.clock.Advance(time.Duration(rng.IntN(60)) * time.Second)
		id := e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: fmt.Sprint("c", i)})
		began := e.clock.Now()
		e.clock.Set(pollAt)
		snap := e.poll(s)
		j := slices.IndexFunc(snap.Sessions, func(x session.Session) bool { return x.ID == id })
		if j < 0 {
			t.Fatalf("connection %d (began %v) not seen by the poll at %v", i, began, snap.Time)
		}
		if !snap.Sessions[j].StartedAt.Equal(began) {
			t.Errorf("connection %d: StartedAt %v, want %v", i, snap.Sessions[j].StartedAt, began)
		}
		d := snap.Time.Sub(began)
		if d <= 0 || d > pollInterval {
			t.Errorf("connection %d: seen %v after it began, want (0, %v]", i, d, pollInterval)
		}
		worst = max(worst, d)
		total += d
	}
	t.Logf("detection delay over %d connections, poll every %v: max %v, mean %v (bound: one interval)", n, pollInterval, worst, total/n)
}

// TestShortConnections: a run of connections each shorter than the poll
// interval, some within one interval, some across a poll. Every one must
// be reported exactly once in Ended with its true start and end; none may
// be missed.
func TestShortConnections(t *testing.T) {
	e := newEnv(t, epA)
	s := e.source(Config{Endpoints: []string{epA}})
	rng := rand.New(rand.NewPCG(3, 4))

	type conn struct {
		start, end time.Time
		id         string
	}
	const n = 40
	var conns []*conn
	at := t0.Add(time.Second)
	for range n {
		at = at.Add(time.Duration(5+rng.IntN(40)) * time.Second)
		d := time.Duration(1+rng.IntN(59)) * time.Second // 1-59 s: shorter than a poll interval
		conns = append(conns, &conn{start: at, end: at.Add(d)})
	}
	type event struct {
		at    time.Time
		c     *conn
		begin bool
	}
	var events []event
	for _, c := range conns {
		events = append(events, event{c.start, c, true}, event{c.end, c, false})
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].at.Before(events[j].at) })
	last := events[len(events)-1].at

	seenLive := map[string]bool{}
	endedCount := map[string]int{}
	endedAs := map[string]session.Session{}
	polls := 0
	nextPoll := t0.Add(pollInterval)
	for i := 0; ; {
		// Apply the events up to the next poll, then poll.
		for ; i < len(events) && !events[i].at.After(nextPoll); i++ {
			ev := events[i]
			e.clock.Set(ev.at)
			if ev.begin {
				ev.c.id = e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: "short"})
			} else {
				e.srv.DisconnectClientVPN(epA, ev.c.id)
			}
		}
		e.clock.Set(nextPoll)
		snap := e.poll(s)
		polls++
		for _, x := range snap.Sessions {
			seenLive[x.ID] = true
		}
		for _, x := range snap.Ended {
			endedCount[x.ID]++
			endedAs[x.ID] = x
		}
		nextPoll = nextPoll.Add(pollInterval)
		if nextPoll.After(last.Add(pollInterval)) || polls > 1000 {
			break
		}
	}

	misses, betweenPolls := 0, 0
	for _, c := range conns {
		if !seenLive[c.id] {
			betweenPolls++
		}
		switch got := endedAs[c.id]; {
		case endedCount[c.id] == 0:
			misses++
			t.Errorf("%s (%v to %v) never reported as ended", c.id, c.start, c.end)
		case endedCount[c.id] > 1:
			t.Errorf("%s reported ended %d times", c.id, endedCount[c.id])
		case !got.StartedAt.Equal(c.start) || !got.EndedAt.Equal(c.end):
			t.Errorf("%s ended as %v to %v, want %v to %v", c.id, got.StartedAt, *got.EndedAt, c.start, c.end)
		}
	}
	t.Logf("%d connections of 1-59 s over %d polls every %v: %d missed; %d began and ended between two polls (never live in a snapshot: what an ActiveConnectionsCount alarm misses), all reported in Ended with both times",
		n, polls, pollInterval, misses, betweenPolls)
	if betweenPolls == 0 {
		t.Errorf("the run has no connection between two polls; it tests nothing")
	}
}

// TestPollWallTime measures the real time of one Poll against the loopback
// server, with 1 and with 1,000 connections on the endpoint.
func TestPollWallTime(t *testing.T) {
	for _, n := range []int{1, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			e := newEnv(t, epA)
			for i := range n {
				e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: fmt.Sprint("c", i), ClientIP: "172.31.0.1", IngressBytes: 1})
			}
			s := e.source(Config{Endpoints: []string{epA}})
			const rounds = 10
			var times []time.Duration
			for range rounds {
				start := time.Now()
				snap, err := s.Poll(context.Background())
				el := time.Since(start)
				if err != nil || len(snap.Sessions) != n {
					t.Fatalf("Poll: %d sessions, %v", len(snap.Sessions), err)
				}
				times = append(times, el)
			}
			slices.Sort(times)
			t.Logf("Poll with %d connection(s): median %v, max %v over %d polls", n, times[rounds/2], times[rounds-1], rounds)
			if times[rounds/2] > 2*time.Second {
				t.Errorf("median Poll took %v", times[rounds/2])
			}
		})
	}
}

// BenchmarkPoll polls one endpoint with 1 or 1,000 live connections
// through the real SDK against the loopback server.
func BenchmarkPoll(b *testing.B) {
	for _, bc := range []struct {
		conns int
		page  int32
	}{{1, 0}, {1000, 0}, {1000, 100}} {
		b.Run(fmt.Sprintf("conns=%d/page=%d", bc.conns, cmp.Or(bc.page, DefaultPageSize)), func(b *testing.B) {
			e := newEnv(b, epA)
			for i := range bc.conns {
				e.srv.ConnectClientVPN(epA, awstest.ClientVPNConnection{CommonName: fmt.Sprint("c", i), ClientIP: "172.31.0.1"})
			}
			s := e.source(Config{Endpoints: []string{epA}, PageSize: bc.page})
			b.ReportAllocs()
			for b.Loop() {
				snap, err := s.Poll(context.Background())
				if err != nil || len(snap.Sessions) != bc.conns {
					b.Fatalf("Poll: %d sessions, %v", len(snap.Sessions), err)
				}
			}
		})
	}
}
