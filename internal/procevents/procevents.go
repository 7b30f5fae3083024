// Package procevents listens to the kernel's process events connector
// (NETLINK_CONNECTOR, CN_IDX_PROC): a notification for every fork, exec and
// exit on the machine, typically within a millisecond. connwatch uses it as
// a trigger: an event tells it which process to look at in /proc now,
// instead of waiting for the next periodic scan, so that even an SSH
// session that lasts 100 ms is seen.
//
// Events are hints, not a complete record. The kernel drops them when the
// socket's receive buffer is full; the Listener then sends an Overrun event
// and counts it in Lost, and the consumer must rescan /proc. Only events of
// whole processes are reported: forks that create threads and execs and
// exits of threads other than the thread-group leader are dropped.
//
// The kernel sends every process's events to every listener. Filter
// narrows that in the kernel (a BPF socket filter) to the processes a
// listener cares about and their children, so that a user who forks in a
// loop costs the listener nothing: no wakeup, no read.
//
// Listening needs a process in the initial user, PID and network
// namespaces. Whether it also needs CAP_NET_ADMIN depends on the kernel
// (some versions let every user join the process events group, others,
// older and newer, refuse with EPERM; a process in a new user namespace
// may be refused or ignored), so callers must handle both: Listen fails
// with ErrPermission or ErrUnavailable, never with a bare errno.
package procevents

import (
	"errors"
	"fmt"
	"io/fs"
	"time"
)

// Kind says what happened to a process.
type Kind uint8

// The kinds of Event.
const (
	// Fork: a new process (not a thread) was created.
	Fork Kind = iota + 1
	// Exec: a process replaced its program.
	Exec
	// Exit: a process's thread-group leader exited.
	Exit
	// Overrun: the kernel dropped events because the socket buffer was full
	// (or a message could not be decoded). Anything may have happened in
	// between: rescan /proc. PID and the other fields are zero.
	Overrun
)

// String returns "fork", "exec", "exit" or "overrun".
func (k Kind) String() string {
	switch k {
	case Fork:
		return "fork"
	case Exec:
		return "exec"
	case Exit:
		return "exit"
	case Overrun:
		return "overrun"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event is one process event. PIDs are in the initial PID namespace.
type Event struct {
	Kind Kind
	// PID is the process (thread-group id); for Fork, the new child.
	PID int
	// ParentPID is, for Fork, the parent process; for Exit, the parent at
	// the time of exit (0 when the kernel did not say). Otherwise 0.
	ParentPID int
	// ExitCode is, for Exit, the wait status as waitpid(2) reports it:
	// status<<8 after exit(status), the signal number (|0x80 with a core
	// dump) after a fatal signal.
	ExitCode uint32
	// Time is when the kernel produced the event, on CLOCK_MONOTONIC
	// (time since boot, not counting suspend). It is not comparable with
	// the monotonic reading inside a time.Time.
	Time time.Duration
}

// ErrPermission: the kernel or a security policy wants CAP_NET_ADMIN
// (in the initial user namespace), which the process lacks. Which kernels
// want it varies; root always has it. It matches fs.ErrPermission too.
var ErrPermission = fmt.Errorf("process events need CAP_NET_ADMIN: %w", fs.ErrPermission)

// ErrUnavailable: the kernel offers no process events to this process (no
// NETLINK_CONNECTOR in this network namespace, a kernel without
// CONFIG_PROC_EVENTS, or a process outside the initial PID or user
// namespace, whose subscription the kernel ignores). It matches
// errors.ErrUnsupported too.
var ErrUnavailable = fmt.Errorf("process events unavailable: %w", errors.ErrUnsupported)
