// Package report formats session snapshots for people (a table) and for
// programs (JSON). Tables show every string others control (user names,
// titles, addresses, VPN names, hold reasons, warnings) through
// termtext.Escape, so none can drive the terminal of whoever runs
// `connwatch status`; JSON is exact.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/alarm"
	"github.com/connwatch/connwatch/internal/hold"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/termtext"
)

var esc = termtext.Escape

// Status is what `connwatch status --json` prints: the snapshot's fields
// and, when an agent runs, its view.
type Status struct {
	session.Snapshot
	// Source says where the sessions come from: SourceScan (status read
	// /proc) or SourceAgent (the running agent's view).
	Source string      `json:"source"`
	Agent  *agent.View `json:"agent,omitempty"`
	// AgentRunning is false when no agent runs with the state directory
	// status read: nothing then publishes or stops the machine.
	AgentRunning bool `json:"agent_running"`
	// Notices say what around the sessions is not as a healthy watched
	// machine has it (no sshd, no agent), which an empty table alone
	// would hide.
	Notices []Notice `json:"notices,omitempty"`
}

// Sources of a status.
const (
	SourceScan  = "scan"
	SourceAgent = "agent"
)

// Notice codes.
const (
	NoticeNoSSHD  = "no_sshd"
	NoticeNoAgent = "no_agent"
)

// Notice is one fact about the machine's surroundings.
type Notice struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Notices writes one "note:" line per notice.
func Notices(w io.Writer, notices []Notice) error {
	var b strings.Builder
	for _, n := range notices {
		fmt.Fprintf(&b, "note: %s\n", esc(n.Message))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// JSON writes v as one indented JSON document.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	return nil
}

// AgentTable writes a running agent's view; nothing when v is nil.
func AgentTable(w io.Writer, v *agent.View, now time.Time, loc *time.Location) error {
	if v == nil {
		return nil
	}
	p := v.Policy
	var b strings.Builder
	fmt.Fprintf(&b, "\nAgent (pid %d, action %s, stop after %s):\n", v.PID, esc(v.Action), esc(p.Window))
	switch {
	case p.Blind:
		b.WriteString("  cannot see every session: the machine will not be stopped\n")
	case p.IdleSince == nil:
		fmt.Fprintf(&b, "  busy: %d counted session(s), %d hold(s)\n", p.Counted, len(p.Holds))
	case p.Acted:
		fmt.Fprintf(&b, "  idle since %s; the stop action ran\n", since(*p.IdleSince, now, loc))
	case p.StopDueAt != nil:
		fmt.Fprintf(&b, "  idle since %s; stop due at %s (in %s)\n", since(*p.IdleSince, now, loc),
			p.StopDueAt.In(loc).Format("15:04:05"), Duration(p.StopDueAt.Sub(now)))
	default:
		fmt.Fprintf(&b, "  idle since %s\n", since(*p.IdleSince, now, loc))
	}
	for _, h := range p.Holds {
		fmt.Fprintf(&b, "  held by %s %q %s\n", esc(h.Kind), h.Name, esc(h.Reason))
	}
	fmt.Fprintf(&b, "  datapoints (oldest first, X idle, 0 busy, - unknown): %s; alarm %s\n", marks(p.Datapoints), p.AlarmState)
	_, err := io.WriteString(w, b.String())
	return err
}

// MaxMarks is how many datapoints the report shows: the most recent ones
// of a longer window.
const MaxMarks = 60

func marks(ms []alarm.Mark) string {
	prefix := ""
	if len(ms) > MaxMarks {
		prefix = fmt.Sprintf("(%d older) ", len(ms)-MaxMarks)
		ms = ms[len(ms)-MaxMarks:]
	}
	return prefix + alarm.FormatNotation(ms)
}

// Table writes the snapshot as a table for a terminal, with times shown in
// loc relative to now.
func Table(w io.Writer, snap session.Snapshot, now time.Time, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(snap.Sessions) == 0 {
		fmt.Fprintln(tw, "No authenticated sessions.")
	} else {
		fmt.Fprintln(tw, "USER\tFROM\tMODE\tSINCE\tIDLE\tPID")
		for _, s := range snap.Sessions {
			mode := string(s.Mode)
			if s.TTY != "" {
				mode += " " + s.TTY
			}
			if s.Kind.IsVPN() {
				// VPN clients: the kind and what they are connected to.
				mode = string(s.Kind)
				if s.VPN != nil && s.VPN.Server != "" {
					mode += " " + s.VPN.Server
				}
			}
			idle := "?"
			if d, ok := s.Idle(now); ok {
				idle = Duration(d)
			}
			pid := "-"
			if s.PID != 0 {
				pid = strconv.Itoa(s.PID)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", esc(s.User), esc(hostPort(s.RemoteAddr, s.RemotePort)), esc(mode),
				since(s.StartedAt, now, loc), idle, pid)
		}
	}
	if n := len(snap.PendingAuth); n > 0 {
		fmt.Fprintf(tw, "\n%d %s at the authentication stage (not counted):\n", n, plural(n, "connection", "connections"))
		for _, p := range snap.PendingAuth {
			user := p.User
			if user == "" {
				user = "(no user yet)"
			}
			user = esc(user)
			fmt.Fprintf(tw, "  %s\tfrom %s\tsince %s\tpid %d\n", user, esc(hostPort(p.RemoteAddr, p.RemotePort)), since(p.Since, now, loc), p.PID)
		}
	}
	for _, warn := range snap.Warnings {
		fmt.Fprintf(tw, "warning: %s\n", esc(warn.Message))
	}
	if !snap.Complete {
		fmt.Fprintln(tw, "(incomplete view: see warnings)")
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// Locks writes the inhibit locks held now, as `connwatch inhibit --list`
// shows them, and how many stale ones are ignored. Any user can take a
// lock with any reason: reasons and commands are escaped.
func Locks(w io.Writer, live []hold.Lock, stale int, loc *time.Location) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(live) == 0 {
		fmt.Fprintln(tw, "No inhibit locks.")
	} else {
		fmt.Fprintln(tw, "ID\tSINCE\tUNTIL\tPID\tREASON\tCOMMAND")
		for _, l := range live {
			until := "command ends"
			if !l.Expires.IsZero() {
				until = l.Expires.In(loc).Format("2006-01-02 15:04:05")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", esc(l.ID), l.Created.In(loc).Format("2006-01-02 15:04:05"), until, l.PID, esc(l.Reason), esc(l.Command))
		}
	}
	if stale > 0 {
		fmt.Fprintf(tw, "(%d stale locks are ignored: their process ended or their time ran out)\n", stale)
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write locks: %w", err)
	}
	return nil
}

func hostPort(addr string, port int) string {
	if addr == "" {
		return "?"
	}
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	if port == 0 {
		return addr
	}
	return addr + ":" + strconv.Itoa(port)
}

func since(t, now time.Time, loc *time.Location) string {
	lt := t.In(loc)
	ago := Duration(now.Sub(t))
	ln := now.In(loc)
	if lt.Year() == ln.Year() && lt.YearDay() == ln.YearDay() {
		return lt.Format("15:04:05") + " (" + ago + " ago)"
	}
	return lt.Format("2006-01-02 15:04") + " (" + ago + " ago)"
}

// Duration formats d compactly for people: "45s", "3m20s", "2h5m", "3d4h".
func Duration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		m, s := int(d/time.Minute), int(d%time.Minute/time.Second)
		if s == 0 {
			return strconv.Itoa(m) + "m"
		}
		return fmt.Sprintf("%dm%ds", m, s)
	case d < 24*time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return strconv.Itoa(h) + "h"
		}
		return fmt.Sprintf("%dh%dm", h, m)
	}
	days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if h == 0 {
		return strconv.Itoa(days) + "d"
	}
	return fmt.Sprintf("%dd%dh", days, h)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
