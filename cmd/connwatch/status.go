package main

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/connwatch/connwatch/internal/agent"
	"github.com/connwatch/connwatch/internal/clock"
	"github.com/connwatch/connwatch/internal/config"
	"github.com/connwatch/connwatch/internal/report"
	"github.com/connwatch/connwatch/internal/session"
	"github.com/connwatch/connwatch/internal/source/sshd"
)

func newStatusCmd() *cobra.Command {
	var (
		asJSON     bool
		scan       bool
		procRoot   string
		stateDir   string
		configPath string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "List authenticated sessions and connections pending authentication",
		Long: `status lists every authenticated SSH connection on this machine: who,
from where, how (tty, notty, forward, sftp), since when and idle for how
long. Connections that have not authenticated yet (a password prompt, a
bot guessing passwords) are listed apart and never counted as sessions.

It reads /proc. Run it as root to see everything: without root, remote
addresses of other users' connections are unknown and, with /proc mounted
hidepid, whole sessions are invisible; the output then says so and the
JSON field "complete" is false.

Idle is the time since the terminal last received input (tty sessions) or
the connection last received data (any session; SSH client keepalives
count as data).

When an agent runs with the same --state-dir, its view is shown too:
idle since when, when the stop is due, and what holds the machine up,
and the VPN clients it watches (WireGuard peers, OpenVPN and AWS Client
VPN clients). Without a running agent, --config polls the VPN sources
that file enables, once.

With such an agent, status shows the sessions as the agent last saw
them (it rewrites its view on every change, at least every 10 s, and
watches process events) instead of reading /proc itself: a few
milliseconds however many processes run, with idle times up to 10 s old.
The JSON field "source" says which ("agent" or "scan"); --scan reads
/proc regardless, as does status when the agent watches only some ports
(--ssh-port) or another --proc.

Exit status: 0 when the scan ran (check "complete" for partial views),
1 when the process table could not be read, 2 on usage errors.`,
		Example: `  connwatch status
  connwatch status --json | jq '.sessions | length'
  connwatch status --proc ./testdata/proc   # a recorded procfs tree`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("status takes no arguments, got %q", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			now := time.Now()
			view, noAgent := liveAgentView(stateDir, now)
			var (
				snap      session.Snapshot
				listeners []string
				source    = report.SourceScan
			)
			if view != nil && !scan && wholeView(view, procRoot, now) {
				// A running agent saw all of it moments ago, having
				// walked /proc on events: no walk of 10,000 processes.
				snap = session.Snapshot{Time: now, Sessions: view.Sessions, PendingAuth: view.Connections, Complete: view.Complete, Warnings: view.Warnings}
				listeners, source = view.Listeners, report.SourceAgent
			} else {
				src := sshd.New(sshd.Options{ProcRoot: procRoot})
				var err error
				if snap, err = src.Scan(cmd.Context()); err != nil {
					return fmt.Errorf("scan sessions: %w", err)
				}
				listeners = src.Listeners()
				if err := addVPN(cmd, &snap, view, configPath); err != nil {
					return err
				}
			}
			snap.Sort()
			notices := surroundings(snap, listeners, view, noAgent)
			if asJSON {
				return report.JSON(cmd.OutOrStdout(), report.Status{Snapshot: snap, Source: source, Agent: view, AgentRunning: view != nil, Notices: notices})
			}
			if err := report.Table(cmd.OutOrStdout(), snap, snap.Time, time.Local); err != nil {
				return err
			}
			if err := report.AgentTable(cmd.OutOrStdout(), view, snap.Time, time.Local); err != nil {
				return err
			}
			if err := report.Notices(cmd.OutOrStdout(), notices); err != nil {
				return err
			}
			if source == report.SourceAgent {
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "\nSessions as the agent (pid %d) saw them at %s; --scan reads /proc instead.\n", view.PID, view.Updated.Local().Format(time.TimeOnly))
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON: {sessions, pending_auth, complete, warnings}")
	cmd.Flags().BoolVar(&scan, "scan", false, "read /proc even when a running agent's view is at hand")
	cmd.Flags().StringVar(&procRoot, "proc", "/proc", "procfs root to read (a recorded procfs-shaped tree for fixtures)")
	cmd.Flags().StringVar(&configPath, "config", "", "agent configuration file: without a running agent, poll the VPN sources it enables once")
	cmd.Flags().StringVar(&stateDir, "state-dir", config.DefaultStateDir(), "state directory of a running agent, whose view (idle since, stop due, holds) is shown too")
	return cmd
}

// addVPN adds to a scan's snapshot the VPN sessions: the running agent's
// (it knows when they began), else one poll of the sources configPath
// enables.
func addVPN(cmd *cobra.Command, snap *session.Snapshot, view *agent.View, configPath string) error {
	switch {
	case view != nil:
		// The agent's VPN sessions: it knows when they began.
		for _, s := range view.Sessions {
			if s.Kind.IsVPN() {
				snap.Sessions = append(snap.Sessions, s)
			}
		}
		for _, w := range view.Warnings {
			if w.Kind.IsVPN() {
				snap.Warn(w)
			}
		}
	case configPath != "":
		cfg, err := config.Load(configPath)
		if err != nil {
			return usageError{err}
		}
		pollers, closePollers, err := vpnPollers(cfg, clock.Real{})
		if err != nil {
			return err
		}
		defer closePollers()
		pollOnce(cmd.Context(), pollers, snap)
	}
	return nil
}

// agentViewFresh is how old an agent's view may be for status to show it
// instead of scanning.
const agentViewFresh = agent.ViewRefreshEvery + 5*time.Second

// wholeView reports whether v can stand for a scan of procRoot: an agent
// that publishes the whole view (Listeners set) of every port of the same
// procfs root wrote it within agentViewFresh.
func wholeView(v *agent.View, procRoot string, now time.Time) bool {
	age := now.Sub(v.Updated)
	return v.Listeners != nil && v.Scope.ProcRoot == procRoot && len(v.Scope.Ports) == 0 &&
		age <= agentViewFresh && age >= -agentViewFresh
}

// liveAgentView returns the view of an agent that is running and has
// written its view recently, or nil and why not.
func liveAgentView(stateDir string, now time.Time) (*agent.View, string) {
	v, err := agent.LoadView(stateDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Sprintf("no agent has run with state directory %s", stateDir)
	case err != nil:
		return nil, fmt.Sprintf("no agent view in %s: %v", stateDir, err)
	case syscall.Kill(v.PID, 0) == syscall.ESRCH:
		return nil, fmt.Sprintf("the agent that used %s (pid %d) is not running; its view is from %s", stateDir, v.PID, v.Updated.Local().Format(time.DateTime))
	case now.Sub(v.Updated) > time.Minute:
		return nil, fmt.Sprintf("the agent of %s (pid %d) last wrote its view %s ago: it is stuck or is another program", stateDir, v.PID, report.Duration(now.Sub(v.Updated)))
	}
	return v, ""
}

// surroundings are the notices of status: no sshd to connect to, no agent
// to watch. listeners are the verified sshd listeners the scan saw.
func surroundings(snap session.Snapshot, listeners []string, view *agent.View, noAgent string) []report.Notice {
	var out []report.Notice
	if len(listeners) == 0 && len(snap.Sessions) == 0 && len(snap.PendingAuth) == 0 {
		msg := "no sshd process found: nobody can connect over SSH now (is openssh-server installed and running? a socket-activated sshd, ssh.socket, starts one per connection)"
		if !snap.Complete {
			msg = "no sshd process found that this user can check: run status as root to see root's sshd"
		}
		out = append(out, report.Notice{Code: report.NoticeNoSSHD, Message: msg})
	}
	if view == nil {
		out = append(out, report.Notice{Code: report.NoticeNoAgent, Message: noAgent + ": nothing publishes these sessions or stops this machine when idle (systemctl enable --now connwatch)"})
	}
	return out
}
