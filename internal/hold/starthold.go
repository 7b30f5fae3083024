package hold

import (
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"log/slog"
	"sync"
	"time"

	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/policy"
	"github.com/connwatch/connwatch/internal/termtext"
)

// StartHoldTag is the instance tag that keeps a freshly started machine
// up: an RFC 3339 time (2026-12-05T22:10:00Z), written by `connwatch
// connect --hold` when it starts the instance for someone's first login.
const StartHoldTag = "connwatch:hold-until"

// MaxStartHoldValue is the longest tag value believed: an RFC 3339 time
// with nanoseconds and an offset takes 35 bytes.
const MaxStartHoldValue = 64

// Defaults of StartHoldOptions.
const (
	DefaultStartHoldEvery   = 30 * time.Second
	DefaultStartHoldTimeout = 3 * time.Second
)

// Answers of a TagReader that are not failures.
var (
	// ErrTagAbsent: the instance's tags can be read and the tag is not
	// among them.
	ErrTagAbsent = errors.New("instance tag not set")
	// ErrTagsDisabled: the metadata service does not serve the
	// instance's tags (they are off unless the instance's metadata
	// options turn them on).
	ErrTagsDisabled = errors.New("instance tags are not enabled in the instance metadata")
)

// ErrStartHoldValue marks a tag value that is not a start hold time.
var ErrStartHoldValue = errors.New("not a start hold time")

// TagReader reads the value of the start hold tag. It returns
// ErrTagAbsent or ErrTagsDisabled (possibly wrapped) for those answers;
// any other error is a failure to read (a timeout, a 5xx, no metadata
// service), after which what was read before stands. A value longer than
// MaxStartHoldValue may come back cut to MaxStartHoldValue+1 bytes.
type TagReader interface {
	ReadTag(ctx context.Context) (string, error)
}

// ParseHoldUntil parses a start hold tag's value: an RFC 3339 time, of
// at most MaxStartHoldValue bytes of printable ASCII. Anyone allowed to
// tag the instance can write the tag, so nothing else is believed.
func ParseHoldUntil(v string) (time.Time, error) {
	if len(v) > MaxStartHoldValue {
		return time.Time{}, fmt.Errorf("%w: longer than %d bytes", ErrStartHoldValue, MaxStartHoldValue)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c >= 0x7f {
			return time.Time{}, fmt.Errorf("%w: holds a control character or a byte that is not printable ASCII", ErrStartHoldValue)
		}
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: want an RFC 3339 time like 2026-12-05T22:10:00Z", ErrStartHoldValue)
	}
	return t.UTC(), nil
}

// StartHoldOptions configure a StartHold.
type StartHoldOptions struct {
	Reader TagReader
	Clock  clock.Clock
	// Boot is the boot time by the wall clock, for when Clock.Elapsed
	// is unknown (0).
	Boot time.Time
	// Max caps the hold: it ends at most this long after boot. 0: the
	// start hold is off and the tag is not read. SetMax changes it.
	Max time.Duration
	// Every is how often the tag is read. Default DefaultStartHoldEvery.
	Every time.Duration
	// Timeout bounds one read. Default DefaultStartHoldTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
	// Suspended is how long the machine has been suspended or hibernated
	// since boot; it grows at a resume, which starts the machine again
	// as a boot does (EC2 resumes a hibernated instance on
	// StartInstances). Default: CLOCK_BOOTTIME - CLOCK_MONOTONIC.
	Suspended func() time.Duration
}

// suspendedTime is CLOCK_BOOTTIME - CLOCK_MONOTONIC: the time spent
// suspended since boot, or 0 when the clocks cannot be read.
func suspendedTime() time.Duration {
	var boot, mono unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot) != nil || unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono) != nil {
		return 0
	}
	return time.Duration(boot.Nano() - mono.Nano())
}

// resumeJump is how much the suspended time must grow to count as a
// resume (the two clocks are read one after the other).
const resumeJump = time.Second

// StartHold keeps a freshly started machine up until the time its start
// hold tag names, so that a machine started for someone's first login is
// not stopped again when boot grace runs out before that login comes.
// The hold ends at the tag's time or Max after boot, whichever comes
// first: anyone who may tag the instance can write the tag, and a time
// far ahead must not keep the machine up for good.
//
// Run reads the tag, at start and every Every, each read bounded by
// Timeout; Holds answers from the last reads without waiting, so a
// metadata service that hangs never stalls the agent's loop.
//
// What a read says: a time ahead holds (capped); no tag, tags not served
// by the metadata service, a time past, or a value that is no time (too
// long, control characters, not RFC 3339) hold nothing, each said once in
// the log. A read that fails (timeout, 5xx) changes nothing: a hold read
// before stands until its end, and before any successful read there is
// no hold, so a metadata service that is down never keeps the machine up.
type StartHold struct {
	reader    TagReader
	clock     clock.Clock
	boot      time.Time
	suspended func() time.Duration
	every     time.Duration
	timeout   time.Duration
	log       *slog.Logger
	kick      chan struct{}

	mu  sync.Mutex
	max time.Duration
	// answer is the last answer read, value the tag's value with it and
	// until the time it names while that holds; zero: no hold.
	answer  tagAnswer
	value   string
	until   time.Time
	failing bool
	// capAt is when the cap ends by the wall clock and capElapsed by the
	// elapsed time since boot (0: unknown), both set by updateCap at each
	// read, so that the hold's end stays put between reads.
	capAt      time.Time
	capElapsed time.Duration
	// lastSuspended is the suspended time last seen (-1: none yet);
	// resumedAt the elapsed time since boot at the last resume seen
	// (0: none).
	lastSuspended time.Duration
	resumedAt     time.Duration
}

// tagAnswer is what the last successful read said.
type tagAnswer int

const (
	answerNone tagAnswer = iota // nothing read yet
	answerValue
	answerAbsent
	answerDisabled
)

// NewStartHold returns a start hold; it reads nothing until Run.
func NewStartHold(o StartHoldOptions) *StartHold {
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Every <= 0 {
		o.Every = DefaultStartHoldEvery
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultStartHoldTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Suspended == nil {
		o.Suspended = suspendedTime
	}
	return &StartHold{reader: o.Reader, clock: o.Clock, boot: o.Boot, suspended: o.Suspended, every: o.Every, timeout: o.Timeout,
		log: o.Logger, kick: make(chan struct{}, 1), max: max(o.Max, 0), lastSuspended: -1}
}

// SetMax changes the cap (on reload); 0 turns the start hold off. Turned
// on, the tag is read at once.
func (h *StartHold) SetMax(d time.Duration) {
	h.mu.Lock()
	was := h.max
	h.max = max(d, 0)
	h.updateCap(h.clock.Now())
	h.mu.Unlock()
	if was == 0 && d > 0 {
		select {
		case h.kick <- struct{}{}:
		default:
		}
	}
}

func (h *StartHold) enabled() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.max > 0
}

// Run reads the tag at once and every Every while the start hold is on,
// until ctx ends (a clean exit). While it is off Run sleeps without a
// timer until SetMax turns it on.
func (h *StartHold) Run(ctx context.Context) error {
	t := h.clock.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		case <-h.kick:
		}
		t.Stop()
		if h.enabled() {
			h.Refresh(ctx)
			t.Reset(h.every)
		} else {
			h.log.Debug("start hold is off: no reads until it is turned on")
		}
	}
}

// Refresh reads the tag once, bounded by the timeout, and records what
// it says.
func (h *StartHold) Refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, h.timeout)
	v, err := h.reader.ReadTag(rctx)
	cancel()
	if ctx.Err() != nil {
		return // stopping: not an answer
	}
	h.record(h.clock.Now(), v, err)
}

// record takes in one read's outcome at now.
func (h *StartHold) record(now time.Time, v string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.updateCap(now)
	log := h.log.With("tag", StartHoldTag)
	if err != nil && !errors.Is(err, ErrTagAbsent) && !errors.Is(err, ErrTagsDisabled) {
		// Unknown: keep what was read before.
		if !h.failing {
			switch end, _ := h.end(h.until); {
			case !h.until.IsZero() && now.Before(end):
				log.Warn("cannot read the start hold tag; keeping the start hold read before", "until", end.UTC().Format(time.RFC3339), "err", err)
			case h.answer == answerNone:
				log.Warn("cannot read the start hold tag; no start hold until it is read", "err", err)
			default:
				log.Warn("cannot read the start hold tag; keeping its last answer (no start hold)", "err", err)
			}
		}
		h.failing = true
		return
	}
	if h.failing {
		log.Info("the start hold tag can be read again")
		h.failing = false
	}
	held := !h.until.IsZero()
	switch {
	case errors.Is(err, ErrTagsDisabled):
		if h.answer != answerDisabled {
			log.Warn("no start hold: cannot read the start hold tag", "err", err)
		}
		h.answer, h.value, h.until = answerDisabled, "", time.Time{}
		return
	case errors.Is(err, ErrTagAbsent):
		if held {
			log.Info("start hold tag removed: no start hold")
		}
		h.answer, h.value, h.until = answerAbsent, "", time.Time{}
		return
	}
	changed := h.answer != answerValue || h.value != v
	h.answer, h.value, h.until = answerValue, v, time.Time{}
	until, perr := ParseHoldUntil(v)
	if perr != nil {
		if changed {
			log.Warn("ignoring the start hold tag: no start hold", "value", tagText(v), "err", perr)
		}
		return
	}
	end, capped := h.end(until)
	switch {
	case now.Before(end):
		h.until = until
		if changed {
			if capped {
				log.Warn("the start hold tag names a time more than start_hold_max after boot: the start hold ends earlier",
					"value", tagText(v), "start_hold_max", h.max, "until", end.UTC().Format(time.RFC3339))
			} else {
				log.Info("start hold: the machine stays up until the time the tag names", "until", end.UTC().Format(time.RFC3339))
			}
		}
	case !changed:
		if held {
			log.Info("start hold ended", "until", end.UTC().Format(time.RFC3339))
		}
	case !now.Before(until):
		log.Warn("ignoring the start hold tag: it names a time in the past", "value", tagText(v))
	default:
		log.Warn("ignoring the start hold tag: start_hold_max after boot has passed", "value", tagText(v), "start_hold_max", h.max)
	}
}

// updateCap sets when the cap (Max after the machine started: its boot,
// or the last resume from hibernation this agent saw) ends. h.mu is held.
func (h *StartHold) updateCap(now time.Time) {
	e := h.clock.Elapsed()
	if e <= 0 {
		h.capAt, h.capElapsed = h.boot.Add(h.max), 0
		return
	}
	// By the elapsed time since boot, which wall-clock steps do not move,
	// as for boot grace.
	if s := h.suspended(); h.lastSuspended >= 0 && s > h.lastSuspended+resumeJump {
		h.resumedAt, h.lastSuspended = e, s
	} else if s > h.lastSuspended {
		h.lastSuspended = s
	}
	h.capElapsed = h.resumedAt + h.max
	h.capAt = now.Add(h.capElapsed - e)
}

// end is when a hold until until ends: until, or the cap if that comes
// first, and whether the cap came first. h.mu is held.
func (h *StartHold) end(until time.Time) (time.Time, bool) {
	if h.capAt.Before(until) {
		return h.capAt, true
	}
	return until, false
}

// Holds returns the start hold while it lasts. It never waits for a
// read, and is a HoldSource.
func (h *StartHold) Holds(now time.Time) ([]policy.Hold, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.max <= 0 || h.until.IsZero() {
		return nil, nil
	}
	end, capped := h.end(h.until)
	if !now.Before(end) || h.capElapsed > 0 && h.clock.Elapsed() >= h.capElapsed {
		return nil, nil
	}
	reason := "until " + end.UTC().Format(time.RFC3339) + " (instance tag " + StartHoldTag + ")"
	if capped {
		reason = fmt.Sprintf("until %s (instance tag %s says %s; capped at start_hold_max %v after boot)",
			end.UTC().Format(time.RFC3339), StartHoldTag, h.until.Format(time.RFC3339), h.max)
	}
	return []policy.Hold{{Kind: policy.HoldStart, Name: StartHoldTag, Reason: reason, Until: &end}}, nil
}

// tagText is a tag value as the log shows it: cut, with every character
// that could drive a terminal escaped.
func tagText(v string) string {
	return termtext.Escape(truncate(v, MaxStartHoldValue))
}
