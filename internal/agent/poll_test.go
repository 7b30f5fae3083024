package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/session"
)

// vpnPoller is a Poller whose answers the test sets.
type vpnPoller struct {
	mu    sync.Mutex
	clk   clock.Clock
	sess  []session.Session
	ended []session.Session
	err   error
	polls int
}

func (p *vpnPoller) Name() string       { return "wireguard" }
func (p *vpnPoller) Kind() session.Kind { return session.KindWireGuard }
func (p *vpnPoller) Poll(context.Context) (session.Snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.polls++
	if p.err != nil {
		return session.Snapshot{}, p.err
	}
	snap := session.Snapshot{Time: p.clk.Now(), Complete: true, Sessions: append([]session.Session(nil), p.sess...), Ended: p.ended}
	p.ended = nil
	return snap, nil
}

func (p *vpnPoller) set(err error, ended []session.Session, sess ...session.Session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.err, p.ended, p.sess = err, ended, sess
}

func newPollAgent(t *testing.T, clk *clock.Fake, p *vpnPoller, ignore ...session.Kind) (*Agent, *recorder, *countingActor) {
	t.Helper()
	pol, err := policy.New(policy.Config{Period: time.Minute, EvaluationPeriods: 3, IgnoreKinds: ignore}, t0.Add(-time.Hour), "boot", nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, actor := &recorder{}, &countingActor{}
	a, err := New(Options{Source: &scripted{clk: clk}, Pollers: []Polled{{Poller: p, Interval: 5 * time.Second}}, Policy: pol, Actor: actor,
		Events: rec, Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a, rec, actor
}

// pollNow polls p as the agent's poller goroutine would and hands the
// answer to the loop.
func pollNow(a *Agent, p *vpnPoller, clk clock.Clock) {
	snap, err := p.Poll(context.Background())
	a.received(pollResult{name: p.Name(), kind: p.Kind(), snap: snap, err: err, at: clk.Now()})
}

// drivePolling steps the agent every second for d, polling every 5 s.
func drivePolling(a *Agent, p *vpnPoller, clk *clock.Fake, d time.Duration) {
	end := clk.Now().Add(d)
	for i := 0; clk.Now().Before(end); i++ {
		if i%5 == 0 {
			pollNow(a, p, clk)
		}
		drive(a, clk, time.Second)
	}
}

func TestAgentNeverStopsBeforeTheFirstPoll(t *testing.T) {
	clk := clock.NewFake(t0)
	p := &vpnPoller{clk: clk}
	a, rec, actor := newPollAgent(t, clk, p)
	drive(a, clk, 10*time.Minute)
	if actor.calls != 0 {
		t.Fatalf("stopped before the VPN source answered; events %v", rec.types())
	}
	if got := rec.types(); len(got) != 1 || got[0] != "blind" {
		t.Errorf("events %v, want one blind", got)
	}
	// Once it answers (nobody connected), the machine stops.
	drivePolling(a, p, clk, 6*time.Minute)
	if actor.calls != 1 {
		t.Errorf("stops = %d after the source answered; events %v", actor.calls, rec.types())
	}
}

func TestAgentVPNSessionKeepsAwakeUnlessIgnored(t *testing.T) {
	peer := session.Session{ID: "wg-1", Kind: session.KindWireGuard, User: "alice", StartedAt: t0}
	for _, ignore := range []bool{false, true} {
		t.Run(fmt.Sprint("ignored=", ignore), func(t *testing.T) {
			clk := clock.NewFake(t0)
			p := &vpnPoller{clk: clk}
			var kinds []session.Kind
			if ignore {
				kinds = []session.Kind{session.KindWireGuard}
			}
			a, rec, actor := newPollAgent(t, clk, p, kinds...)
			p.set(nil, nil, peer)
			drivePolling(a, p, clk, 10*time.Minute)
			if stopped := actor.calls > 0; stopped != ignore {
				t.Errorf("stops %d with a connected peer (kind ignored: %v); events %v", actor.calls, ignore, rec.types())
			}
			if got := rec.types(); len(got) < 1 || got[0] != "session_start" {
				t.Errorf("events %v, want a session_start first either way", got)
			}
		})
	}
}

func TestAgentFailedPollKeepsSessionsAndNeverStops(t *testing.T) {
	clk := clock.NewFake(t0)
	p := &vpnPoller{clk: clk}
	a, rec, actor := newPollAgent(t, clk, p)
	peer := session.Session{ID: "wg-1", Kind: session.KindWireGuard, User: "alice", StartedAt: t0}
	p.set(nil, nil, peer)
	drivePolling(a, p, clk, 10*time.Second)
	p.set(errors.New("open /var/run/wireguard/wg0.sock: permission denied"), nil)
	drivePolling(a, p, clk, 10*time.Minute)
	if actor.calls != 0 {
		t.Fatalf("stopped while the VPN source failed")
	}
	if got := fmt.Sprint(rec.types()); got != "[session_start blind]" {
		t.Errorf("events %s: the session must be kept, not ended", got)
	}
	if s := a.tracker.Sessions(); len(s) != 1 {
		t.Errorf("sessions %v", s)
	}
	// It works again and the peer is gone: it ends now.
	p.set(nil, nil)
	drivePolling(a, p, clk, 2*time.Second)
	if got := fmt.Sprint(rec.types()); !strings.HasPrefix(got, "[session_start blind session_end sighted") {
		t.Errorf("events %s", got)
	}
}

func TestAgentIgnoredKindBlindDoesNotHoldTheMachine(t *testing.T) {
	clk := clock.NewFake(t0)
	p := &vpnPoller{clk: clk, err: errors.New("no such device")}
	a, rec, actor := newPollAgent(t, clk, p, session.KindWireGuard)
	drivePolling(a, p, clk, 10*time.Minute)
	if actor.calls != 1 {
		t.Errorf("stops %d: a blind view of a kind that does not keep the machine up must not hold it; events %v", actor.calls, rec.types())
	}
}

func TestAgentShortVPNConnectionBetweenPolls(t *testing.T) {
	clk := clock.NewFake(t0)
	p := &vpnPoller{clk: clk}
	a, rec, actor := newPollAgent(t, clk, p)
	drivePolling(a, p, clk, 150*time.Second) // idle_start, periods idle
	start, end := clk.Now().Add(-4*time.Second), clk.Now().Add(-2*time.Second)
	short := session.Session{ID: "cvpn-connection-1", Kind: session.KindAWSClientVPN, User: "bob", StartedAt: start, EndedAt: &end}
	p.set(nil, []session.Session{short})
	drivePolling(a, p, clk, 5*time.Second)
	var starts, ends int
	rec.mu.Lock()
	for _, e := range rec.evs {
		switch {
		case e.Type == event.SessionStart && e.Session.ID == short.ID:
			starts++
			if !e.Time.Equal(start) {
				t.Errorf("start at %v, want %v", e.Time, start)
			}
		case e.Type == event.SessionEnd && e.Session.ID == short.ID:
			ends++
			if !e.Time.Equal(end) {
				t.Errorf("end at %v, want %v", e.Time, end)
			}
		}
	}
	rec.mu.Unlock()
	if starts != 1 || ends != 1 {
		t.Errorf("starts %d ends %d, want 1 and 1: %v", starts, ends, rec.types())
	}
	// The short connection restarted the idle period: no stop within the
	// next two minutes.
	drivePolling(a, p, clk, 2*time.Minute)
	if actor.calls != 0 {
		t.Errorf("stopped within the window after a short VPN connection: %v", rec.types())
	}
}

func TestAgentRunPollsOnItsInterval(t *testing.T) {
	clk := clock.NewFake(t0)
	p := &vpnPoller{clk: clk}
	a, _, _ := newPollAgent(t, clk, p)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	polls := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.polls
	}
	waitFor := func(n int) {
		t.Helper()
		for i := 0; i < 2000 && polls() < n; i++ {
			time.Sleep(time.Millisecond)
		}
		if polls() < n {
			t.Fatalf("polls %d, want %d", polls(), n)
		}
	}
	waitFor(1)
	// Move the clock a second at a time for 20 s: the poller answers
	// every 5 s, so 1 + 4 polls.
	for range 20 {
		time.Sleep(2 * time.Millisecond)
		clk.Advance(time.Second)
	}
	waitFor(4)
	time.Sleep(20 * time.Millisecond)
	if n := polls(); n > 5 {
		t.Errorf("polled %d times in 20 s at a 5 s interval", n)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestAgentHungPollIsBlind(t *testing.T) {
	clk := clock.NewFake(t0)
	p := &vpnPoller{clk: clk}
	a, rec, actor := newPollAgent(t, clk, p)
	// One answer (nobody connected), then the source hangs: no more
	// answers reach the loop.
	pollNow(a, p, clk)
	drive(a, clk, 10*time.Minute)
	if actor.calls != 0 {
		t.Fatalf("stopped on a stale answer; events %v", rec.types())
	}
	rec.mu.Lock()
	var blind []event.Event
	for _, e := range rec.evs {
		if e.Type == event.Blind {
			blind = append(blind, e)
		}
	}
	rec.mu.Unlock()
	if len(blind) != 1 || !strings.Contains(blind[0].Reason, "has not answered since") {
		t.Errorf("blind events %+v, want one saying the source has not answered", blind)
	}
	// It answers again: the machine may stop.
	drivePolling(a, p, clk, 6*time.Minute)
	if actor.calls != 1 {
		t.Errorf("stops = %d after the source recovered", actor.calls)
	}
}

func TestPollTimeouts(t *testing.T) {
	for _, tt := range []struct{ interval, timeout, stale time.Duration }{
		{time.Second, 10 * time.Second, 13 * time.Second},
		{5 * time.Second, 10 * time.Second, 25 * time.Second},
		{time.Minute, 2 * time.Minute, 5 * time.Minute},
		{10 * time.Minute, 2 * time.Minute, 32 * time.Minute},
	} {
		if got := PollTimeout(tt.interval); got != tt.timeout {
			t.Errorf("PollTimeout(%v) = %v, want %v", tt.interval, got, tt.timeout)
		}
		if got := PollStaleAfter(tt.interval); got != tt.stale {
			t.Errorf("PollStaleAfter(%v) = %v, want %v", tt.interval, got, tt.stale)
		}
	}
}
