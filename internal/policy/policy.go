// Package policy decides when an idle machine is stopped. It turns what
// the agent sees (sessions, holds, blindness) into one datapoint per
// period, evaluates them with CloudWatch's alarm semantics (package
// alarm), and says when to warn and when to act: never while a counted
// session or a hold exists, never on a blind view, at most once per idle
// period.
//
// Policy takes the time as an argument and never reads a clock, so tests
// drive hours of schedules in microseconds. It takes two readings: the
// wall clock, which names periods and may step, and the elapsed time since
// boot, which does not step; when the two disagree the wall clock stepped,
// and the idle countdown starts again rather than counting a step as idle
// time.
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/connwatch/connwatch/internal/alarm"
	"github.com/connwatch/connwatch/internal/event"
	"github.com/connwatch/connwatch/internal/session"
)

// Config is the idle policy.
type Config struct {
	// Period is the length of one datapoint. Default 1m; at least 1s.
	Period time.Duration
	// EvaluationPeriods (N) and DatapointsToAlarm (M, default N): stop when
	// M of the last N periods were idle. The classic recipe is 15 of 15.
	EvaluationPeriods int
	DatapointsToAlarm int
	// TreatMissingData applies to periods with a blind view, or not
	// watched (the agent not running). Default notBreaching: a period
	// nobody could see breaks the idle run, so the stop needs N periods
	// seen idle. ("missing" would let earlier idle periods complete the
	// alarm across an unseen gap, per CloudWatch's rules.)
	TreatMissingData alarm.TreatMissingData
	// MaxGap: a Step more than this after the previous one (the agent was
	// stopped or frozen, or the machine suspended) restarts the idle
	// period. Zero: off. The agent sets it.
	MaxGap time.Duration
	// BootGrace keeps the machine up for this long after boot.
	BootGrace time.Duration
	// WarnBefore is how long before the stop a warning goes out; the stop
	// never comes sooner than this after the warning.
	WarnBefore time.Duration
	// IgnoreIdleAfter: sessions idle for longer do not keep the machine
	// up (abandoned IDE connections). Zero: off.
	IgnoreIdleAfter time.Duration
	// IgnoreUsers and IgnoreNets: sessions of these users or from these
	// networks do not keep the machine up.
	IgnoreUsers []string
	IgnoreNets  []netip.Prefix
	// IgnoreKinds: sessions of these kinds (a VPN that is not the reason
	// the machine exists, say) do not keep the machine up, and a blind
	// view of only these kinds does not stop the countdown.
	IgnoreKinds []session.Kind
	// MaxAttempts bounds how often a failed stop is retried in one idle
	// period (one attempt per period). Default 3.
	MaxAttempts int
}

// Defaults: the classic 15 of 15 one-minute datapoints.
const (
	DefaultPeriod            = time.Minute
	DefaultEvaluationPeriods = 15
	DefaultMaxAttempts       = 3
	MinPeriod                = time.Second
)

// ErrConfig marks an invalid policy configuration.
var ErrConfig = errors.New("invalid idle policy")

// WithDefaults fills in zero fields.
func (c Config) WithDefaults() Config {
	if c.Period == 0 {
		c.Period = DefaultPeriod
	}
	if c.EvaluationPeriods == 0 {
		c.EvaluationPeriods = DefaultEvaluationPeriods
	}
	if c.DatapointsToAlarm == 0 {
		c.DatapointsToAlarm = c.EvaluationPeriods
	}
	if c.TreatMissingData == "" {
		c.TreatMissingData = alarm.TreatNotBreaching
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	return c
}

// MaxWindow bounds the idle window, EvaluationPeriods × Period: one day,
// as CloudWatch bounds an alarm of periods shorter than an hour. The
// policy keeps and evaluates a datapoint per period of the window.
const MaxWindow = 24 * time.Hour

// Validate checks a config with defaults applied.
func (c Config) Validate() error {
	if c.Period < MinPeriod {
		return fmt.Errorf("%w: period %v is shorter than %v", ErrConfig, c.Period, MinPeriod)
	}
	// Divide rather than multiply: N × Period may overflow.
	if n := c.EvaluationPeriods; n < 1 || n > int(MaxWindow/c.Period) {
		return fmt.Errorf("%w: %d evaluation periods of %v: the window must be between one period and %v", ErrConfig, n, c.Period, MaxWindow)
	}
	if c.BootGrace < 0 || c.WarnBefore < 0 || c.IgnoreIdleAfter < 0 || c.MaxGap < 0 {
		return fmt.Errorf("%w: durations must not be negative", ErrConfig)
	}
	if c.MaxAttempts < 1 {
		return fmt.Errorf("%w: max attempts %d: must be at least 1", ErrConfig, c.MaxAttempts)
	}
	if err := c.alarm().Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// Window is how long the machine must be idle: N periods.
func (c Config) Window() time.Duration { return time.Duration(c.EvaluationPeriods) * c.Period }

func (c Config) alarm() alarm.Config {
	return alarm.Config{
		Period:             c.Period,
		EvaluationPeriods:  c.EvaluationPeriods,
		DatapointsToAlarm:  c.DatapointsToAlarm,
		ComparisonOperator: alarm.LessThanOrEqualToThreshold,
		Threshold:          0,
		TreatMissingData:   c.TreatMissingData,
	}
}

// identity names what the datapoints mean: their period and how they are
// evaluated.
func (c Config) identity() string {
	return fmt.Sprintf("%v %d/%d %s", c.Period, c.DatapointsToAlarm, c.EvaluationPeriods, c.TreatMissingData)
}

// rangeLen is how many closed periods the policy keeps: the alarm's
// evaluation range (N+2).
func (c Config) rangeLen() int { return c.EvaluationPeriods + 2 }

// Hold is a reason to stay up that is not a session: an inhibit lock, a
// running process matching a pattern, the load average.
type Hold struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Reason string `json:"reason,omitempty"`
	// Until is when the hold ends by itself, if that is known (boot
	// grace, a start hold): the policy wakes then.
	Until *time.Time `json:"until,omitempty"`
}

// Hold kinds: what the policy, the agent and package hold report.
const (
	HoldBootGrace = "boot-grace"
	// HoldStart is the start hold: an instance tag written by whoever
	// started the machine (`connwatch connect --hold`), capped after boot.
	HoldStart   = "start-hold"
	HoldInhibit = "inhibit"
	HoldProcess = "process"
	HoldLoad    = "load"
	// HoldError stands for a hold source that failed: it might be hiding
	// a hold.
	HoldError = "error"
)

// HoldKinds lists the hold kinds above.
var HoldKinds = []string{HoldBootGrace, HoldError, HoldInhibit, HoldLoad, HoldProcess, HoldStart}

// Input is what the agent sees at one moment.
type Input struct {
	Sessions []session.Session
	// Transient are sessions that began and ended since the last Step
	// (known from sshd's log, say): they make the open period busy.
	Transient []session.Session
	Blind     bool
	Holds     []Hold
	// Elapsed is the time since boot at this moment by a clock that does
	// not step (CLOCK_BOOTTIME). Zero: unknown, and wall-clock steps can
	// only be told by MaxGap.
	Elapsed time.Duration
}

// State is everything the policy must remember across restarts.
type State struct {
	BootID string `json:"boot_id"`
	// PeriodStart is the start of the open period; Busy and Blind say
	// whether it has seen a counted session or hold, or a blind view.
	PeriodStart time.Time `json:"period_start"`
	Busy        bool      `json:"busy"`
	Blind       bool      `json:"blind"`
	// Partial: the open period was not watched from its start (the agent
	// started in it), so unless busy it closes as missing.
	Partial bool `json:"partial,omitempty"`
	// Marks are the closed periods, oldest first (the evaluation range).
	Marks      alarm.Series `json:"marks"`
	AlarmState alarm.State  `json:"alarm_state"`
	// IdleSince is when the machine last became idle; nil while busy.
	IdleSince *time.Time `json:"idle_since"`
	// WarnedAt is when the stop warning of this idle period went out.
	WarnedAt *time.Time `json:"warned_at,omitempty"`
	// Acted is set once the stop action ran for this idle period.
	Acted    bool       `json:"acted"`
	Attempts int        `json:"attempts"`
	RetryAt  *time.Time `json:"retry_at,omitempty"`
	// Seen is the time of the last Step, to tell downtime after a restart,
	// and SeenElapsed the elapsed time since boot then (0: unknown), to
	// tell a wall-clock step from time passing.
	Seen        time.Time     `json:"seen"`
	SeenElapsed time.Duration `json:"seen_elapsed,omitempty"`
	// Window identifies the configuration the marks were taken under,
	// Period their length.
	Window string        `json:"window"`
	Period time.Duration `json:"period"`
}

// Policy is the idle policy's state machine. Not safe for concurrent use.
type Policy struct {
	cfg      Config
	boot     time.Time
	st       State
	busyNow  bool
	blindNow bool
	holds    []Hold
	counted  int
	// graceEnd is when boot grace ends, by the wall clock of the last
	// Step (from the elapsed time since boot when it is known).
	graceEnd time.Time
	// due caches stopDue: the prediction changes only when a period
	// closes or what the open one holds changes.
	due dueCache
}

type dueCache struct {
	valid       bool
	periodStart time.Time
	next        alarm.Mark
	state       alarm.State
	at          time.Time
	ok          bool
}

// Decision is the result of a Step.
type Decision struct {
	Events []event.Event
	// Act: run the stop action now, then call ActionDone.
	Act    bool
	Reason string
}

// New returns a policy for a machine booted at boot with the given boot
// ID. saved is the state persisted by an earlier run, or nil; it is used
// only when it belongs to the same boot.
func New(cfg Config, boot time.Time, bootID string, saved *State) (*Policy, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Policy{cfg: cfg, boot: boot, graceEnd: boot.Add(cfg.BootGrace)}
	if saved != nil && saved.BootID == bootID && !saved.PeriodStart.IsZero() {
		p.st = *saved
		p.st.Marks = fitMarks(saved.Marks, cfg.rangeLen())
		if p.st.AlarmState == "" {
			p.st.AlarmState = alarm.InitialState
		}
		p.busyNow, p.blindNow = p.st.Busy, p.st.Blind
		p.adopt(cfg)
		return p, nil
	}
	p.st = State{BootID: bootID, AlarmState: alarm.InitialState, Marks: fitMarks(nil, cfg.rangeLen()), Window: cfg.identity(), Period: cfg.Period}
	return p, nil
}

// adopt makes the state fit cfg: datapoints of another period length mean
// nothing and are dropped; under another N, M or missing-data rule the
// alarm state is evaluated again from the datapoints.
func (p *Policy) adopt(cfg Config) {
	p.cfg = cfg
	p.due.valid = false
	if p.st.Window == cfg.identity() {
		return
	}
	if p.st.Period != cfg.Period {
		p.st.Marks = nil
		p.st.PeriodStart = time.Time{}
		p.st.Busy, p.st.Blind, p.st.Partial = false, false, false
	}
	p.st.Marks = fitMarks(p.st.Marks, cfg.rangeLen())
	p.st.AlarmState = alarm.InitialState
	if res, err := alarm.EvaluateMarks(cfg.alarm(), p.st.Marks, alarm.InitialState); err == nil {
		p.st.AlarmState = res.State
	}
	p.st.Window, p.st.Period = cfg.identity(), cfg.Period
}

// fitMarks returns marks cut or padded (with missing, at the old end) to n.
func fitMarks(marks []alarm.Mark, n int) alarm.Series {
	out := make(alarm.Series, n)
	if len(marks) > n {
		marks = marks[len(marks)-n:]
	}
	copy(out[n-len(marks):], marks)
	return out
}

// SetConfig changes the configuration (on reload), keeping the state:
// datapoints already taken stay, the countdown continues under the new
// window.
func (p *Policy) SetConfig(cfg Config) error {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	p.adopt(cfg)
	return nil
}

// StepTolerance is how far the wall clock may drift from the elapsed time
// between two Steps before it counts as stepped: NTP slews at most 500
// ppm, so a second plus a thousandth of the time between them.
func StepTolerance(between time.Duration) time.Duration {
	return time.Second + between/1000
}

// State returns the state to persist.
func (p *Policy) State() State {
	s := p.st
	s.Marks = slices.Clone(p.st.Marks)
	return s
}

// Step records the input seen at now, closes the periods that ended, and
// says what to do. Call it after every scan, and at NextWake.
func (p *Policy) Step(now time.Time, in Input) Decision {
	var d Decision
	// Wall time only: Go's monotonic reading would hide a step of the
	// wall clock, which in.Elapsed tells.
	now = now.Round(0)
	if in.Elapsed > 0 {
		p.graceEnd = now.Add(p.cfg.BootGrace - in.Elapsed)
	}
	if step, ok := p.stepped(now, in.Elapsed); ok {
		// The wall clock stepped: the periods and datapoints named by the
		// old wall time say nothing of the new one. Start over, as after
		// boot, without counting the step as idle time.
		d.Events = append(d.Events, p.restart(now, fmt.Sprintf("the wall clock stepped by %v", step.Round(time.Second))))
	}
	if p.st.PeriodStart.IsZero() {
		p.st.PeriodStart = now.Truncate(p.cfg.Period)
		p.st.Partial = p.st.PeriodStart.Before(now)
	}
	gap := p.cfg.MaxGap > 0 && !p.st.Seen.IsZero() && (p.since(now, in.Elapsed) > p.cfg.MaxGap || now.Before(p.st.Seen))
	// Close the periods that ended before now, with what was seen in them.
	p.closePeriods(now)
	if gap {
		// Nobody watched for a while (agent down or frozen, clock jump):
		// the open period was not seen whole, and an idle period cannot
		// be trusted across the gap.
		p.st.Partial = true
		if p.st.IdleSince != nil {
			d.Events = append(d.Events, event.Event{Time: now, Type: event.IdleCancel,
				Reason: fmt.Sprintf("nothing was watched from %s to %s: the idle countdown starts again", p.st.Seen.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))})
			p.st.IdleSince, p.st.WarnedAt, p.st.Acted, p.st.Attempts, p.st.RetryAt = nil, nil, false, 0, nil
		}
	}

	// What counts now.
	p.counted = 0
	for _, s := range in.Sessions {
		if p.counts(s, now) {
			p.counted++
		}
	}
	p.holds = slices.Clone(in.Holds)
	if now.Before(p.graceEnd) {
		end := p.graceEnd
		p.holds = append(p.holds, Hold{Kind: HoldBootGrace, Name: "boot grace", Reason: "until " + end.UTC().Format(time.RFC3339), Until: &end})
	}
	p.busyNow = p.counted > 0 || len(p.holds) > 0
	p.blindNow = in.Blind
	if p.busyNow {
		p.st.Busy = true
	}
	transient := 0
	for _, s := range in.Transient {
		if p.counts(s, now) {
			transient++
			p.st.Busy = true
		}
	}
	if p.blindNow {
		p.st.Blind = true
	}

	// Idle bookkeeping. A short session seen only in passing ends one idle
	// period and starts the next.
	if (p.busyNow || transient > 0) && p.st.IdleSince != nil {
		reason := p.busyReason()
		if !p.busyNow {
			reason = fmt.Sprintf("%d short session(s)", transient)
		}
		d.Events = append(d.Events, event.Event{Time: now, Type: event.IdleCancel, Reason: reason})
		p.st.IdleSince, p.st.WarnedAt, p.st.Acted, p.st.Attempts, p.st.RetryAt = nil, nil, false, 0, nil
	}
	if !p.busyNow && !p.blindNow && p.st.IdleSince == nil {
		t := now
		p.st.IdleSince = &t
		ev := event.Event{Time: now, Type: event.IdleStart, Reason: "no counted session and no hold"}
		if due, ok := p.stopDue(now); ok {
			ev.StopAt = &due
			ev.Reason += "; stop due at " + due.UTC().Format(time.RFC3339)
		}
		d.Events = append(d.Events, ev)
	}

	p.st.Seen, p.st.SeenElapsed = now, in.Elapsed
	if p.st.IdleSince == nil || p.busyNow || p.st.Acted {
		return d
	}
	if p.blindNow {
		// Never act, never warn on a view that may miss sessions.
		return d
	}
	due, ok := p.stopDue(now)
	if !ok {
		return d
	}
	// Warn first.
	if p.cfg.WarnBefore > 0 && p.st.WarnedAt == nil && !now.Before(due.Add(-p.cfg.WarnBefore)) {
		t := now
		p.st.WarnedAt = &t
		at := p.actAt(due)
		d.Events = append(d.Events, event.Event{Time: now, Type: event.StopWarning, StopAt: &at,
			Reason: fmt.Sprintf("idle since %s: stopping at %s unless someone connects", p.st.IdleSince.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))})
	}
	// A period that saw a session must close before the alarm can stand.
	if p.st.AlarmState != alarm.StateAlarm || p.st.Busy || now.Before(p.actAt(due)) {
		return d
	}
	if p.st.RetryAt != nil && now.Before(*p.st.RetryAt) {
		return d
	}
	p.st.Acted = true
	d.Act = true
	d.Reason = fmt.Sprintf("idle since %s: %d of the last %d periods of %v had no counted session or hold",
		p.st.IdleSince.UTC().Format(time.RFC3339), p.cfg.DatapointsToAlarm, p.cfg.EvaluationPeriods, p.cfg.Period)
	return d
}

// ActionDone records the outcome of the action that Step asked for.
func (p *Policy) ActionDone(now time.Time, action, result string, err error) []event.Event {
	if err == nil {
		p.st.Attempts = 0
		p.st.RetryAt = nil
		return []event.Event{{Time: now, Type: event.Stop, Action: action, Reason: result}}
	}
	p.st.Attempts++
	ev := event.Event{Time: now, Type: event.StopFailed, Action: action, Reason: err.Error()}
	if p.st.Attempts < p.cfg.MaxAttempts {
		// Retry once a period; Acted stays false so Step asks again.
		p.st.Acted = false
		t := now.Add(p.cfg.Period)
		p.st.RetryAt = &t
		ev.Reason += fmt.Sprintf(" (attempt %d of %d; retrying at %s)", p.st.Attempts, p.cfg.MaxAttempts, t.UTC().Format(time.RFC3339))
	} else {
		ev.Reason += fmt.Sprintf(" (attempt %d of %d; giving up until the next idle period)", p.st.Attempts, p.cfg.MaxAttempts)
	}
	return []event.Event{ev}
}

// since is how long passed since the last Step: by the elapsed time when
// both readings are known, else by the wall clock.
func (p *Policy) since(now time.Time, elapsed time.Duration) time.Duration {
	if elapsed > 0 && p.st.SeenElapsed > 0 {
		return elapsed - p.st.SeenElapsed
	}
	return now.Sub(p.st.Seen)
}

// stepped reports whether the wall clock stepped since the last Step, and
// by how much: the wall clock moved further, or less far, than the elapsed
// time (by more than StepTolerance). Without both elapsed readings it
// cannot tell.
func (p *Policy) stepped(now time.Time, elapsed time.Duration) (time.Duration, bool) {
	if p.st.Seen.IsZero() || elapsed <= 0 || p.st.SeenElapsed <= 0 {
		return 0, false
	}
	real := elapsed - p.st.SeenElapsed
	if real < 0 {
		// The elapsed clock went back: not the same boot after all.
		return now.Sub(p.st.Seen), true
	}
	step := now.Sub(p.st.Seen) - real
	if step > StepTolerance(real) || step < -StepTolerance(real) {
		return step, true
	}
	return 0, false
}

// restart drops every datapoint and the idle countdown, as a new boot
// would, and returns the event that says so.
func (p *Policy) restart(now time.Time, why string) event.Event {
	p.due.valid = false
	reason := why + ": the idle countdown and its datapoints start again"
	ev := event.Event{Time: now, Type: event.IdleCancel, Reason: reason}
	p.st.Marks = fitMarks(nil, p.cfg.rangeLen())
	p.st.AlarmState = alarm.InitialState
	p.st.PeriodStart = time.Time{}
	p.st.Busy, p.st.Blind, p.st.Partial = false, false, false
	p.st.IdleSince, p.st.WarnedAt, p.st.Acted, p.st.Attempts, p.st.RetryAt = nil, nil, false, 0, nil
	p.st.Seen, p.st.SeenElapsed = time.Time{}, 0
	return ev
}

// closePeriods closes every period that ended at or before now.
func (p *Policy) closePeriods(now time.Time) {
	for i := 0; !now.Before(p.st.PeriodStart.Add(p.cfg.Period)); i++ {
		var mark alarm.Mark
		switch {
		case i > 0 && now.Sub(p.st.Seen) > p.cfg.Period && p.st.PeriodStart.After(p.st.Seen):
			// Nobody looked during this whole period (the agent was down).
			mark = alarm.MarkMissing
		case p.st.Busy:
			mark = alarm.MarkNotBreaching
		case p.st.Blind || p.st.Partial:
			mark = alarm.MarkMissing
		default:
			mark = alarm.MarkBreaching
		}
		p.st.Partial = false
		closed := p.st.PeriodStart
		if i >= p.cfg.rangeLen() {
			// More missing periods than the range holds change nothing:
			// jump to the period containing now.
			p.st.PeriodStart = now.Truncate(p.cfg.Period)
			mark = alarm.MarkMissing
		} else {
			p.st.PeriodStart = p.st.PeriodStart.Add(p.cfg.Period)
		}
		copy(p.st.Marks, p.st.Marks[1:])
		p.st.Marks[len(p.st.Marks)-1] = mark
		if res, err := alarm.EvaluateMarks(p.cfg.alarm(), p.st.Marks, p.st.AlarmState); err == nil {
			p.st.AlarmState = res.State
		}
		p.shiftDue(closed, mark)
		// The new period starts with what is true now.
		p.st.Busy, p.st.Blind = p.busyNow, p.blindNow
	}
}

// shiftDue keeps the stop prediction across the close of the period that
// began at closed, when that period closed as predicted: the new
// prediction is the old one a period on (the same series from its second
// step), valid while the new open period is predicted idle. Without it,
// a day of one-second periods would be predicted afresh every second.
func (p *Policy) shiftDue(closed time.Time, mark alarm.Mark) {
	c := &p.due
	if !c.valid || !c.ok || !c.periodStart.Equal(closed) || c.next != mark ||
		!p.st.PeriodStart.Equal(closed.Add(p.cfg.Period)) || !c.at.After(p.st.PeriodStart) {
		c.valid = false
		return
	}
	c.periodStart, c.next, c.state = p.st.PeriodStart, alarm.MarkBreaching, p.st.AlarmState
}

// stopDue predicts when the alarm reaches ALARM if nothing changes: the
// open period closes as it stands and every later one is idle. The answer
// is kept until a period closes or the open period's mark changes.
func (p *Policy) stopDue(now time.Time) (time.Time, bool) {
	if p.st.AlarmState == alarm.StateAlarm && !p.st.Busy {
		return p.st.PeriodStart, true
	}
	next := alarm.MarkBreaching
	switch {
	case p.st.Busy:
		next = alarm.MarkNotBreaching
	case p.st.Blind || p.st.Partial:
		next = alarm.MarkMissing
	}
	c := &p.due
	if c.valid && c.periodStart.Equal(p.st.PeriodStart) && c.next == next && c.state == p.st.AlarmState {
		return c.at, c.ok
	}
	k, ok, err := alarm.PredictAlarm(p.cfg.alarm(), p.st.Marks, p.st.AlarmState, next)
	var at time.Time
	if err == nil && ok {
		at = p.st.PeriodStart.Add(time.Duration(k) * p.cfg.Period)
	}
	*c = dueCache{valid: true, periodStart: p.st.PeriodStart, next: next, state: p.st.AlarmState, at: at, ok: err == nil && ok}
	return c.at, c.ok
}

// actAt is when the stop may happen for a stop due at due: not before the
// warning has been out for WarnBefore.
func (p *Policy) actAt(due time.Time) time.Time {
	if p.cfg.WarnBefore > 0 && p.st.WarnedAt != nil {
		if after := p.st.WarnedAt.Add(p.cfg.WarnBefore); after.After(due) {
			return after
		}
	}
	return due
}

// KeepsAwake reports whether sessions of kind k keep the machine up.
func (c Config) KeepsAwake(k session.Kind) bool {
	if k == "" {
		k = session.KindSSH
	}
	return !slices.Contains(c.IgnoreKinds, k)
}

// KeepsAwake reports whether sessions of kind k keep the machine up
// under the current configuration.
func (p *Policy) KeepsAwake(k session.Kind) bool { return p.cfg.KeepsAwake(k) }

// counts reports whether s keeps the machine up.
func (p *Policy) counts(s session.Session, now time.Time) bool {
	if !p.cfg.KeepsAwake(s.Kind) {
		return false
	}
	if slices.Contains(p.cfg.IgnoreUsers, s.User) {
		return false
	}
	if len(p.cfg.IgnoreNets) > 0 {
		if addr, err := netip.ParseAddr(s.RemoteAddr); err == nil {
			for _, n := range p.cfg.IgnoreNets {
				if n.Contains(addr.Unmap()) {
					return false
				}
			}
		}
	}
	if p.cfg.IgnoreIdleAfter > 0 {
		if idle, ok := s.Idle(now); ok && idle > p.cfg.IgnoreIdleAfter {
			return false
		}
	}
	return true
}

func (p *Policy) busyReason() string {
	switch {
	case p.counted > 0:
		return fmt.Sprintf("%d counted session(s)", p.counted)
	case len(p.holds) > 0:
		h := p.holds[0]
		return fmt.Sprintf("held by %s %q", h.Kind, h.Name)
	}
	return "busy"
}

// NextWake is the next time Step must run even if nothing is seen: the
// end of the open period or of a hold that ends by itself, the warning,
// the stop or a retry.
func (p *Policy) NextWake(now time.Time) time.Time {
	wake := p.st.PeriodStart.Add(p.cfg.Period)
	if p.st.PeriodStart.IsZero() {
		wake = now.Truncate(p.cfg.Period).Add(p.cfg.Period)
	}
	consider := func(t time.Time) {
		if t.After(now) && t.Before(wake) {
			wake = t
		}
	}
	if p.graceEnd.After(now) {
		consider(p.graceEnd)
	}
	for _, h := range p.holds {
		if h.Until != nil {
			consider(*h.Until)
		}
	}
	if p.st.IdleSince != nil && !p.st.Acted {
		if due, ok := p.stopDue(now); ok {
			if p.cfg.WarnBefore > 0 && p.st.WarnedAt == nil {
				consider(due.Add(-p.cfg.WarnBefore))
			}
			consider(p.actAt(due))
		}
	}
	if p.st.RetryAt != nil {
		consider(*p.st.RetryAt)
	}
	return wake
}

// Status is the policy's view for `connwatch status`.
type Status struct {
	IdleSince  *time.Time   `json:"idle_since"`
	StopDueAt  *time.Time   `json:"stop_due_at"`
	WarnedAt   *time.Time   `json:"warned_at,omitempty"`
	Acted      bool         `json:"acted"`
	AlarmState alarm.State  `json:"alarm_state"`
	Datapoints alarm.Series `json:"datapoints"`
	Counted    int          `json:"counted_sessions"`
	Holds      []Hold       `json:"holds"`
	Blind      bool         `json:"blind"`
	Window     string       `json:"window"`
}

// Status returns the current view.
func (p *Policy) Status(now time.Time) Status {
	st := Status{
		IdleSince: p.st.IdleSince, WarnedAt: p.st.WarnedAt, Acted: p.st.Acted, AlarmState: p.st.AlarmState,
		Datapoints: slices.Clone(p.st.Marks), Counted: p.counted, Holds: slices.Clone(p.holds), Blind: p.blindNow,
		Window: fmt.Sprintf("%d of %d periods of %v", p.cfg.DatapointsToAlarm, p.cfg.EvaluationPeriods, p.cfg.Period),
	}
	if st.Holds == nil {
		st.Holds = []Hold{}
	}
	if p.st.IdleSince != nil && !p.st.Acted && !p.blindNow {
		if due, ok := p.stopDue(now); ok {
			at := p.actAt(due)
			st.StopDueAt = &at
		}
	}
	return st
}
