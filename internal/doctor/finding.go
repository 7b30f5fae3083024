// Package doctor audits OpenSSH keepalive, idle and login settings for
// connwatch and explains them in plain words: rules take the effective
// settings (from internal/sshconfig) and return findings, and the fix
// writer puts the recommended keepalive settings into a drop-in file
// (sshd) or a marked block (ssh), validated by the real binaries.
package doctor

import (
	"fmt"
	"time"
)

// Severity says how much a finding matters.
type Severity string

// Severities, mildest first.
const (
	Info    Severity = "info"
	Warning Severity = "warning"
	Error   Severity = "error"
)

// Finding is one audited setting.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Setting  string   `json:"setting"`
	Value    string   `json:"value"`
	Message  string   `json:"message"`
	Fix      string   `json:"fix"`
}

// Finding IDs.
const (
	// Server.
	IDSettingsSource  = "settings-source"  // info: sshd -T failed, settings read from the files
	IDMatchBlocks     = "match-blocks"     // info: Match blocks not evaluated
	IDClientAliveOff  = "clientalive-off"  // warning: dead sessions linger for hours or forever
	IDClientAliveLong = "clientalive-long" // warning: dead session outlives the agent's idle window (or 1 h)
	IDClientAlive     = "clientalive"      // info: when a vanished client is dropped
	IDLoginGraceOff   = "logingrace-off"   // warning: LoginGraceTime 0, pending logins never time out
	IDPendingLogins   = "pending-logins"   // warning/info: LoginGraceTime x MaxStartups
	IDUsePAMOff       = "usepam-off"       // warning: no PAM, no logind sessions
	IDLogLevelLow     = "loglevel-low"     // warning: QUIET/FATAL/ERROR lose "Accepted" lines
	IDLogLevel        = "loglevel"         // info: what the log level gives the agent
	IDProcessTitles   = "process-titles"   // info: which ps title generation this sshd uses
	// Client.
	IDServerAliveOff       = "serveralive-off"          // warning: no keepalive at all
	IDTCPKeepAliveOnly     = "tcpkeepalive-only"        // warning: only kernel keepalive (hours)
	IDServerAliveSlow      = "serveralive-slow"         // warning: dead link noticed after > 5 min
	IDServerAlive          = "serveralive"              // info: time to notice a dead link
	IDExitOnForwardFailure = "exitonforwardfailure-off" // warning: forwards that fail leave ssh running
	IDKeepaliveTraffic     = "keepalive-traffic"        // info: bytes a day the keepalives cost
	IDTunnelStandby        = "tunnel-standby"           // info: how soon connwatch tunnel replaces a silent connection
)

// Worst returns the highest severity among findings ("" when none).
func Worst(fs []Finding) Severity {
	var w Severity
	rank := map[Severity]int{"": 0, Info: 1, Warning: 2, Error: 3}
	for _, f := range fs {
		if rank[f.Severity] > rank[w] {
			w = f.Severity
		}
	}
	return w
}

// HasProblems tells whether any finding is a warning or an error.
func HasProblems(fs []Finding) bool {
	w := Worst(fs)
	return w == Warning || w == Error
}

// Human writes a duration in plain words: "45 s", "3 min", "1 min 30 s",
// "2 h 0 min", "3 d 4 h".
func Human(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Seconds()))
	case d < time.Hour:
		m, s := int(d/time.Minute), int(d%time.Minute/time.Second)
		if s == 0 {
			return fmt.Sprintf("%d min", m)
		}
		return fmt.Sprintf("%d min %d s", m, s)
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h %d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%d d %d h", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}
