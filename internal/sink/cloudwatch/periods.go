package cloudwatch

import "time"

// periods keeps the maximum session count of the period in progress, for
// Observe.
type periods struct {
	open       bool
	start, end time.Time
	max        float64
	// The last observation, carried into the next period: its sessions
	// existed when that period began.
	last     float64
	lastAt   time.Time
	haveLast bool
	// closedUntil is the end of the last closed period: observations
	// before it come too late.
	closedUntil time.Time
}

// closed is a finished period and its maximum.
type closed struct {
	start time.Time
	max   float64
}

// observe adds the count v seen at now and returns the period it closed,
// if any.
func (a *periods) observe(now time.Time, v float64, period time.Duration) (closed, bool) {
	ps := now.Truncate(period)
	if a.open && ps.Equal(a.start) {
		a.max = max(a.max, v)
		a.last, a.lastAt = v, now
		return closed{}, false
	}
	if a.open && ps.Before(a.start) || !a.open && now.Before(a.closedUntil) {
		return closed{}, false // late: its period is already recorded
	}
	var out closed
	var ok bool
	if a.open {
		out, ok = a.closeNow()
	}
	a.open, a.start, a.end, a.max = true, ps, ps.Add(period), v
	if a.haveLast && ps.Sub(a.lastAt) <= period {
		a.max = max(a.max, a.last)
	}
	a.last, a.lastAt, a.haveLast = v, now, true
	return out, ok
}

// closeIfDue closes the open period once grace has passed after its end
// without an observation from a later period.
func (a *periods) closeIfDue(now time.Time, period, grace time.Duration) (closed, bool) {
	if !a.open || now.Before(a.start.Add(period+grace)) {
		return closed{}, false
	}
	return a.closeNow()
}

// closeNow closes the open period, finished or not.
func (a *periods) closeNow() (closed, bool) {
	if !a.open {
		return closed{}, false
	}
	a.open = false
	a.closedUntil = a.end
	return closed{a.start, a.max}, true
}
