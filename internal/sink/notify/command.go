package notify

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/connwatch/connwatch/internal/hook"
	"github.com/connwatch/connwatch/internal/outbox"
	"github.com/connwatch/connwatch/internal/secret"
)

// Environment variables a command hook sees, besides the agent's own.
const (
	EnvEvent     = "CONNWATCH_EVENT"      // the Message as JSON
	EnvEventType = "CONNWATCH_EVENT_TYPE" // e.g. session_start
	EnvKey       = "CONNWATCH_KEY"        // the idempotency key
	EnvText      = "CONNWATCH_TEXT"       // Text(m)
)

// DefaultCommandTimeout bounds one run of a command hook when its Timeout
// is zero.
const DefaultCommandTimeout = 30 * time.Second

// CommandOptions configure a Command.
type CommandOptions struct {
	// Name names the sink (and its outbox); default "command".
	Name string
	// Command is run as `/bin/sh -c Command` once per message.
	Command string
	// Timeout bounds one run, after which the command's whole process
	// group is killed (package hook); zero means DefaultCommandTimeout.
	Timeout time.Duration
	// Shell replaces /bin/sh.
	Shell string
	// Env is the environment the variables above are added to; nil means
	// the agent's.
	Env []string
}

// Command runs a shell command for each message, with the message in its
// environment. Exit status 0 is a delivery; anything else (a non-zero
// exit, a timeout, a shell that cannot start) is retried.
type Command struct {
	o CommandOptions
}

// NewCommand checks o and returns the sink.
func NewCommand(o CommandOptions) (*Command, error) {
	if o.Name == "" {
		o.Name = "command"
	}
	if strings.TrimSpace(o.Command) == "" {
		return nil, fmt.Errorf("command %s: empty command: %w", o.Name, ErrInvalidConfig)
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("command %s: negative timeout %s: %w", o.Name, o.Timeout, ErrInvalidConfig)
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultCommandTimeout
	}
	if o.Shell == "" {
		o.Shell = "/bin/sh"
	}
	return &Command{o: o}, nil
}

// Name is the sink's name.
func (c *Command) Name() string { return c.o.Name }

// Format returns the variables the command gets for m, as NAME=VALUE.
func (c *Command) Format(m Message) ([]string, error) {
	js, err := m.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("format command environment: %w", err)
	}
	return []string{
		EnvEvent + "=" + string(js),
		EnvEventType + "=" + string(m.Event.Type),
		EnvKey + "=" + m.Key,
		EnvText + "=" + Text(m),
	}, nil
}

var _ outbox.Deliver = (*Command)(nil).Deliver

// Deliver runs the command once per record, in order; it is an
// outbox.Deliver.
func (c *Command) Deliver(ctx context.Context, recs []outbox.Record) (int, error) {
	return deliverEach(ctx, recs, c.run)
}

func (c *Command) run(ctx context.Context, m Message) error {
	vars, err := c.Format(m)
	if err != nil {
		return fmt.Errorf("%w (%w)", err, outbox.ErrPermanent)
	}
	stderr := &hook.Tail{}
	err = hook.Hook{
		Command: c.o.Command, Shell: c.o.Shell, Env: c.o.Env, ExtraEnv: vars,
		Timeout: c.o.Timeout, Stderr: stderr,
	}.Run(ctx)
	if err == nil {
		return nil
	}
	said := ""
	if s := oneLine(stderr.String(), 300); s != "" {
		said = ": " + s
	}
	// The command line may hold a token: errors are logged.
	return fmt.Errorf("run %s: %w%s", secret.DescribeCommand("hook", c.o.Command), err, said)
}
