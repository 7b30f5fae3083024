package sshd

import (
	"slices"
	"sync"
	"time"
)

// The watch set says which processes' forks, execs and exits mean that
// connections may have changed: the verified sshd processes of the last
// scan and the children they forked since, as process events tell. Only
// these start a burst of scans, and only their events need to reach the
// agent at all (procevents.Listener.Filter), so a user who forks in a loop
// costs nothing, whatever the program is called. It also remembers, for a
// while, the sshd processes that exited: a log line that names its pid is
// believed for that long (WasSSHD).
const (
	// forkedFor is how long a child known only from its fork event stays
	// watched without a scan confirming it (its exit may have been lost).
	forkedFor = 10 * time.Second
	// recentFor is how long WasSSHD remembers an sshd process that is gone.
	recentFor = 2 * time.Minute
	// maxForked and maxRecent bound the memory a storm of connections
	// can take; past them the oldest half is forgotten.
	maxForked = 8192
	maxRecent = 16384
)

type watchSet struct {
	mu      sync.Mutex
	scanned map[int]struct{}
	forked  map[int]time.Time
	recent  map[int]time.Time
	changed chan struct{}
	// isSSHD checks what a watched child runs after it exec'd.
	isSSHD func(pid int) bool
}

func newWatchSet(isSSHD func(pid int) bool) *watchSet {
	return &watchSet{scanned: map[int]struct{}{}, forked: map[int]time.Time{}, recent: map[int]time.Time{},
		changed: make(chan struct{}, 1), isSSHD: isSSHD}
}

func (w *watchSet) notify() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

func (w *watchSet) watched(pid int) bool {
	if _, ok := w.scanned[pid]; ok {
		return true
	}
	_, ok := w.forked[pid]
	return ok
}

// scan replaces the scanned set with a scan's verified processes; the
// map is the watch set's from then on.
func (w *watchSet) scan(trusted map[int]struct{}, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	changed := len(trusted) != len(w.scanned)
	for pid := range w.scanned {
		if _, ok := trusted[pid]; !ok {
			w.recent[pid] = now
			changed = true
		}
	}
	w.scanned = trusted
	for pid := range trusted {
		delete(w.forked, pid) // confirmed
		delete(w.recent, pid)
	}
	for pid, at := range w.forked {
		if now.Sub(at) >= forkedFor || at.After(now) {
			delete(w.forked, pid)
			w.recent[pid] = now
			changed = true
		}
	}
	for pid, at := range w.recent {
		if now.Sub(at) >= recentFor || at.After(now) {
			delete(w.recent, pid)
		}
	}
	trim(w.recent, maxRecent)
	if changed {
		w.notify()
	}
}

// trim forgets the older half of m when it holds more than max entries.
func trim(m map[int]time.Time, max int) {
	if len(m) <= max {
		return
	}
	times := make([]time.Time, 0, len(m))
	for _, at := range m {
		times = append(times, at)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	cut := times[len(times)/2]
	for pid, at := range m {
		if at.Before(cut) {
			delete(m, pid)
		}
	}
}

func (w *watchSet) forkedBy(parent, child int, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.watched(parent) {
		return false
	}
	if !w.watched(child) {
		w.forked[child] = now
		trim(w.forked, maxForked)
		w.notify()
	}
	return true
}

func (w *watchSet) execed(pid int, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.scanned[pid]; ok {
		return true
	}
	if _, ok := w.forked[pid]; !ok {
		return false
	}
	// A child that runs another sshd program (sshd-session on 9.8+)
	// stays watched; one that runs anything else (a user's shell, which
	// sshd forks and execs for every session) is none of our business.
	if !w.isSSHD(pid) {
		delete(w.forked, pid)
		w.recent[pid] = now
		w.notify()
	}
	return true
}

func (w *watchSet) exited(pid, parent int, now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.watched(pid) {
		return w.watched(parent)
	}
	delete(w.scanned, pid)
	delete(w.forked, pid)
	w.recent[pid] = now
	w.notify()
	return true
}

func (w *watchSet) wasSSHD(pid int) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.watched(pid) {
		return true
	}
	_, ok := w.recent[pid]
	return ok
}

func (w *watchSet) pids() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]int, 0, len(w.scanned)+len(w.forked))
	for pid := range w.scanned {
		out = append(out, pid)
	}
	for pid := range w.forked {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

// Watches reports whether pid is a verified sshd process (never one that
// only looks like one): of the last scan, or forked by one since. A fork,
// exec or exit of such a process means connections may have changed.
// Safe to call from any goroutine, also during a Scan.
func (s *Source) Watches(pid int) bool {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	return s.watch.watched(pid)
}

// Forked records a fork event: a child of a watched process is watched
// too, until it execs another program, exits, or no scan confirms it
// within 10 s. It reports whether the parent is watched (connections may
// have changed).
func (s *Source) Forked(parent, child int) bool {
	return s.watch.forkedBy(parent, child, s.clock.Now())
}

// Execed records an exec event and reports whether pid is watched. A
// child known only from its fork stays watched if it now runs an sshd
// program (9.8+ execs sshd-session), else it is dropped.
func (s *Source) Execed(pid int) bool {
	return s.watch.execed(pid, s.clock.Now())
}

// Exited records an exit event and reports whether pid or its parent was
// watched.
func (s *Source) Exited(pid, parent int) bool {
	return s.watch.exited(pid, parent, s.clock.Now())
}

// WasSSHD reports whether pid is, or was in the last 2 minutes, a
// verified sshd process (or a child forked by one): what a log line that
// only names a pid can be checked against.
func (s *Source) WasSSHD(pid int) bool {
	return s.watch.wasSSHD(pid)
}

// WatchedPIDs returns the watched processes, sorted: what a process
// events filter should let through.
func (s *Source) WatchedPIDs() []int { return s.watch.pids() }

// WatchChanged receives a value after the watched processes changed.
func (s *Source) WatchChanged() <-chan struct{} { return s.watch.changed }
