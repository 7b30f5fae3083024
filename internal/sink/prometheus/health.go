package promsink

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// DefaultLoopInterval is the agent loop's interval Health assumes when
// Options.LoopInterval is zero (the agent's default scan interval).
const DefaultLoopInterval = time.Second

// healthIntervals is how many loop intervals may pass without an
// iteration before /healthz answers 503.
const healthIntervals = 3

// health remembers when the agent's main loop last ran.
type health struct {
	mu       sync.Mutex
	interval time.Duration
	last     time.Time // zero before the first iteration
}

// ObserveLoop records that the agent's main loop just ran (by the
// Metrics' own clock, so the age Health measures is elapsed time). The
// agent calls it after every iteration.
func (m *Metrics) ObserveLoop() {
	now := m.clock.Now()
	m.health.mu.Lock()
	m.health.last = now
	m.health.mu.Unlock()
}

// Health says whether the agent's main loop ran within the last three
// loop intervals; when not, the error says why. The loop is what sees
// sessions and runs the idle policy: a loop that stopped turning means a
// stale view, even while the process and this endpoint are up.
func (m *Metrics) Health() error {
	m.health.mu.Lock()
	last, interval := m.health.last, m.health.interval
	m.health.mu.Unlock()
	if last.IsZero() {
		return fmt.Errorf("the main loop has not run yet")
	}
	limit := healthIntervals * interval
	if ago := m.clock.Now().Sub(last); ago > limit {
		return fmt.Errorf("the main loop last ran %v ago, more than %d loop intervals (%v)", ago.Round(time.Millisecond), healthIntervals, limit)
	}
	return nil
}

// healthz serves Health: 200 "ok", or 503 with the reason. Load
// balancers and systemd-less supervisors probe it; Prometheus's own
// "up" only says the endpoint answers.
func (m *Metrics) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := m.Health(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "unhealthy: %v\n", err)
		return
	}
	fmt.Fprintln(w, "ok")
}
