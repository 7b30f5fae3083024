package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/connwatch/connwatch/internal/action"
	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/tracker"
)

var t0 = time.Date(2026, 11, 21, 12, 0, 30, 0, time.UTC)

// scripted is a Source whose sessions the test sets.
type scripted struct {
	mu    sync.Mutex
	clk   clock.Clock
	sess  []session.Session
	blind bool
	err   error
}

func (s *scripted) Name() string { return "scripted" }
func (s *scripted) Scan(context.Context) (session.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return session.Snapshot{}, s.err
	}
	snap := session.Snapshot{Time: s.clk.Now(), Complete: true, Sessions: append([]session.Session(nil), s.sess...)}
	if s.blind {
		snap.Warn(session.Warning{Code: session.WarnProcHidden, Message: "hidepid", Blind: true})
	}
	return snap, nil
}
func (s *scripted) set(sess ...session.Session) {
	s.mu.Lock()
	s.sess = sess
	s.mu.Unlock()
}

type recorder struct {
	mu  sync.Mutex
	evs []event.Event
}

func (r *recorder) Write(e event.Event) error {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
	return nil
}
func (r *recorder) types() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		out = append(out, string(e.Type))
	}
	return out
}

type countingActor struct {
	mu    sync.Mutex
	calls int
	err   error
}

func (c *countingActor) Name() string { return "test" }
func (c *countingActor) Do(context.Context, action.Request) (action.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return action.Result{Action: "test", Summary: "stopped"}, c.err
}

func newTestAgent(t *testing.T, clk *clock.Fake, src *scripted, actor Actor, dir string) (*Agent, *recorder) {
	t.Helper()
	var saved *policy.State
	if dir != "" {
		var err error
		if saved, err = LoadPolicyState(dir); err != nil {
			t.Fatal(err)
		}
	}
	pol, err := policy.New(policy.Config{Period: time.Minute, EvaluationPeriods: 3, WarnBefore: time.Minute, MaxGap: 30 * time.Second}, t0.Add(-time.Hour), "boot", saved)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	a, err := New(Options{Source: src, Policy: pol, Actor: actor, Events: rec, StateDir: dir, Clock: clk,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return a, rec
}

// drive steps the agent every second for d, delivering action results.
func drive(a *Agent, clk *clock.Fake, d time.Duration) {
	end := clk.Now().Add(d)
	for clk.Now().Before(end) {
		a.step(context.Background())
		select {
		case r := <-waitAction(a):
			a.acting = false
			for _, e := range a.o.Policy.ActionDone(r.at, a.o.Actor.Name(), r.result, r.err) {
				a.emit(e)
			}
		default:
		}
		clk.Advance(time.Second)
	}
}

// waitAction gives a started action a moment to finish (it runs on its
// own goroutine, as in Run).
func waitAction(a *Agent) chan actionResult {
	if a.acting {
		r := <-a.actions
		ch := make(chan actionResult, 1)
		ch <- r
		return ch
	}
	return nil
}

func TestAgentStopsOnceAfterIdle(t *testing.T) {
	clk := clock.NewFake(t0)
	src := &scripted{clk: clk}
	actor := &countingActor{}
	a, rec := newTestAgent(t, clk, src, actor, t.TempDir())
	alice := session.Session{ID: "ssh-1-1", User: "alice", StartedAt: t0}
	src.set(alice)
	drive(a, clk, 10*time.Second)
	src.set()
	drive(a, clk, 10*time.Minute)
	want := fmt.Sprint([]string{"session_start", "session_end", "idle_start", "stop_warning", "stop"})
	if got := fmt.Sprint(rec.types()); got != want {
		t.Errorf("events %s, want %s", got, want)
	}
	if actor.calls != 1 {
		t.Errorf("action ran %d times", actor.calls)
	}
}

func TestAgentBlindNeverStops(t *testing.T) {
	clk := clock.NewFake(t0)
	src := &scripted{clk: clk, err: errors.New("open /proc: permission denied")}
	actor := &countingActor{}
	a, rec := newTestAgent(t, clk, src, actor, "")
	drive(a, clk, 20*time.Minute)
	if actor.calls != 0 {
		t.Errorf("acted while blind")
	}
	if got := rec.types(); len(got) != 1 || got[0] != "blind" {
		t.Errorf("events %v", got)
	}
}

func TestAgentRestartKeepsCountdown(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(t0)
	src := &scripted{clk: clk}
	actor := &countingActor{}
	a, _ := newTestAgent(t, clk, src, actor, dir)
	drive(a, clk, 90*time.Second)
	// kill -9: a new agent from the same state directory.
	a2, rec := newTestAgent(t, clk, src, actor, dir)
	drive(a2, clk, 5*time.Minute)
	if actor.calls != 1 {
		t.Fatalf("calls = %d, events %v", actor.calls, rec.types())
	}
	v, err := LoadView(dir)
	if err != nil || v.Action != "test" || !v.Policy.Acted {
		t.Errorf("view %+v err %v", v, err)
	}
	if _, err := LoadView(filepath.Join(dir, "none")); err == nil {
		t.Error("missing view: want error")
	}
}

func TestLoginSeenOnlyInLog(t *testing.T) {
	clk := clock.NewFake(t0)
	src := &scripted{clk: clk}
	a, rec := newTestAgent(t, clk, src, &countingActor{}, "")
	drive(a, clk, 3*time.Second) // idle_start

	// A 100 ms session between two scans: only the log saw it.
	a.login(tracker.Login{Time: clk.Now(), User: "bob", Addr: "198.51.100.7", Port: 40000})
	clk.Advance(100 * time.Millisecond)
	a.login(tracker.Login{Time: clk.Now(), User: "bob", Addr: "198.51.100.7", Port: 40000, End: true})
	// A session the scans saw: its log end adds nothing.
	seen := session.Session{ID: "ssh-9-9", User: "carol", RemoteAddr: "198.51.100.8", RemotePort: 40001, StartedAt: clk.Now()}
	a.login(tracker.Login{Time: clk.Now(), User: "carol", Addr: "198.51.100.8", Port: 40001})
	src.set(seen)
	drive(a, clk, time.Second)
	src.set()
	a.login(tracker.Login{Time: clk.Now(), User: "carol", Addr: "198.51.100.8", Port: 40001, End: true})
	drive(a, clk, time.Second)

	want := "idle_start session_start session_end session_start idle_cancel session_end idle_start"
	if got := strings.Join(rec.types(), " "); got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
	for _, e := range rec.evs {
		if e.Session != nil && e.Session.User == "bob" && !strings.Contains(e.Reason, "log") {
			t.Errorf("log-only session event without reason: %+v", e)
		}
	}
}

type observerFunc func(Observation)

func (f observerFunc) Observe(o Observation) { f(o) }

func TestObserversSeeEveryEvent(t *testing.T) {
	clk := clock.NewFake(t0)
	src := &scripted{clk: clk}
	a, rec := newTestAgent(t, clk, src, &countingActor{}, "")
	var seen []string
	var scans int
	a.o.Observers = []Observer{observerFunc(func(o Observation) {
		scans++
		for _, e := range o.Events {
			seen = append(seen, string(e.Type))
		}
	})}
	src.set(session.Session{ID: "a", User: "alice", StartedAt: t0})
	drive(a, clk, 2*time.Second)
	a.login(tracker.Login{Time: clk.Now(), User: "bob", Addr: "198.51.100.9", Port: 1})
	a.login(tracker.Login{Time: clk.Now(), User: "bob", Addr: "198.51.100.9", Port: 1, End: true})
	src.set()
	drive(a, clk, 10*time.Minute)
	if got, want := strings.Join(seen, " "), strings.Join(rec.types(), " "); got != want {
		t.Errorf("observers saw %q, the event sink %q", got, want)
	}
	if scans < 600 {
		t.Errorf("observed %d iterations", scans)
	}
}

// TestLoginAfterScanSawTheSession: the scans saw a short session begin
// and end before its login line was read (journald lag); the log must
// not report it a second time.
func TestLoginAfterScanSawTheSession(t *testing.T) {
	clk := clock.NewFake(t0)
	src := &scripted{clk: clk}
	a, rec := newTestAgent(t, clk, src, &countingActor{}, "")
	src.set(session.Session{ID: "ssh-5-5", User: "dave", RemoteAddr: "192.0.2.7", RemotePort: 41000, StartedAt: t0})
	drive(a, clk, time.Second)
	src.set()
	drive(a, clk, time.Second)
	a.login(tracker.Login{Time: t0, User: "dave", Addr: "::ffff:192.0.2.7", Port: 41000})
	a.login(tracker.Login{Time: t0.Add(time.Second), User: "dave", Addr: "::ffff:192.0.2.7", Port: 41000, End: true})
	drive(a, clk, time.Second)
	starts := 0
	for _, typ := range rec.types() {
		if typ == "session_start" {
			starts++
		}
	}
	if starts != 1 {
		t.Errorf("events %v: the session was reported %d times", rec.types(), starts)
	}
}

// countingSource counts scans.
type countingSource struct {
	scripted
	mu    sync.Mutex
	scans int
}

func (c *countingSource) Scan(ctx context.Context) (session.Snapshot, error) {
	c.mu.Lock()
	c.scans++
	c.mu.Unlock()
	return c.scripted.Scan(ctx)
}

func (c *countingSource) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.scans
}

// TestKickStormBoundsScans: however many kicks come (a storm of sshd
// forks), scans are at least BurstInterval apart: 1,000 kicks while the
// clock stands still cost one scan, and each BurstInterval the clock
// moves allows one more.
func TestKickStormBoundsScans(t *testing.T) {
	clk := clock.NewFake(t0)
	src := &countingSource{scripted: scripted{clk: clk}}
	pol, err := policy.New(policy.Config{Period: time.Minute, EvaluationPeriods: 3}, t0.Add(-time.Hour), "boot", nil)
	if err != nil {
		t.Fatal(err)
	}
	kicks := make(chan struct{})
	a, err := New(Options{Source: src, Policy: pol, Actor: &countingActor{}, Events: &recorder{}, Clock: clk,
		Kicks: kicks, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	// The first scan runs at once; each send below returns once Run has
	// taken the kick, so after the last one every earlier kick is handled.
	kick := func(n int) {
		for range n {
			select {
			case kicks <- struct{}{}:
			case <-time.After(10 * time.Second):
				t.Fatal("Run does not take kicks")
			}
		}
	}
	kick(1001)
	if n := src.count(); n > 2 {
		t.Errorf("1,000 kicks at one instant made %d scans, want at most 2", n)
	}
	// A second of kicks, one every millisecond: at most one scan per
	// BurstInterval.
	before := src.count()
	for range 1000 {
		clk.Advance(time.Millisecond)
		kick(1)
	}
	kick(1)
	if n, most := src.count()-before, int(time.Second/BurstInterval)+2; n > most {
		t.Errorf("a second of kicks every millisecond made %d scans, want at most %d", n, most)
	}
}
