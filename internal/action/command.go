package action

import (
	"context"
	"fmt"
	"time"

	"github.com/connwatch/connwatch/internal/hook"
	"github.com/connwatch/connwatch/internal/secret"
)

// Environment variables a Command sees, besides the agent's own.
const (
	EnvReason    = "CONNWATCH_REASON"
	EnvIdleSince = "CONNWATCH_IDLE_SINCE" // RFC 3339, UTC; empty if unknown
	EnvAction    = "CONNWATCH_ACTION"
)

// Command runs a user command with /bin/sh -c (package hook). It is
// bounded by Timeout, after which the command's whole process group is
// killed (SIGTERM, then SIGKILL); a non-zero exit is an error carrying the
// tail of its standard error. Results and errors name the command by its
// program only (secret.DescribeCommand): its arguments may hold a token,
// and results become events.
type Command struct {
	// Command is the shell command line.
	Command string
	// Timeout bounds the command; zero means DefaultTimeout.
	Timeout time.Duration
	// Shell runs Command as `Shell -c Command`; empty means /bin/sh.
	Shell string
	// Env is the environment the variables above are added to; nil means
	// the agent's environment.
	Env []string
}

var _ Action = (*Command)(nil)

// Name implements Action.
func (*Command) Name() string { return NameCommand }

// Do implements Action.
func (c *Command) Do(ctx context.Context, r Request) (Result, error) {
	timeout := timeoutOr(c.Timeout)
	idleSince := ""
	if !r.IdleSince.IsZero() {
		idleSince = r.IdleSince.UTC().Format(time.RFC3339)
	}
	stdout, stderr := &hook.Tail{}, &hook.Tail{}
	err := hook.Hook{
		Command: c.Command, Shell: c.Shell, Env: c.Env, Timeout: timeout,
		ExtraEnv: []string{
			EnvReason + "=" + r.Reason,
			EnvIdleSince + "=" + idleSince,
			EnvAction + "=" + NameCommand,
		},
		Stdout: stdout, Stderr: stderr,
	}.Run(ctx)
	// The command line may hold a token: events, logs and errors name it
	// only by its program.
	what := secret.DescribeCommand("the configured command", c.Command)
	if err != nil {
		tail := ""
		if t := lastLines(stderr.Bytes(), 5); t != "" {
			tail = ": " + t
		}
		return Result{}, fmt.Errorf("run %s: %w%s", what, err, tail)
	}
	summary := "ran " + what
	if out := lastLines(stdout.Bytes(), 1); out != "" {
		summary += ": " + out
	}
	return Result{Action: NameCommand, Summary: summary}, nil
}
