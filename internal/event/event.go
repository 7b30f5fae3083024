// Package event defines what the agent reports: a session started or
// ended, the machine became idle or busy again, a stop is coming or
// happened. Events are written as JSON lines and, later, sent to sinks.
package event

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/connwatch/connwatch/internal/session"
)

// Type is the kind of event.
type Type string

// Event types.
const (
	SessionStart Type = "session_start"
	SessionEnd   Type = "session_end"
	// IdleStart: no session and no hold any more; the idle countdown runs.
	IdleStart Type = "idle_start"
	// IdleCancel: a session or hold appeared while idle.
	IdleCancel Type = "idle_cancel"
	// StopWarning: the stop is due soon.
	StopWarning Type = "stop_warning"
	// Stop: the stop action ran (or, in dry-run, would have).
	Stop Type = "stop"
	// StopFailed: the stop action failed.
	StopFailed Type = "stop_failed"
	// Blind: the agent cannot tell who is connected and will not stop the
	// machine until it can.
	Blind Type = "blind"
	// Sighted: the agent can tell again after being blind.
	Sighted Type = "sighted"
)

// Types lists every event type, in the order of a session's life; keep it
// next to the constants above.
func Types() []Type {
	return []Type{SessionStart, SessionEnd, IdleStart, IdleCancel, StopWarning, Stop, StopFailed, Blind, Sighted}
}

// Event is one thing that happened.
type Event struct {
	Time    time.Time        `json:"time"`
	Type    Type             `json:"type"`
	Session *session.Session `json:"session,omitempty"`
	Reason  string           `json:"reason,omitempty"`
	// StopAt is when the machine will be stopped, for idle and warning
	// events.
	StopAt *time.Time `json:"stop_at,omitempty"`
	// Action names the stop action, for stop events.
	Action string `json:"action,omitempty"`
}

// Writer writes events as JSON lines, one Write call per event so that
// concurrent readers of an append-only file never see half a line.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write writes one event.
func (w *Writer) Write(e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	b = append(b, '\n')
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, err := w.w.Write(b); err != nil {
		return fmt.Errorf("write event: %w", err)
	}
	return nil
}
