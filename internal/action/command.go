package action

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/connwatch/connwatch/internal/secret"
)

// Environment variables a Command sees, besides the agent's own.
const (
	EnvReason    = "CONNWATCH_REASON"
	EnvIdleSince = "CONNWATCH_IDLE_SINCE" // RFC 3339, UTC; empty if unknown
	EnvAction    = "CONNWATCH_ACTION"
)

// Command runs a user command with /bin/sh -c. It is bounded by Timeout,
// after which the command's whole process group is killed; a non-zero exit
// is an error carrying the tail of its standard error. Results and errors
// name the command by its program only (secret.DescribeCommand): its
// arguments may hold a token, and results become events.
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
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	shell := c.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	idleSince := ""
	if !r.IdleSince.IsZero() {
		idleSince = r.IdleSince.UTC().Format(time.RFC3339)
	}
	env = append(env[:len(env):len(env)],
		EnvReason+"="+r.Reason,
		EnvIdleSince+"="+idleSince,
		EnvAction+"="+NameCommand,
	)

	stdout, stderr := &tailBuffer{max: 4 << 10}, &tailBuffer{max: 4 << 10}
	cmd := exec.CommandContext(ctx, shell, "-c", c.Command)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = stdout, stderr
	// Own process group, so that a timeout kills what the shell started
	// too, not only the shell.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second

	err := cmd.Run()
	// The command line may hold a token: events, logs and errors name it
	// only by its program.
	what := secret.DescribeCommand("the configured command", c.Command)
	tail := ""
	if t := lastLines(stderr.b, 5); t != "" {
		tail = ": " + t
	}
	if ctxErr := ctx.Err(); ctxErr != nil && err != nil {
		if errors.Is(ctxErr, context.DeadlineExceeded) {
			return Result{}, fmt.Errorf("run %s: killed after %s: %w%s", what, timeout, ctxErr, tail)
		}
		return Result{}, fmt.Errorf("run %s: %w%s", what, ctxErr, tail)
	}
	if err != nil {
		return Result{}, fmt.Errorf("run %s: %w%s", what, err, tail)
	}
	summary := "ran " + what
	if out := lastLines(stdout.b, 1); out != "" {
		summary += ": " + out
	}
	return Result{Action: NameCommand, Summary: summary}, nil
}
