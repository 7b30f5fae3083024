// Package agent runs connwatch's main loop: it scans for sessions when
// the clock ticks or a fast signal says something changed, turns changes
// into events, feeds the idle policy, and runs the stop action when the
// policy asks. It persists the policy's state and its own view under the
// state directory so restarts keep countdowns and `connwatch status` can
// show what the agent sees.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/connwatch/connwatch/internal/action"
	"github.com/connwatch/connwatch/internal/atomicfile"
	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/tracker"
)

// Source is where sessions come from.
type Source interface {
	Name() string
	Scan(ctx context.Context) (session.Snapshot, error)
}

// Poller is a source polled on its own schedule (the VPN sources): its
// latest snapshot joins every scan of the main Source.
type Poller interface {
	Name() string
	Kind() session.Kind
	Poll(ctx context.Context) (session.Snapshot, error)
}

// Polled is a Poller and how often to poll it.
type Polled struct {
	Poller   Poller
	Interval time.Duration
}

// Actor stops the machine (package action has the implementations).
type Actor interface {
	Name() string
	Do(ctx context.Context, r action.Request) (action.Result, error)
}

// EventSink receives every event.
type EventSink interface {
	Write(e event.Event) error
}

// Observation is what one loop iteration saw and did, for metrics and
// publishers.
type Observation struct {
	Now          time.Time
	Source       string
	ScanDuration time.Duration
	ScanErr      error
	Snapshot     session.Snapshot
	// Sessions are the tracker's sessions (a blind scan keeps the last
	// known ones).
	Sessions []session.Session
	Events   []event.Event
	Policy   policy.Status
	// Polls are the pollers' answers that came in since the last
	// iteration.
	Polls []PollStat
}

// Count counts the sessions of kinds in ob, those that began and
// ended between two scans included; false when ob is blind to one of
// kinds.
func (ob Observation) Count(kinds []session.Kind) (int, bool) {
	for _, k := range kinds {
		if ob.Snapshot.BlindFor(k) {
			return 0, false
		}
	}
	ofKind := func(s *session.Session) bool {
		k := s.Kind
		if k == "" {
			k = session.KindSSH
		}
		return slices.Contains(kinds, k)
	}
	n := 0
	open := make(map[string]bool, len(ob.Sessions))
	for i := range ob.Sessions {
		if ofKind(&ob.Sessions[i]) {
			n++
			open[ob.Sessions[i].ID] = true
		}
	}
	for _, e := range ob.Events {
		if e.Type == event.SessionStart && e.Session != nil && ofKind(e.Session) && !open[e.Session.ID] {
			n++ // began and ended between two scans
		}
	}
	return n, true
}

// PollStat is one poll of a Poller, for self-metrics.
type PollStat struct {
	Name     string
	Kind     session.Kind
	At       time.Time
	Duration time.Duration
	Err      error
}

// Observer is told about every loop iteration. It must return quickly:
// the loop waits for it.
type Observer interface {
	Observe(o Observation)
}

// HoldSource reports reasons to stay up other than sessions.
type HoldSource func(now time.Time) ([]policy.Hold, error)

// Options configure an Agent.
type Options struct {
	Source Source
	// Pollers are polled sources (VPNs), each on its own goroutine and
	// interval. Until a poller's first answer, and after a failed poll,
	// its kind is blind: its sessions are kept and nothing is stopped.
	Pollers []Polled
	Policy  *policy.Policy
	Actor   Actor
	Events  EventSink
	Holds   []HoldSource
	// Warn tells the people still logged in that a stop is coming (wall).
	Warn func(ctx context.Context, msg string) error
	// OnWarning is the notification hook for stop warnings. It runs on
	// its own goroutine: a slow hook never delays the loop.
	OnWarning func(ctx context.Context, e event.Event)
	// StateDir holds policy.json and agent.json. Empty: nothing persisted.
	StateDir string
	Clock    clock.Clock
	Logger   *slog.Logger
	// ScanInterval is the slow, periodic scan. Default 1s.
	ScanInterval time.Duration
	// Kicks are fast signals (process events, log lines) that connections
	// may have changed: each starts a burst of quick scans.
	Kicks <-chan struct{}
	// Logins are logins and disconnects seen in sshd's log. A login that
	// no scan ever saw (it lasted less than the time between two scans)
	// still becomes a session_start and session_end, and keeps the
	// machine up for its period.
	Logins <-chan tracker.Login
	// Observers are told about every loop iteration (metrics, publishers).
	Observers []Observer
	// Ready is called once the first scan is done (sd_notify READY=1).
	Ready func()
	// Alive is called after every loop iteration (the systemd watchdog).
	Alive func()
	// ActionTimeout bounds one stop action. Default 2m.
	ActionTimeout time.Duration
	// Listeners, when set, names the verified sshd listeners for the view
	// (View.Listeners).
	Listeners func() []string
	// Scope is what the sessions source watches, for the view's readers.
	Scope Scope
}

// WarnTimeout bounds the wall message.
const WarnTimeout = 30 * time.Second

// Burst scanning after a kick: scan at once, then every BurstInterval
// until BurstLength has passed since the last kick, so a session that
// lives 100 ms is seen between its fork and its exit. Scans are never
// closer together than BurstInterval, however many kicks come: a storm of
// connections (a password-guessing bot opening hundreds a second) costs
// at most 1/BurstInterval scans a second.
const (
	BurstInterval = 10 * time.Millisecond
	BurstLength   = 300 * time.Millisecond
)

// Agent is the main loop.
type Agent struct {
	o       Options
	log     *slog.Logger
	tracker *tracker.Tracker

	lastPolicy policy.State
	// policySaved is when the policy state was last written.
	policySaved time.Time
	lastView    *View
	actions     chan actionResult
	acting      bool
	reconfig    chan Reconfig
	// emitted collects the events of the current iteration for observers.
	emitted []event.Event
	// holdsAt and lastHolds cache the hold sources' answer.
	holdsAt   time.Time
	lastHolds []policy.Hold
	// polls carries the pollers' answers to the loop; polled holds the
	// latest per poller and pendingEnded the ended connections not yet
	// given to the tracker.
	polls        chan pollResult
	polled       map[string]pollResult
	pendingEnded []session.Session
	newPolls     []PollStat
}

type pollResult struct {
	name string
	kind session.Kind
	snap session.Snapshot
	err  error
	at   time.Time
	took time.Duration
}

// Reconfig is a new configuration applied by Reconfigure.
type Reconfig struct {
	Policy policy.Config
	Actor  Actor
	Holds  []HoldSource
}

// Reconfigure applies a new configuration at the next loop iteration
// (SIGHUP). Safe to call from any goroutine; a newer call replaces an
// unapplied older one.
func (a *Agent) Reconfigure(r Reconfig) {
	for {
		select {
		case a.reconfig <- r:
			return
		default:
		}
		select {
		case <-a.reconfig:
		default:
		}
	}
}

type actionResult struct {
	at     time.Time
	action string
	result string
	err    error
}

// New returns an agent.
func New(o Options) (*Agent, error) {
	if o.Source == nil || o.Policy == nil || o.Actor == nil || o.Events == nil {
		return nil, errors.New("create agent: source, policy, actor and events are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ScanInterval <= 0 {
		o.ScanInterval = time.Second
	}
	if o.ActionTimeout <= 0 {
		o.ActionTimeout = 2 * time.Minute
	}
	names := map[string]bool{}
	for _, p := range o.Pollers {
		if p.Poller == nil || p.Interval <= 0 {
			return nil, errors.New("create agent: a poller needs a source and a positive interval")
		}
		if names[p.Poller.Name()] {
			return nil, fmt.Errorf("create agent: two pollers named %q", p.Poller.Name())
		}
		names[p.Poller.Name()] = true
	}
	return &Agent{
		o: o, log: o.Logger, tracker: tracker.New(), actions: make(chan actionResult, 1), reconfig: make(chan Reconfig, 1),

		polls: make(chan pollResult), polled: map[string]pollResult{},
	}, nil
}

// View is what the agent publishes in STATE_DIR/agent.json for
// `connwatch status`.
type View struct {
	PID      int               `json:"pid"`
	Updated  time.Time         `json:"updated"`
	Sessions []session.Session `json:"sessions"`
	Pending  int               `json:"pending_auth"`
	Blind    bool              `json:"blind"`
	Warnings []session.Warning `json:"warnings"`
	Policy   policy.Status     `json:"policy"`
	Action   string            `json:"action"`
	// Connections, Complete and Listeners make the view a whole
	// `connwatch status`: the connections pending authentication (Pending
	// counts them), whether the last scan saw everything, and the
	// verified sshd listeners. Listeners is nil in views of agents older
	// than these fields, and of agents without Options.Listeners.
	Connections []session.PendingAuth `json:"pending_connections"`
	Complete    bool                  `json:"complete"`
	Listeners   []string              `json:"listeners"`
	Scope       Scope                 `json:"scope"`
}

// Scope is what the agent's SSH source watches: a view of some ports only,
// or of another procfs root, does not stand for a scan of all of /proc.
type Scope struct {
	ProcRoot string `json:"proc_root"`
	Ports    []int  `json:"ports,omitempty"` // empty: every port
}

// ViewRefreshEvery bounds how old a running agent's view gets: it is
// rewritten on every change and at least this often.
const ViewRefreshEvery = 10 * time.Second

// ViewFile and PolicyFile are the names of the agent's files in its state
// directory.
const (
	ViewFile   = "agent.json"
	PolicyFile = "policy.json"
)

// Run runs until ctx is cancelled; that is a clean exit (nil).
func (a *Agent) Run(ctx context.Context) error {
	clk := a.o.Clock
	timer := clk.NewTimer(0)
	defer timer.Stop()
	var burstUntil, lastStep time.Time
	ready := false
	// soon reports whether a kick came within BurstInterval of the last
	// scan; then the timer is set for the earliest allowed scan instead.
	soon := func() bool {
		wait := lastStep.Add(BurstInterval).Sub(clk.Now())
		if !ready || wait <= 0 {
			return false
		}
		timer.Stop()
		timer.Reset(wait)
		return true
	}
	pctx, stopPollers := context.WithCancel(ctx)
	var pollers sync.WaitGroup
	defer func() {
		stopPollers()
		a.waitPollers(&pollers)
	}()
	for _, p := range a.o.Pollers {
		pollers.Go(func() { a.poll(pctx, p) })
	}
	for {
		select {
		case <-ctx.Done():
			a.log.Info("agent stopping")
			return nil
		case <-timer.C():
		case r := <-a.polls:
			a.received(r)
		case <-a.o.Kicks:
			burstUntil = clk.Now().Add(BurstLength)
			if soon() {
				continue
			}
		case l := <-a.o.Logins:
			a.login(l)
			burstUntil = clk.Now().Add(BurstLength)
			if soon() {
				continue
			}
		case rc := <-a.reconfig:
			if err := a.o.Policy.SetConfig(rc.Policy); err != nil {
				a.log.Error("reload rejected; keeping the old configuration", "err", err)
			} else {
				a.o.Actor, a.o.Holds = rc.Actor, rc.Holds
				a.holdsAt = time.Time{}
				a.log.Info("configuration reloaded", "action", rc.Actor.Name(), "window", a.o.Policy.Status(clk.Now()).Window)
			}
		case r := <-a.actions:
			a.acting = false
			for _, e := range a.o.Policy.ActionDone(r.at, r.action, r.result, r.err) {
				a.emit(e)
			}
		}
		now := a.step(ctx)
		lastStep = now
		if !ready {
			ready = true
			if a.o.Ready != nil {
				a.o.Ready()
			}
		}
		if a.o.Alive != nil {
			a.o.Alive()
		}
		// Next wake: the slow scan, the policy's next deadline, or the burst.
		next := now.Add(a.o.ScanInterval)
		if w := a.o.Policy.NextWake(now); w.Before(next) {
			next = w
		}
		if now.Before(burstUntil) {
			if b := now.Add(BurstInterval); b.Before(next) {
				next = b
			}
		}
		d := next.Sub(clk.Now())
		if d < 0 {
			d = 0
		}
		timer.Stop()
		timer.Reset(d)
	}
}

// poll runs one poller until ctx ends: at once, then every interval
// after the previous answer.
func (a *Agent) poll(ctx context.Context, p Polled) {
	timer := a.o.Clock.NewTimer(p.Interval)
	defer timer.Stop()
	log := a.log.With("source", p.Poller.Name())
	failing := false
	for {
		began := a.o.Clock.Now()
		pctx, cancel := context.WithTimeout(ctx, PollTimeout(p.Interval))
		snap, err := p.Poller.Poll(pctx)
		cancel()
		r := pollResult{name: p.Poller.Name(), kind: p.Poller.Kind(), snap: snap, err: err, at: began, took: a.o.Clock.Now().Sub(began)}
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			log.Error("poll failed; keeping this kind's sessions and not stopping", "err", err)
		case err == nil && failing:
			log.Info("poll works again")
		}
		failing = err != nil
		select {
		case a.polls <- r:
		case <-ctx.Done():
			return
		}
		timer.Reset(p.Interval)
		select {
		case <-ctx.Done():
			return
		case <-timer.C():
		}
	}
}

// received keeps a poller's answer for the next step.
func (a *Agent) received(r pollResult) {
	a.polled[r.name] = r
	a.newPolls = append(a.newPolls, PollStat{Name: r.name, Kind: r.kind, At: r.at, Duration: r.took, Err: r.err})
	if r.err == nil {
		a.pendingEnded = append(a.pendingEnded, r.snap.Ended...)
	}
}

// PollWarning is the warning code of a poller that has not answered yet
// or whose last poll failed; PollStaleWarning of one whose last answer is
// too old (a poll that hangs).
const (
	PollWarning      = "poll_failed"
	PollStaleWarning = "poll_stale"
)

// PollTimeout bounds one poll: twice the interval, at least 10 s and at
// most 2 minutes. A source that ignores it (a hung socket) is caught by
// PollStaleAfter.
func PollTimeout(interval time.Duration) time.Duration {
	return min(max(2*interval, 10*time.Second), 2*time.Minute)
}

// PollStaleAfter is how old a poller's last answer may be before its kind
// is blind: three intervals and a timeout.
func PollStaleAfter(interval time.Duration) time.Duration {
	return 3*interval + PollTimeout(interval)
}

// PollerWait bounds how long Run waits for its pollers to return.
const PollerWait = 5 * time.Second

// waitPollers waits for the pollers to return, at most PollerWait: one
// stuck in a source that ignores its context is left behind, logged.
func (a *Agent) waitPollers(wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := a.o.Clock.NewTimer(PollerWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C():
		a.log.Warn("a VPN poll did not return; leaving it behind")
	}
}

// merge adds the pollers' latest answers to snap.
func (a *Agent) merge(snap *session.Snapshot) {
	for _, p := range a.o.Pollers {
		name, kind := p.Poller.Name(), p.Poller.Kind()
		r, ok := a.polled[name]
		switch {
		case !ok:
			snap.Warn(session.Warning{Code: PollWarning, Source: name, Kind: kind, Message: name + " has not been polled yet", Blind: true})
		case r.err == nil && snap.Time.Sub(r.at) > PollStaleAfter(p.Interval):
			// Its poll hangs: the last answer cannot be trusted any more.
			snap.Warn(session.Warning{Code: PollStaleWarning, Source: name, Kind: kind, Blind: true,
				Message: fmt.Sprintf("%s has not answered since %s", name, r.at.UTC().Format(time.RFC3339))})
		default:
			AddPoll(snap, p.Poller, r.snap, r.err)
		}
	}
	snap.Ended = append(snap.Ended, a.pendingEnded...)
	a.pendingEnded = a.pendingEnded[:0]
}

// AddPoll adds what poller p answered (got, or err) to snap: its sessions
// and warnings, or a blind warning for its kind. Ended connections are
// not added: they must reach the tracker once.
func AddPoll(snap *session.Snapshot, p Poller, got session.Snapshot, err error) {
	if err != nil {
		snap.Warn(session.Warning{Code: PollWarning, Source: p.Name(), Kind: p.Kind(), Message: p.Name() + ": " + err.Error(), Blind: true})
		return
	}
	snap.Sessions = append(snap.Sessions, got.Sessions...)
	snap.Warnings = append(snap.Warnings, got.Warnings...)
	if !got.Complete {
		snap.Complete = false
	}
}

// blindForPolicy reports whether sessions that keep the machine up may be
// missing from snap.
func (a *Agent) blindForPolicy(snap session.Snapshot) bool {
	for _, w := range snap.Warnings {
		if w.Blind && (w.Kind == "" || a.o.Policy.KeepsAwake(w.Kind)) {
			return true
		}
	}
	return false
}

// step scans once and runs everything downstream. It returns the time of
// the scan.
func (a *Agent) step(ctx context.Context) time.Time {
	began := a.o.Clock.Now()
	snap, err := a.o.Source.Scan(ctx)
	now := a.o.Clock.Now()
	obs := Observation{Now: now, Source: a.o.Source.Name(), ScanDuration: now.Sub(began), ScanErr: err}
	if err != nil {
		// Cannot look at all: blind.
		a.log.Error("scan failed", "source", a.o.Source.Name(), "err", err)
		snap = session.Snapshot{Time: now}
		snap.Warn(session.Warning{Code: "scan_failed", Source: a.o.Source.Name(), Message: err.Error(), Blind: true})
	}
	a.merge(&snap)
	for _, e := range a.tracker.Apply(snap) {
		a.emit(e)
	}
	in := policy.Input{Sessions: a.tracker.Sessions(), Blind: a.blindForPolicy(snap), Transient: a.tracker.Transient(),
		Elapsed: a.o.Clock.Elapsed()}
	in.Holds = a.holds(now)
	d := a.o.Policy.Step(now, in)
	for _, e := range d.Events {
		a.emit(e)
		if e.Type == event.StopWarning && a.o.Warn != nil {
			msg := "connwatch: this machine has been idle and will be stopped at " + e.StopAt.Local().Format("15:04:05 MST") +
				" unless someone connects or runs `connwatch inhibit`."
			// Off the loop and bounded: a stuck terminal must not stall
			// detection.
			go func(warn func(context.Context, string) error) {
				wctx, cancel := context.WithTimeout(ctx, WarnTimeout)
				defer cancel()
				if err := warn(wctx, msg); err != nil {
					a.log.Warn("warning logged-in users failed", "err", err)
				}
			}(a.o.Warn)
		}
		if e.Type == event.StopWarning && a.o.OnWarning != nil {
			go a.o.OnWarning(ctx, e)
		}
	}
	if d.Act && !a.acting {
		a.acting = true
		idleSince := now
		if st := a.o.Policy.State(); st.IdleSince != nil {
			idleSince = *st.IdleSince
		}
		a.log.Warn("stopping the machine", "action", a.o.Actor.Name(), "reason", d.Reason)
		// Persist first: the action may take the machine down.
		a.persist(now, snap)
		go a.runAction(ctx, a.o.Actor, d.Reason, idleSince)
	}
	a.persist(now, snap)
	if len(a.o.Observers) > 0 {
		obs.Snapshot, obs.Sessions, obs.Policy = snap, a.tracker.Sessions(), a.o.Policy.Status(now)
		obs.Events = append([]event.Event(nil), a.emitted...)
		obs.Polls = append([]PollStat(nil), a.newPolls...)
		for _, o := range a.o.Observers {
			o.Observe(obs)
		}
	}
	// Events emitted between iterations (action results, log-only
	// sessions) are reported with the next one.
	a.emitted = a.emitted[:0]
	a.newPolls = a.newPolls[:0]
	return now
}

// HoldsEvery is how often hold sources are consulted: the bursts of scans
// after a fork or login need not re-read lock files and the load average.
const HoldsEvery = time.Second

// holds returns the holds, consulting the sources at most every
// HoldsEvery (and again after a reload).
func (a *Agent) holds(now time.Time) []policy.Hold {
	if !a.holdsAt.IsZero() && now.Sub(a.holdsAt) < HoldsEvery && !now.Before(a.holdsAt) {
		return a.lastHolds
	}
	var out []policy.Hold
	for _, h := range a.o.Holds {
		holds, err := h(now)
		if err != nil {
			// A hold source that fails might be hiding a hold: stay up.
			a.log.Warn("hold source failed; treating as held", "err", err)
			holds = []policy.Hold{{Kind: policy.HoldError, Name: "hold source failed", Reason: err.Error()}}
		}
		out = append(out, holds...)
	}
	a.holdsAt, a.lastHolds = now, out
	return out
}

// login gives the tracker a login or logout from sshd's log and emits
// the events of a session no scan saw.
func (a *Agent) login(l tracker.Login) {
	for _, e := range a.tracker.Login(l) {
		a.emit(e)
	}
}

// runAction runs act on its own goroutine; act is passed in so that a
// reload replacing the actor meanwhile does not race with it.
func (a *Agent) runAction(ctx context.Context, act Actor, reason string, idleSince time.Time) {
	actx, cancel := context.WithTimeout(ctx, a.o.ActionTimeout)
	defer cancel()
	res, err := act.Do(actx, action.Request{Reason: reason, IdleSince: idleSince})
	a.actions <- actionResult{at: a.o.Clock.Now(), action: act.Name(), result: res.Summary, err: err}
}

func (a *Agent) emit(e event.Event) {
	a.emitted = append(a.emitted, e)
	a.log.Info("event", "type", e.Type, "session", sessionKey(e.Session), "reason", e.Reason)
	if err := a.o.Events.Write(e); err != nil {
		a.log.Error("write event", "err", err)
	}
}

func sessionKey(s *session.Session) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("%s %s@%s:%d %s", s.ID, s.User, s.RemoteAddr, s.RemotePort, s.Mode)
}

// persist writes the policy state when it changed and the view.
func (a *Agent) persist(now time.Time, snap session.Snapshot) {
	if a.o.StateDir == "" {
		return
	}
	// The policy state is written at once when the countdown changes, and
	// otherwise at least every PolicySaveEvery, so that a restart finds
	// when the agent last watched and resumes the period it was in.
	st := a.o.Policy.State()
	if a.policySaved.IsZero() || countdownChanged(st, a.lastPolicy) || now.Sub(a.policySaved) >= PolicySaveEvery || now.Before(a.policySaved) {
		if err := atomicfile.WriteJSON(filepath.Join(a.o.StateDir, PolicyFile), st, 0o600); err != nil {
			a.log.Error("save policy state", "err", err)
		} else {
			a.lastPolicy, a.policySaved = st, now
		}
	}
	v := &View{
		PID: os.Getpid(), Sessions: a.tracker.Sessions(), Pending: len(snap.PendingAuth), Blind: snap.Blind(),
		Warnings: snap.Warnings, Policy: a.o.Policy.Status(now), Action: a.o.Actor.Name(), Scope: a.o.Scope,
	}
	if v.Warnings == nil {
		v.Warnings = []session.Warning{}
	}
	v.Connections, v.Complete = snap.PendingAuth, snap.Complete
	if v.Connections == nil {
		v.Connections = []session.PendingAuth{}
	}
	if a.o.Listeners != nil {
		v.Listeners = a.o.Listeners()
		if v.Listeners == nil {
			v.Listeners = []string{}
		}
	}
	// Rewrite when something changed, and at least every
	// ViewRefreshEvery so readers can tell a live agent from a dead one.
	if a.lastView != nil && reflect.DeepEqual(withoutTime(*v), withoutTime(*a.lastView)) && now.Sub(a.lastView.Updated) < ViewRefreshEvery {
		return
	}
	v.Updated = now
	if err := atomicfile.WriteJSON(filepath.Join(a.o.StateDir, ViewFile), v, 0o644); err != nil {
		a.log.Error("save agent view", "err", err)
		return
	}
	a.lastView = v
}

// PolicySaveEvery bounds how old the saved policy state may be. It is well
// under the agent's MaxGap (30 s at least), so an agent killed and
// restarted within seconds keeps its countdown and period.
const PolicySaveEvery = 5 * time.Second

// countdownChanged reports whether the policy state changed in what a
// restart must not lose: the idle countdown, the alarm state, the
// warning, the action, the closed periods and whether the open one saw
// someone. The time of the last look is saved within PolicySaveEvery.
func countdownChanged(a, b policy.State) bool {
	eq := func(x, y *time.Time) bool { return (x == nil) == (y == nil) && (x == nil || x.Equal(*y)) }
	return a.BootID != b.BootID || !eq(a.IdleSince, b.IdleSince) || !eq(a.WarnedAt, b.WarnedAt) || a.Acted != b.Acted ||
		a.Attempts != b.Attempts || !eq(a.RetryAt, b.RetryAt) || a.AlarmState != b.AlarmState || a.Busy != b.Busy ||
		a.Window != b.Window || !a.PeriodStart.Equal(b.PeriodStart)
}

// withoutTime leaves out what changes all the time (activity, VPN
// counters, the time of the view): a change of only those does not
// rewrite the file.
func withoutTime(v View) View {
	v.Updated = time.Time{}
	v.Policy.StopDueAt = nil
	// Datapoints move every period (every second with --period 1s, and a
	// day of them is 86 KB): the 10 s rewrite shows them soon enough.
	v.Policy.Datapoints = nil
	sess := make([]session.Session, len(v.Sessions))
	for i, s := range v.Sessions {
		s.LastActivityAt = nil
		if s.VPN != nil {
			// Counters move with every poll of a busy VPN.
			vpn := *s.VPN
			vpn.BytesIn, vpn.BytesOut, vpn.LastHandshakeAt = 0, 0, nil
			s.VPN = &vpn
		}
		sess[i] = s
	}
	v.Sessions = sess
	return v
}

// LoadView reads the view a running agent published in dir.
func LoadView(dir string) (*View, error) {
	var v View
	if err := atomicfile.ReadJSON(filepath.Join(dir, ViewFile), &v); err != nil {
		return nil, err
	}
	return &v, nil
}
